"""GenTronTransformer: DiT blocks with text cross-attention, and temporal attention for videos.

One class serves images and videos: latents are (B, C, F, H, W) and ``F == 1`` is an image. The
network is a pure noise predictor; the schedule, the loss and guidance live elsewhere.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, replace
from typing import Callable, NamedTuple

import torch
import torch.utils.checkpoint
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from .config import GenTronConfig, get_preset
from .layers import (Attention, Mlp, TemporalAttention, TimestepEmbedder, norm_modulate, rope_angles, sincos_1d,
                     sincos_2d)


def _grid_constant(fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
    """``fn(*args)`` for a patch grid or a frame count (sine-cosine positions, rotary angles): the same at every
    step, so computed once per shape and shared: read-only. Under torch.compile it is traced, and becomes a
    constant of the graph."""
    if torch.compiler.is_compiling():
        return fn(*args)
    return _cached(fn, *args)


@functools.lru_cache(maxsize=64)
def _cached(fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
    with torch.inference_mode(False):  # a plain tensor, usable later with autograd on
        return fn(*args)


def _sincos(dim: int, rows: int, cols: int | None, base_size: int | None, scale: float,
            device: torch.device) -> torch.Tensor:
    """Sine-cosine positions of a (rows, cols) patch grid, or of ``rows`` frames when ``cols`` is None."""
    if cols is None:
        return sincos_1d(dim, torch.arange(rows, device=device))
    return sincos_2d(dim, rows, cols, base_size, scale, device)


class TimestepTable(NamedTuple):
    """Every step's timestep conditioning for one request. The sampler knows its timesteps before the first step,
    and with cross-attention text a block's adaLN-Zero modulation depends on the timestep alone, so one pass over
    all T timesteps reads each modulation weight once per request instead of once per step (docs/benchmarks.md,
    section 2, times the preparation apart)."""

    timesteps: torch.Tensor  # (T,) as the sampler will pass them
    embeddings: torch.Tensor  # (T, D) the timestep MLP's output
    modulations: torch.Tensor | None  # (T, depth, 6D) every block's adaLN-Zero vectors; None where they also depend
    #   on the text (pooled-text conditioning) or come from PixArt's shared adaLN-single
    final: torch.Tensor | None  # (T, 2D) the output layer's shift and scale; None as above


class Prepared(NamedTuple):
    """What every sampling step of one request shares, computed once by ``GenTronTransformer.prepare`` and taken
    by every step's forward as ``text``: the caption projection, each block's cross-attention keys and values,
    and (given the timesteps) the timestep table."""

    tokens: torch.Tensor  # (B, L, D) projected caption tokens
    mask: torch.Tensor  # (B, 1, 1, L) bool, True where a token may be attended
    keys_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per block (k, v), each (B, heads, L, head_dim)
    timesteps: TimestepTable | None = None


def _table_rows(table: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Each sample's row in a request's timestep table, (B,) long, and whether every sample has the same one (a
    sampling step). A timestep the table lacks is an error, never a silent wrong row (one host sync per forward;
    skipped while torch.compile traces, which then takes the per-sample path)."""
    match = timestep.to(table.dtype)[:, None] == table[None]  # (B, T)
    rows = match.int().argmax(1)
    if torch.compiler.is_compiling():
        return rows, False
    found, shared = torch.stack([match.any(1).all(), (rows == rows[0]).all()]).tolist()
    if not found:
        raise ValueError(f"timesteps {timestep.tolist()} are not all among the {len(table)} this request was "
                         "prepared for: pass the sampler's timesteps to prepare()")
    return rows, shared


class Conditioning(NamedTuple):
    """One forward's timestep conditioning, per frame: what every block and the output layer are modulated by."""

    blocks: torch.Tensor  # (BF, D), or (BF, 6D) for adaLN-single: what each block's modulation is computed from
    modulations: torch.Tensor | None  # (BF or 1, depth, 6D) every block's modulation from a timestep table, or None
    final: tuple[torch.Tensor, torch.Tensor]  # the output layer's shift and scale

    def block_modulation(self, i: int) -> torch.Tensor | None:
        return None if self.modulations is None else self.modulations[:, i]


