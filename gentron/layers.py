"""Building blocks: one attention (spatial, temporal or cross by reshape and mask), MLP, embeddings.

Attention is written once on ``F.scaled_dot_product_attention``. Spatial self-attention sees the
patches of one frame; temporal self-attention is the same module after
``(b f) n d -> (b n) f d``; motion-free is an identity mask, not another code path.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-sample (B, D) or (B, 1, D) parameters."""
    if shift.dim() == 2:
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)
    return torch.addcmul(shift, x, 1 + scale)


def norm_modulate(norm: nn.LayerNorm, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``modulate(norm(x), shift, scale)`` for a LayerNorm without affine parameters. Where one (shift, scale) serves
    every sample (a sampling step: all its branches share the timestep), they are the normalisation's own affine: one
    pass over the activations instead of two, rounding once in bf16 where two passes round twice (docs/benchmarks.md)."""
    if shift.shape[0] == 1 and norm.weight is None:
        return F.layer_norm(x, norm.normalized_shape, (1 + scale).view(-1), shift.view(-1), norm.eps)
    return modulate(norm(x), shift, scale)


class Attention(nn.Module):
    """Multi-head attention. ``context=None`` is self-attention (fused qkv); otherwise cross-attention.

    ``mask`` is boolean, True where a query may attend a key, broadcastable to (B, heads, Nq, Nk).
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(context_dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention's keys and values of ``context`` (B, L, D), each (B, heads, L, head_dim). They depend on
        the text alone, so a sampler computes them once per request and passes them as ``context``."""
        k, v = rearrange(self.kv(context), "b n (two h d) -> two b h n d", two=2, h=self.num_heads).unbind(0)
        return k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``rope``: (cos, sin) of ``rotary`` for self-attention's queries and keys, each (heads, N, head_dim/2)."""
        h = self.num_heads
        if self.is_cross:  # context: the text tokens, or their (keys, values) from keys_values
            q = rearrange(self.q(x), "b n (h d) -> b h n d", h=h)
            k, v = context if isinstance(context, tuple) else self.keys_values(context)
        else:  # one rearrange for all three: einops' per-call overhead adds up over 25 steps x blocks
            q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=h).unbind(0)
            if rope is not None:
                q, k = rotate(q, *rope), rotate(k, *rope)
        # On the CPU the MATH kernel trains faster than the default one, which samples as fast (docs/benchmarks.md,
        # "Attention kernels"); chosen here, not around the model, so checkpoint recomputation uses the same kernel.
        training = q.device.type == "cpu" and torch.is_grad_enabled()
        kernel = sdpa_kernel(SDPBackend.MATH) if training else contextlib.nullcontext()
        with kernel:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, N, d)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))

    def values_only(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention where each query has exactly one key, its own token: the softmax is exactly 1, so
        the output is ``proj(v)``. Computes neither q, k nor the scores."""
        return self.proj(linear_rows(self.qkv, x, 2 * x.shape[-1]))


def linear_rows(layer: nn.Module, x: torch.Tensor, start: int) -> torch.Tensor:
    """``layer(x)[..., start:]``, computing only those output rows where the layer allows it: a plain float
    ``nn.Linear`` slices its weight, a layer with its own ``forward_rows(x, start)`` (a serving wrapper swapped in from
    outside) computes them itself, and any other layer runs whole."""
    w = getattr(layer, "weight", None)
    if type(layer) is nn.Linear and type(w.data) is torch.Tensor and w.is_floating_point():
        bias = None if layer.bias is None else layer.bias[start:]
        return F.linear(x, w[start:], bias)
    forward_rows = getattr(layer, "forward_rows", None)
    if forward_rows is not None:
        return forward_rows(x, start)
    return layer(x)[..., start:]


class TemporalAttention(nn.Module):
    """Self-attention over the frames of each patch: ``((b f) n d) -> ((b n) f d)``.

    The output projection starts at exactly zero, so adding this layer to a trained image model
    leaves its output unchanged. ``motion`` (B,) bool: False gives an identity mask, so each frame
    attends only to itself (the motion-free branch of joint image-video training and of MFG).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: torch.Tensor, frames: int, frame_pos: torch.Tensor,
                motion: torch.Tensor | None) -> torch.Tensor:
        # x: ((B F), N, D); frame_pos: (F, D); motion: (B,) bool, or None when every sample moves
        if frames == 1:  # an image: each patch's one frame attends to itself alone, whatever the mask
            return self.attn.values_only(self.norm(x) + frame_pos)  # no scores: a softmax over one key is 1
        n = x.shape[1]
        h = rearrange(self.norm(x), "(b f) n d -> (b n) f d", f=frames) + frame_pos
        mask = None  # every sample with motion: full attention, and no mask to build or apply
        if motion is not None:
            eye = torch.eye(frames, dtype=torch.bool, device=x.device)
            mask = eye | motion.view(-1, 1, 1)  # (B, F, F): all True with motion, identity without
            mask = mask.repeat_interleave(n, dim=0).unsqueeze(1)  # ((B N), 1, F, F)
        h = self.attn(h, mask=mask)
        return rearrange(h, "(b n) f d -> (b f) n d", n=n)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, approximate: str = "none"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def rope_angles(head_dim: int, rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """Axial 2D rotary angles of a (rows, cols) patch grid, row-major, at rate 1: (N, head_dim/2). A head's first
    head_dim/4 rotation pairs turn with the column, the rest with the row, over geometric frequencies as RoPE's."""
    quarter = head_dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float64, device=device),
                            torch.arange(cols, dtype=torch.float64, device=device), indexing="ij")
    return torch.cat([xs.reshape(-1, 1) * freqs, ys.reshape(-1, 1) * freqs], dim=1).float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + d/2) of x (B, heads, N, d) by angles given as cos, sin (heads, N, d/2). Rotating queries
    and keys alike makes their dot product depend on the two positions' offset alone; angle 0 is exactly x."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) float positions -> (N, dim) as in DiT/MAE: [sin, cos] over geometric frequencies."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = positions.double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).float()


def sincos_2d(dim: int, grid_h: int, grid_w: int, base_size: int | None = None, scale: float = 1.0,
              device: torch.device | None = None) -> torch.Tensor:
    """2D sine-cosine positions for any latent grid, (grid_h * grid_w, dim), row-major.

    With ``base_size`` the grid is rescaled as PixArt does, so that positions span the same range
    whatever the resolution; without it, positions are 0..n-1 as in DiT.
    """
    ys = torch.arange(grid_h, dtype=torch.float64, device=device)
    xs = torch.arange(grid_w, dtype=torch.float64, device=device)
    if base_size is not None:
        ys = ys / (grid_h / base_size) / scale
        xs = xs / (grid_w / base_size) / scale
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    # MAE/DiT put the w coordinate first; keep that order so DiT-style weights map over.
    return torch.cat([sincos_1d(dim // 2, gx.reshape(-1)), sincos_1d(dim // 2, gy.reshape(-1))], dim=1)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """DiT's sinusoidal timestep features, [cos, sin] order (diffusers' flip_sin_to_cos=True)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> (B, D) vectors, as in DiT."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))
