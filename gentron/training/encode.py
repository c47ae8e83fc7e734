"""The frozen half of training: pixels -> VAE latents, captions -> text-tower embeddings.

Both run without gradients. Captions are encoded one at a time: a caption's embedding is then the
same bits whichever batch it arrives in, so caching it, or resuming a run with an empty cache,
cannot change the training trajectory.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from einops import rearrange

from ..pipeline import GenTronPipeline
from ..text import encode_text


class FrozenEncoders:
    def __init__(self, pipe: GenTronPipeline, device: torch.device, cache_text: bool = True, cache_size: int = 4096,
                 batch_encode: bool = False):
        self.vae = pipe.vae.to(device).eval().requires_grad_(False)
        self.towers = pipe.towers
        for tower in self.towers:
            tower.encoder.to(device).eval().requires_grad_(False)
        if not self.towers:
            raise ValueError("the init pipeline has no text encoder: init_from must hold text_encoder and/or "
                             "text_encoder_2")
        self.device = device
        self.batch_encode = batch_encode  # uncached captions in one call (fast; bits depend on batch-mates)
        self.cache_size = cache_size if cache_text else 0
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # caption -> (L, text_dim) on the CPU

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, F, 3, S, S) pixels -> (B, C, F, S/f, S/f) scaled latents; all frames go through the VAE as one batch.

        The latent is a sample of the VAE posterior (as in LDM/DiT training), drawn from ``generator``.
        """
        b = pixels.shape[0]
        pixels = pixels.flatten(0, 1).to(self.device, self.vae.dtype, non_blocking=True)  # pinned by the loader
        moments = self.vae.encode(pixels).latent_dist.parameters
        return self.sample(rearrange(moments, "(b f) c h w -> b f c h w", b=b), generator)

    @torch.no_grad()
    def sample(self, posterior: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, F, 2C, h, w) VAE posterior parameters (mean, logvar on channels, as diffusers lays them out; from
        ``latents`` or a latent cache) -> (B, C, F, h, w) scaled latents: a sample drawn from ``generator``."""
        b = posterior.shape[0]
        z = DiagonalGaussianDistribution(posterior.flatten(0, 1).to(self.device)).sample(generator=generator).float()
        cfg = self.vae.config
        z = (z - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor  # inverse of pipeline.decode
        return rearrange(z, "(b f) c h w -> b c f h w", b=b)

    @torch.no_grad()
    def text(self, captions: list[str], cached: list[torch.Tensor | None] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (embeddings (B, L, text_dim), mask (B, L) bool), padded at the end to the longest.

        ``cached[i]``, where given, is caption i's embedding from a latent cache ((L, text_dim), as ``caption``
        gives) and is used instead of running the towers.
        """
        cached = cached or [None] * len(captions)
        if self.batch_encode:
            self.encode_uncached([c for c, row in zip(captions, cached) if row is None])
        rows = [self.caption(c) if row is None else row.float().cpu() for c, row in zip(captions, cached)]
        length = max(r.shape[0] for r in rows)
        emb = torch.zeros(len(rows), length, rows[0].shape[1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            emb[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = True
        return emb.to(self.device), mask.to(self.device)

    def encode_uncached(self, captions: list[str]) -> None:
        """Encode the captions not in the cache together, and cache them (a cache at least a batch large)."""
        todo = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if not todo or not self.cache_size:
            return
        emb, mask = encode_text(self.towers, todo)
        for caption, e, m in zip(todo, emb, mask):
            self._cache[caption] = e[m].cpu()
        while len(self._cache) > max(self.cache_size, len(captions)):
            self._cache.popitem(last=False)

    def caption(self, caption: str) -> torch.Tensor:
        """One caption's real tokens, (L, text_dim): every tower's tokens, in order (see gentron.text)."""
        if caption in self._cache:
            self._cache.move_to_end(caption)
            return self._cache[caption]
        emb, mask = encode_text(self.towers, [caption])
        row = emb[0][mask[0]].cpu()
        if self.cache_size:
            self._cache[caption] = row
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return row
