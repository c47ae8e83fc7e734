"""Builders for randomly initialised pipelines: tiny ones for tests, and the built-in model's shapes.

Random weights are only ever used when named explicitly (``--model random:tiny``) or by the
trainer as a starting point; loading never falls back to them.
"""
from __future__ import annotations

from diffusers import AutoencoderKL

from .diffusion import make_scheduler
from .model import GenTronTransformer
from .pipeline import GenTronPipeline
from .text import build_clip_tower, build_t5_tower, build_word_tokenizer

# A closed vocabulary for tiny random models: Shapes World's words plus a few.
TINY_WORDS = ("a an and of the to left right above below small big two three red orange yellow green cyan "
              "blue purple white circle square triangle star circles squares triangles stars moving up down "
              "slowly quickly spinning growing shrinking standing still").split()


def build_vae(block_out_channels: tuple[int, ...] = (8, 16), latent_channels: int = 4, sample_size: int = 32,
              layers_per_block: int = 1, norm_num_groups: int = 4) -> AutoencoderKL:
    """A diffusers AutoencoderKL; its downsampling is 2**(len(block_out_channels)-1)."""
    n = len(block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=block_out_channels,
                         layers_per_block=layers_per_block, latent_channels=latent_channels,
                         norm_num_groups=norm_num_groups, sample_size=sample_size)


def build_random_pipeline(preset: str = "tiny", text: str = "clip+t5", temporal: bool = True,
                          text_width: int = 16, words: list[str] | None = None, seed: int = 0,
                          **model_overrides) -> GenTronPipeline:
    """A complete pipeline with random weights: for tests, and for ``--model random:PRESET``."""
    import torch

    if text not in ("clip", "t5", "clip+t5"):
        raise ValueError(f"text must be 'clip', 't5' or 'clip+t5', got {text!r}")
    torch.manual_seed(seed)
    words = list(words or TINY_WORDS)
    clip = build_clip_tower(build_word_tokenizer(words, "clip"), text_width, 1, 2) if "clip" in text else None
    t5 = build_t5_tower(build_word_tokenizer(words, "t5"), text_width, 1, 2) if "t5" in text else None
    text_dim = sum(t.dim for t in (clip, t5) if t is not None)
    transformer = GenTronTransformer.from_preset(preset, temporal=temporal, text_dim=text_dim, **model_overrides)
    return GenTronPipeline(transformer=transformer, vae=build_vae(), scheduler=make_scheduler("dpm++"),
                           text_encoder=clip.encoder if clip else None, tokenizer=clip.tokenizer if clip else None,
                           text_encoder_2=t5.encoder if t5 else None, tokenizer_2=t5.tokenizer if t5 else None)
