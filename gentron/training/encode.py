"""The frozen half of training: pixels -> VAE latents, captions -> text-tower embeddings.

Both run without gradients. Captions are encoded one at a time: a caption's embedding is then the
same bits whichever batch it arrives in, so caching it, or resuming a run with an empty cache,
cannot change the training trajectory.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from einops import rearrange

from ..pipeline import GenTronPipeline
from ..text import encode_text


class FrozenEncoders:
    def __init__(self, pipe: GenTronPipeline, device: torch.device, cache_text: bool = True, cache_size: int = 4096):
        self.vae = pipe.vae.to(device).eval().requires_grad_(False)
        self.towers = pipe.towers
        for tower in self.towers:
            tower.encoder.to(device).eval().requires_grad_(False)
        if not self.towers:
            raise ValueError("the init pipeline has no text encoder: init_from must hold text_encoder and/or "
                             "text_encoder_2")
        self.device = device
        self.cache_size = cache_size if cache_text else 0
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # caption -> (L, text_dim) on the CPU

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, F, 3, S, S) pixels -> (B, C, F, S/f, S/f) scaled latents; all frames go through the VAE as one batch.

        The latent is a sample of the VAE posterior (as in LDM/DiT training), drawn from ``generator``.
        """
        b = pixels.shape[0]
        posterior = self.vae.encode(pixels.flatten(0, 1).to(self.device, self.vae.dtype)).latent_dist
        z = posterior.sample(generator=generator).float()
        cfg = self.vae.config
        z = (z - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor  # inverse of pipeline.decode
        return rearrange(z, "(b f) c h w -> b c f h w", b=b)

    @torch.no_grad()
    def text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (embeddings (B, L, text_dim), mask (B, L) bool), padded at the end to the longest."""
        rows = [self._caption(c) for c in captions]
        length = max(r.shape[0] for r in rows)
        emb = torch.zeros(len(rows), length, rows[0].shape[1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            emb[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = True
        return emb.to(self.device), mask.to(self.device)

    def _caption(self, caption: str) -> torch.Tensor:
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
