"""Model configuration: one dataclass, named presets, validation that says the fix.

The transformer itself is a diffusers ``ConfigMixin``; this dataclass is the typed, documented front
door to it (``GenTronTransformer.from_config(asdict(cfg))``), in the spirit of nanoGPT's GPTConfig.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

TEXT_CONDITIONINGS = ("cross_attention", "adaln_zero", "cross_attention_pooled")
TIMESTEP_MODULATIONS = ("adaln_zero", "adaln_single")
GELU_APPROXIMATIONS = ("none", "tanh")


@dataclass(frozen=True)
class GenTronConfig:
    in_channels: int = 4  # latent channels of the VAE (4 for SD-style VAEs)
    patch_size: int = 2  # latents are cut into p×p patches; /2 in the paper's names (XL/2, G/2)
    hidden_size: int = 1152  # transformer width D
    depth: int = 28  # number of blocks
    num_heads: int = 16  # attention heads; hidden_size must divide by it
    mlp_hidden_size: int = 4608  # MLP width (4·D for DiT, 4 × 1664 for G/2)
    text_dim: int = 4096  # width of the text encoder's token embeddings (CLIP+T5 concatenated)
    text_conditioning: str = "cross_attention"  # paper's ablation: cross_attention beats adaln_zero;
    #   cross_attention_pooled keeps cross-attention and adds the pooled text to adaLN's timestep too (a multiplicative
    #   path from the words to every token's scale and shift)
    timestep_modulation: str = "adaln_zero"  # DiT's per-block adaLN-Zero, or PixArt's adaln_single
    temporal: bool = False  # temporal self-attention in every block: the T2V model
    gelu_approximate: str = "none"  # exact GELU is 4x faster in bf16 on CPU; PixArt weights want tanh
    cross_attention_norm: bool = True  # LayerNorm before cross-attention (PixArt has none)
    pos_embed_base_size: int | None = None  # PixArt-style position scaling; None is DiT's plain grid
    pos_embed_interpolation_scale: float = 1.0  # PixArt's interpolation scale for position embeddings
    rope: bool = False  # rotary 2D positions in spatial self-attention too (as FLUX, Lumina): a query meets each key
    #   through their offset, so "look left" is one learnt direction of q; each head learns its rotation rate
    frame_embedding: bool = False  # with temporal: each frame's sine-cosine position, through a zero-initialised
    #   linear layer, added to every token at the input. The frame index then sits in the residual stream where
    #   the text and the spatial positions meet it, which travel direction's sign needs (python -m gentron toy)

    def validate(self) -> "GenTronConfig":
        """Raise ValueError naming the field and the fix when the config cannot build a model."""
        positive = ("in_channels", "patch_size", "hidden_size", "depth", "num_heads", "mlp_hidden_size", "text_dim")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}); "
                f"try num_heads={_divisor_near(self.hidden_size, self.num_heads)}"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"head size hidden_size/num_heads must be even, got {self.hidden_size // self.num_heads}")
        for name, allowed in (
            ("text_conditioning", TEXT_CONDITIONINGS),
            ("timestep_modulation", TIMESTEP_MODULATIONS),
            ("gelu_approximate", GELU_APPROXIMATIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size must be a multiple of 4 for 2D sine-cosine positions, got {self.hidden_size}")
        for name in ("rope", "frame_embedding"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.frame_embedding and not self.temporal:
            raise ValueError("frame_embedding needs temporal layers (temporal=True): an image model has one frame")
        if self.rope and (self.hidden_size // self.num_heads) % 4:
            raise ValueError(f"rope needs a head size (hidden_size/num_heads = {self.hidden_size // self.num_heads}) "
                             "that is a multiple of 4 (two axes of rotation pairs): change num_heads")
        return self

    @property
    def tabulated_modulation(self) -> bool:
        """Whether every block's adaLN modulation depends on the timestep alone (DiT's adaLN-Zero, with the text in
        cross-attention rather than pooled into it), so ``GenTronTransformer.prepare`` can tabulate it per request."""
        return self.timestep_modulation == "adaln_zero" and not self.pools_text

    @property
    def cross_attends(self) -> bool:
        """Whether every block reads the text tokens by cross-attention."""
        return self.text_conditioning in ("cross_attention", "cross_attention_pooled")

    @property
    def pools_text(self) -> bool:
        """Whether the mean of the text tokens joins the timestep in adaLN."""
        return self.text_conditioning in ("adaln_zero", "cross_attention_pooled")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenTronConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {k for k in d if k.startswith("_")})
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; known fields are {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known}).validate()


def _divisor_near(n: int, k: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - k))


# Named presets. Text width 4096 is T5-XXL; CLIP-L (768) + T5-XXL (4096) concatenated is 4864.
PRESETS: dict[str, GenTronConfig] = {
    # tests: builds in milliseconds
    "tiny": GenTronConfig(hidden_size=32, depth=2, num_heads=2, mlp_hidden_size=64, text_dim=32),
    # CPU work: the built-in Shapes World model and the ablations
    "XS/2": GenTronConfig(hidden_size=128, depth=6, num_heads=2, mlp_hidden_size=512, text_dim=256),  # scale ablation
    "S/2": GenTronConfig(hidden_size=256, depth=8, num_heads=4, mlp_hidden_size=1024, text_dim=256),
    "S/1": GenTronConfig(patch_size=1, hidden_size=256, depth=8, num_heads=4, mlp_hidden_size=1024, text_dim=256),
    "B/2": GenTronConfig(hidden_size=768, depth=12, num_heads=12, mlp_hidden_size=3072, text_dim=4864),
    # the paper's scales
    "XL/2": GenTronConfig(hidden_size=1152, depth=28, num_heads=16, mlp_hidden_size=4608, text_dim=4864),
    "G/2": GenTronConfig(hidden_size=1664, depth=48, num_heads=16, mlp_hidden_size=6656, text_dim=4864),
}


def get_preset(name: str, **overrides: Any) -> GenTronConfig:
    """A named preset, with optional field overrides (e.g. ``temporal=True``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides).validate()