class GenTronBlock(nn.Module):
    """Spatial self-attention, temporal self-attention, cross-attention to text, MLP."""

    def __init__(self, cfg: GenTronConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads)
        # each head's rotary rate: 1 in a fresh model; 0 (no rotation, the same function) where with_rope() adds it
        self.rope_rate = nn.Parameter(torch.ones(cfg.num_heads)) if cfg.rope else None
        self.temporal = TemporalAttention(d, cfg.num_heads) if cfg.temporal else None
        self.cross = None
        if cfg.cross_attends:
            self.norm_cross = nn.LayerNorm(d, eps=1e-6) if cfg.cross_attention_norm else nn.Identity()
            self.cross = Attention(d, cfg.num_heads, context_dim=d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, cfg.mlp_hidden_size, cfg.gelu_approximate)
        if cfg.timestep_modulation == "adaln_zero":  # DiT: one modulation MLP per block
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        else:  # PixArt's adaLN-single: a shared MLP (in the model) plus this block's learned table
            self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)
        self.gradient_checkpointing = False

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """c: (BF, D) for adaLN-Zero, (BF, 6D) for adaLN-single -> six (BF, 1, D) tensors."""
        if hasattr(self, "adaLN_modulation"):
            return self.adaLN_modulation(c).unsqueeze(1).chunk(6, dim=2)
        return (self.scale_shift_table[None] + c.view(c.shape[0], 6, -1)).chunk(6, dim=1)

    def forward(self, x, c, text, text_mask, frames, frame_pos, motion, mod=None, rope=None):
        # x: ((B F), N, D) tokens; c: (B F) conditioning; text: (B, L, D), or this block's cross-attention (k, v);
        # text_mask: (B, 1, 1, L); mod: this block's (B F, 6D) modulation from a timestep table, else computed from c;
        # rope: (N, head_dim/2) rotary angles at rate 1, or None
        mod = self.modulation(c) if mod is None else mod.unsqueeze(1).chunk(6, dim=2)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        # addcmul: x + gate * branch in one pass over the activations, not a product and then a sum
        h = self.attn(norm_modulate(self.norm1, x, shift_msa, scale_msa), rope=self.rotary(rope, x.dtype))
        x = torch.addcmul(x, gate_msa, h)
        if self.temporal is not None:
            x = x + self.temporal(x, frames, frame_pos, motion)
        if self.cross is not None:  # every frame's patches query the same text: one (B, F·N) query set
            h = rearrange(self.norm_cross(x), "(b f) n d -> b (f n) d", f=frames)
            x = x + rearrange(self.cross(h, text, text_mask), "b (f n) d -> (b f) n d", f=frames)
        return torch.addcmul(x, gate_mlp, self.mlp(norm_modulate(self.norm2, x, shift_mlp, scale_mlp)))

    def rotary(self, angles: torch.Tensor | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This block's (cos, sin), each (heads, N, head_dim/2): the grid's angles turned at each head's rate."""
        if self.rope_rate is None:
            return None
        a = self.rope_rate.float()[:, None, None] * angles[None]
        return a.cos().to(dtype), a.sin().to(dtype)


class GenTronTransformer(ModelMixin, ConfigMixin):
    """Latent noise predictor: (latents, timestep, text tokens, text mask, motion) -> epsilon."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        patch_size: int = 2,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_hidden_size: int = 4608,
        text_dim: int = 4096,
        text_conditioning: str = "cross_attention",
        timestep_modulation: str = "adaln_zero",
        temporal: bool = False,
        gelu_approximate: str = "none",
        cross_attention_norm: bool = True,
        pos_embed_base_size: int | None = None,
        pos_embed_interpolation_scale: float = 1.0,
        rope: bool = False,
        frame_embedding: bool = False,
    ):
        super().__init__()
        cfg = GenTronConfig(**{k: v for k, v in locals().items() if k in GenTronConfig.__dataclass_fields__})
        self.cfg = cfg.validate()
        d, p = cfg.hidden_size, cfg.patch_size
        self.x_embedder = nn.Conv2d(cfg.in_channels, d, kernel_size=p, stride=p)
        self.t_embedder = TimestepEmbedder(d)
        if cfg.timestep_modulation == "adaln_single":
            self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        # PixArt's caption projection: text width -> model width, shared by every block.
        self.text_proj = Mlp(cfg.text_dim, d, cfg.gelu_approximate)
        self.text_proj.fc2 = nn.Linear(d, d)
        if cfg.pools_text:  # pooled text joins the timestep in adaLN
            self.pooled_text_embedder = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        if cfg.frame_embedding:
            self.frame_embedder = nn.Linear(d, d)
        self.blocks = nn.ModuleList([GenTronBlock(cfg) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        if cfg.timestep_modulation == "adaln_zero":
            self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        else:
            self.final_scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.proj_out = nn.Linear(d, p * p * cfg.in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation, then the zeros that make every residual branch start as identity.

        adaLN-Zero: the modulation that gates each branch starts at zero, so every block is the
        identity at step 0 and the output layer predicts zero. Temporal attention's output
        projection is zero too, so a new T2V model reproduces its T2I parent frame by frame.
        """
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.x_embedder.weight.data  # initialise the patch embedding like a Linear
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.normal_(self.text_proj.fc1.weight, std=0.02)
        nn.init.normal_(self.text_proj.fc2.weight, std=0.02)
        if hasattr(self, "t_block"):
            nn.init.normal_(self.t_block[1].weight, std=0.02)
        for block in self.blocks:
            if hasattr(block, "adaLN_modulation"):
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.temporal is not None:
                nn.init.zeros_(block.temporal.attn.proj.weight)
                nn.init.zeros_(block.temporal.attn.proj.bias)
        if hasattr(self, "frame_embedder"):  # frame positions enter at zero, as temporal attention does
            nn.init.zeros_(self.frame_embedder.weight)
            nn.init.zeros_(self.frame_embedder.bias)
        if hasattr(self, "final_modulation"):
            nn.init.zeros_(self.final_modulation[-1].weight)
            nn.init.zeros_(self.final_modulation[-1].bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GenTronTransformer":
        return cls(**asdict(get_preset(name, **overrides)))

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor | Prepared,
        text_mask: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """latents (B, C, F, H, W) or (B, C, H, W); timestep (B,); text (B, L, text_dim), or the Prepared of
        ``prepare`` (then text_mask=None); text_mask (B, L), True/1 on real tokens; motion (B,) bool,
        False = identity temporal mask.
        Returns the prediction (noise, or a flow model's velocity), shaped like ``latents``."""
        image_input = latents.dim() == 4
        latents = latents.unsqueeze(2) if image_input else latents  # (B, C, F, H, W)
        b, f = latents.shape[0], latents.shape[2]
        x, grid, frame_pos = self.embed(latents)  # (BF, N, D) patches + positions; (gh, gw); (F, D)
        text = self._prepared(text, text_mask)  # projected tokens, mask, each block's keys/values
        cond = self.conditioning(timestep.expand(b) if timestep.dim() == 0 else timestep, text, f)
        motion = None if motion is None or bool(motion.all()) else motion.bool()  # None: all move, no mask needed
        rope = _grid_constant(rope_angles, self.cfg.hidden_size // self.cfg.num_heads, *grid, x.device) \
            if self.cfg.rope else None
        for i, block in enumerate(self.blocks):
            kv = text.keys_values[i] if text.keys_values else text.tokens
            args = (x, cond.blocks, kv, text.mask, f, frame_pos, motion, cond.block_modulation(i), rope)
            if block.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)  # (BF, N, D)
        x = self.proj_out(norm_modulate(self.norm_out, x, *cond.final))  # (BF, N, p*p*C)
        out = rearrange(x, "(b f) (gh gw) (p q c) -> b c f (gh p) (gw q)", f=f, gh=grid[0], p=self.cfg.patch_size,
                        q=self.cfg.patch_size)
        return out[:, :, 0] if image_input else out

    def embed(self, latents: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor]:
        """(B, C, F, H, W) latents -> tokens (BF, N, D) with their grid and frame positions, the grid (gh, gw) and
        the frames' sine-cosine positions (F, D) that temporal attention adds."""
        b, _, f, h, w = latents.shape
        p, cfg = self.cfg.patch_size, self.cfg
        if h % p or w % p:
            raise ValueError(f"latent height and width ({h}x{w}) must be multiples of patch_size {p}")
        x = self.x_embedder(rearrange(latents, "b c f h w -> (b f) c h w").to(self.x_embedder.weight.dtype))
        gh, gw = x.shape[-2:]
        pos = _grid_constant(_sincos, cfg.hidden_size, gh, gw, cfg.pos_embed_base_size,
                             cfg.pos_embed_interpolation_scale, x.device)
        # contiguous: an elementwise op keeps its input's layout, and the convolution's transposed one would
        # make every later add strided and every linear copy its input
        x = (rearrange(x, "bf d gh gw -> bf (gh gw) d") + pos.to(x.dtype)).contiguous()  # (BF, N, D)
        frame_pos = _grid_constant(_sincos, cfg.hidden_size, f, None, None, 1.0, x.device).to(x.dtype)  # (F, D)
        if cfg.frame_embedding:  # each frame's index into every one of its tokens
            x = x + self.frame_embedder(frame_pos).repeat(b, 1)[:, None]
        return x, (gh, gw), frame_pos

    def _prepared(self, text: torch.Tensor | Prepared, text_mask: torch.Tensor | None) -> Prepared:
        if not isinstance(text, Prepared):
            return self.prepare(text, text_mask, keys_values=False)
        if text_mask is not None:
            raise ValueError("a Prepared request carries its own mask: pass text_mask=None with it")
        return text

    def conditioning(self, timestep: torch.Tensor, text: Prepared, frames: int) -> "Conditioning":
        """Each frame's timestep (and pooled-text) conditioning: from the request's timestep table where it has one,
        else computed. timestep (B,)."""
        cfg, table = self.cfg, text.timesteps
        rows, shared = (None, False) if table is None else _table_rows(table.timesteps, timestep)
        t = self.t_embedder(timestep) if rows is None else table.embeddings[rows]  # (B, D)
        c = t
        if cfg.pools_text:
            m = text.mask[:, 0, 0, :, None].to(text.tokens.dtype)
            c = c + self.pooled_text_embedder((text.tokens * m).sum(1) / m.sum(1).clamp(min=1))
        c_blocks = self.t_block(c) if cfg.timestep_modulation == "adaln_single" else c
        c_blocks = c_blocks.repeat_interleave(frames, dim=0)  # (BF, D or 6D)

        def per_frame(values: torch.Tensor) -> torch.Tensor:
            """This forward's rows of a timestep-table column: one per frame of each sample, (BF, ...), or the one
            row every sample shares, (1, ...), which norm_modulate then fuses into the LayerNorm."""
            return values[rows[:1]] if shared else values[rows].repeat_interleave(frames, dim=0)

        tabulated = rows is not None and table.modulations is not None
        mods = per_frame(table.modulations) if tabulated else None  # (BF or 1, depth, 6D)
        if cfg.timestep_modulation == "adaln_zero":
            final = per_frame(table.final) if tabulated else self.final_modulation(c).repeat_interleave(frames, 0)
        else:
            final = (self.final_scale_shift_table[None] + t[:, None]).repeat_interleave(frames, 0)
        return Conditioning(c_blocks, mods, tuple(final.chunk(2, dim=1)))

    def prepare(self, text: torch.Tensor, text_mask: torch.Tensor | None = None,
                timesteps: torch.Tensor | None = None, keys_values: bool = True) -> Prepared:
        """text (B, L, text_dim), its mask (B, L) and the sampler's ``timesteps`` (T,) -> the Prepared request
        that every one of its steps' forwards takes as ``text``, computed once.

        ``keys_values=False`` leaves each block's keys and values to the block itself: training does that, so
        that a block sharded by FSDP computes them inside its own forward, where its weights are gathered."""
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        tokens = self.text_proj(text.to(self.x_embedder.weight.dtype))  # (B, L, D)
        kv = ()
        if keys_values and self.cfg.cross_attends:
            kv = tuple(block.cross.keys_values(tokens) for block in self.blocks)
        table = None if timesteps is None else self._timestep_table(timesteps.reshape(-1))
        return Prepared(tokens, text_mask.bool()[:, None, None, :], kv, table)

    def _timestep_table(self, timesteps: torch.Tensor) -> TimestepTable:
        embeddings = self.t_embedder(timesteps)  # (T, D)
        if not self.cfg.tabulated_modulation:
            return TimestepTable(timesteps, embeddings, None, None)
        modulations = torch.stack([block.adaLN_modulation(embeddings) for block in self.blocks], dim=1)
        return TimestepTable(timesteps, embeddings, modulations, self.final_modulation(embeddings))

    def to_video(self, frame_embedding: bool = False) -> "GenTronTransformer":
        """A text-to-video copy of this image model: same weights, plus zero-output temporal layers (and, with
        ``frame_embedding``, the zero-output frame positions at the input)."""
        if self.cfg.temporal:
            raise ValueError("this model already has temporal layers")
        return self._grown(lambda key: ".temporal." in key or key.startswith("frame_embedder."), temporal=True,
                           frame_embedding=frame_embedding)

    def with_frame_embedding(self) -> "GenTronTransformer":
        """A copy of this video model with zero-output frame positions at the input: the same function at step 0."""
        if not self.cfg.temporal or self.cfg.frame_embedding:
            raise ValueError("with_frame_embedding needs a video model without frame positions at the input")
        return self._grown(lambda key: key.startswith("frame_embedder."), frame_embedding=True)

    def with_rope(self) -> "GenTronTransformer":
        """A copy of this model with rotary positions in its spatial attention, every rate 0: each rotation is the
        identity, so the copy computes exactly what this model does, and training grows the rates from there."""
        if self.cfg.rope:
            raise ValueError("this model already has rotary positions")
        out = self._grown(lambda key: key.endswith(".rope_rate"), rope=True)
        for block in out.blocks:
            nn.init.zeros_(block.rope_rate)
        return out

    def _grown(self, is_new: Callable[[str], bool], **changes) -> "GenTronTransformer":
        """A copy built with ``changes`` to the config and every weight of this model; the parameters it lacks
        (``is_new`` must accept each name) keep the new model's own initialisation."""
        out = GenTronTransformer(**asdict(replace(self.cfg, **changes))).to(self.device, self.dtype)
        missing, unexpected = out.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(is_new(k) for k in missing), (missing, unexpected)
        return out

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
