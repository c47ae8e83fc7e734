"""Benchmarks: ``python -m gentron bench [--quick]`` writes docs/benchmarks.json, .md and plots.

Six sections, each a list of rows in one JSON document:

1. ``step``: time of one guided sampling step (one batched denoiser call: CFG's 2 branches for
   images, MFG's 3 for videos) and its peak memory, over resolutions and frame counts.
2. ``reference``: our transformer against diffusers' PixArt (images) and Latte (videos) built
   with the same width, depth, heads, patch size, tokens and text length.
3. ``mfg``: motion-free guidance's three branches in one batched forward vs three forwards.
4. ``flops``: achieved FLOP/s of the step against this machine's bf16 matmul peak.
5. ``quantization``: weight bytes and step time of every quantization mode.
6. ``end_to_end``: the built-in model from prompt to PNG / MP4, and single steps of small presets.
7. ``compile``: ``torch.compile`` (gentron.compilation) on our step and on the references' alike,
   with the compile time, and on the built-in model end to end.

Rules: every figure is measured in the same process as the figure it is compared with, and
compared pairs are measured alternately (A, B, A, B, ...); times are medians of ``repeats`` runs
after ``warmup`` runs; the thread count is fixed and recorded. Precision is bf16 *weights*
(``model.to(torch.bfloat16)``, no autocast) for ours and the references alike. Pixel sizes map to
latents with the built-in VAE's factor 4 (SD-style VAEs use 8: their 256 px is our 128 px).
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import gc
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .config import GenTronConfig, get_preset
from .guidance import guidance_weights, guided_noise, stack_branches
from .model import GenTronTransformer

SCHEMA = "gentron-bench/1"
SECTIONS = ("step", "reference", "mfg", "flops", "quantization", "end_to_end", "compile")
GOALS = {"reference_ratio": 0.8, "mfg_speedup": 1.3, "flops_fraction": 0.4, "e2e_image_s": 1.0, "e2e_video_s": 5.0}
FLOPS_GOAL_MIN_PARAMS = 100_000_000  # the FLOP/s goal is set for presets of ~100M parameters or more
LATENT_FACTOR = 4  # the built-in VAE downsamples by 4 (three blocks); SD-style VAEs by 8
TEXT_LEN = 77  # text tokens per sample (CLIP's length); real tokens: 20 in the prompt, 2 in the empty text
TEXT_SCALE, MOTION_SCALE = 7.5, 1.5  # λT, λM: every guidance branch has a non-zero weight
STEPS = 25  # sampling steps of a request (the default): what the once-per-request work is spread over
PROMPT = "a red circle moving left"

Fn = Callable[[], Any]


# ---- what to measure ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """One sampling request: an image (CFG, 2 branches) or a video (MFG, 3 branches), batch 1."""

    kind: str  # "image" or "video"
    resolution: int  # pixels per side
    frames: int = 1

    @property
    def latent(self) -> int:
        return self.resolution // LATENT_FACTOR

    @property
    def branches(self) -> int:
        return 2 if self.kind == "image" else 3

    def tokens(self, patch: int) -> int:
        """Tokens in the batched forward: branches × frames × patches per frame."""
        return self.branches * self.frames * (self.latent // patch) ** 2


@dataclass(frozen=True)
class BenchGrid:
    """The presets, sizes and repeat counts of one run (``bench_grid(quick)`` gives the standard ones)."""

    presets: tuple[str, ...]  # sections 1-4
    resolutions: tuple[int, ...]
    frames: tuple[int, ...]
    repeats: int
    warmup: int
    quant_presets: tuple[str, ...]  # section 5
    small_presets: tuple[str, ...] = ("tiny", "S/2")  # section 6's single steps at 64 px
    e2e_repeats: int = 3
    matmul_size: int = 4096

    def step_shapes(self) -> list[Shape]:
        """Images at every resolution; videos at every resolution with the fewest frames, and at the
        two smallest resolutions with every frame count (the largest corner is left out: it only
        scales the same way)."""
        shapes = [Shape("image", r) for r in self.resolutions]
        shapes += [Shape("video", r, self.frames[0]) for r in self.resolutions]
        shapes += [Shape("video", r, f) for r in self.resolutions[:2] for f in self.frames[1:]]
        return shapes

    def reference_shapes(self) -> list[Shape]:
        """Images at every resolution, videos with the fewest frames at the two smallest."""
        return [Shape("image", r) for r in self.resolutions] + [Shape("video", r, self.frames[0])
                                                                  for r in self.resolutions[:2]]

    def mfg_shapes(self) -> list[Shape]:
        return [Shape("video", self.resolutions[0], f) for f in self.frames[:2]]


def bench_grid(quick: bool = False) -> BenchGrid:
    """The full grid, or the reduced one for smoke tests (64 px, 8 frames, 2 repeats, tiny and S/2)."""
    if quick:
        return BenchGrid(presets=("tiny", "S/2"), resolutions=(64,), frames=(8,), repeats=2, warmup=1,
                         quant_presets=("S/2",), e2e_repeats=1, matmul_size=2048)
    return BenchGrid(presets=("S/2", "B/2"), resolutions=(64, 128, 256), frames=(8, 16, 32), repeats=5, warmup=1,
                     quant_presets=("S/2", "B/2"))


# ---- measuring ----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Fn, repeats: int, warmup: int, device: torch.device) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` unmeasured ones."""
    return compare_seconds({"fn": fn}, repeats, warmup, device)["fn"]


def compare_seconds(fns: dict[str, Fn], repeats: int, warmup: int,
                    device: torch.device) -> dict[str, tuple[float, list[float]]]:
    """Time several functions alternately (A, B, A, B, ...) so drift hits them alike; medians."""
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        _sync(device)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(ts), ts) for name, ts in times.items()}


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_memory_bytes(fn: Fn, device: torch.device) -> int | None:
    """Peak memory one call of ``fn`` adds to what is resident before it (the weights, the inputs).

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's peak RSS (VmHWM, reset through
    /proc/self/clear_refs) minus its RSS after ``malloc_trim``; None where Linux does not allow it.
    """
    gc.collect()
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - base
        try:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so RSS is what is live
            base = _proc_status_kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            fn()
            return max(0, _proc_status_kb("VmHWM") - base) * 1024
        except (OSError, KeyError):
            return None


def counted_flops(fn: Fn) -> int:
    """FLOPs of one call, counted by torch's FlopCounterMode (matmuls, convolutions, attention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # the counter has no formula for the CPU flash kernel: MATH spells attention out as counted matmuls
    with torch.inference_mode(), counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return int(counter.get_total_flops())


def _tabulated(cfg: GenTronConfig) -> bool:
    """Whether ``prepare``'s timestep table holds every block's modulation (else only the timestep embeddings)."""
    return cfg.timestep_modulation == "adaln_zero" and cfg.text_conditioning == "cross_attention"


def prepare_flops(cfg: GenTronConfig, batch: int, text_len: int, steps: int = STEPS) -> int:
    """FLOPs of ``GenTronTransformer.prepare``, once per request: the caption projection, every block's text
    keys/values, and the timestep table of ``steps`` steps (the timestep MLP; every block's and the output
    layer's adaLN-Zero modulation where they are tabulated)."""
    d = cfg.hidden_size
    macs = batch * text_len * (cfg.text_dim * d + d * d)
    if cfg.text_conditioning == "cross_attention":
        macs += cfg.depth * batch * text_len * 2 * d * d
    macs += steps * (256 * d + d * d)
    if _tabulated(cfg):
        macs += steps * (cfg.depth * 6 * d * d + 2 * d * d)
    return 2 * macs


def transformer_flops(cfg: GenTronConfig, batch: int, frames: int, grid_h: int, grid_w: int, text_len: int) -> int:
    """FLOPs (2 per multiply-add) of one sampling step's GenTronTransformer forward, from the architecture alone.

    Counts the linear layers, the patch embedding and the two matmuls of every attention; not the
    norms, activations and additions (a few percent, and not matmul work), nor ``prepare_flops`` (the text's and
    the timesteps' share, prepared once per request). ``batch`` counts the guidance branches; the grid is in
    patches.
    """
    d, n, bf = cfg.hidden_size, grid_h * grid_w, batch * frames
    tokens = bf * n
    tabulated = _tabulated(cfg)
    macs = tokens * cfg.in_channels * cfg.patch_size**2 * d  # patch embedding, a strided convolution
    if cfg.text_conditioning == "adaln_zero":
        macs += batch * 2 * d * d  # pooled-text MLP
    if cfg.timestep_modulation == "adaln_single":
        macs += batch * 6 * d * d  # the shared t_block
    block = tokens * 4 * d * d + 2 * bf * n * n * d  # spatial attention: qkv + out; QKᵀ and AV per frame
    if cfg.timestep_modulation == "adaln_zero" and not tabulated:
        block += bf * 6 * d * d  # per-block modulation, once per frame
    if cfg.temporal and frames == 1:  # one frame: only v and the output projection run (TemporalAttention)
        block += tokens * 2 * d * d
    elif cfg.temporal:
        block += tokens * 4 * d * d + 2 * batch * n * frames * frames * d  # attention over the frames of a patch
    if cfg.text_conditioning == "cross_attention":
        block += tokens * 2 * d * d + 2 * tokens * text_len * d  # q and out; QKᵀ and AV (k, v: prepare_flops)
    block += tokens * 2 * d * cfg.mlp_hidden_size
    macs += cfg.depth * block
    if cfg.timestep_modulation == "adaln_zero" and not tabulated:
        macs += batch * 2 * d * d  # final modulation
    macs += tokens * d * cfg.patch_size**2 * cfg.in_channels  # output projection
    return 2 * macs


# ---- models and inputs --------------------------------------------------------------------------
def liven(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give the zero-initialised tensors (adaLN-Zero gates, output layer) random values, so the model
    computes a non-trivial output, as a trained one would. Same cost, but results can be compared."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model


class Models:
    """Random-weight transformers built once per (preset, temporal) in fp32, handed out in any dtype."""

    def __init__(self, device: torch.device):
        self.device = device
        self._fp32: dict[tuple[str, bool], GenTronTransformer] = {}
        self._cast: dict[tuple[str, bool, torch.dtype], GenTronTransformer] = {}

    def fp32(self, preset: str, temporal: bool) -> GenTronTransformer:
        key = (preset, temporal)
        if key not in self._fp32:
            torch.manual_seed(0)
            self._fp32[key] = liven(GenTronTransformer.from_preset(preset, temporal=temporal)).eval()
        return self._fp32[key]

    def get(self, preset: str, temporal: bool, dtype: torch.dtype = torch.bfloat16) -> GenTronTransformer:
        key = (preset, temporal, dtype)
        if dtype == torch.float32 and self.device.type == "cpu":
            return self.fp32(preset, temporal)
        if key not in self._cast:
            # nn.Module.to: ModelMixin.to would warn about fp32 modules that this model does not have
            self._cast[key] = nn.Module.to(copy.deepcopy(self.fp32(preset, temporal)), self.device, dtype)
        return self._cast[key]

    def for_shape(self, preset: str, shape: Shape, dtype: torch.dtype = torch.bfloat16) -> GenTronTransformer:
        """Images run the text-to-image model, videos the text-to-video one (with temporal layers)."""
        return self.get(preset, shape.kind == "video", dtype)


@dataclass
class StepInputs:
    x: torch.Tensor  # (1, C, F, h, w) latents
    t: torch.Tensor  # (1,) timestep
    cond: tuple[torch.Tensor, torch.Tensor]  # prompt embeddings (1, L, text_dim), mask (1, L)
    uncond: tuple[torch.Tensor, torch.Tensor]  # empty-text embeddings and mask


def step_inputs(cfg: GenTronConfig, shape: Shape, device: torch.device, text_len: int = TEXT_LEN,
                seed: int = 0) -> StepInputs:
    """Random latents and text embeddings of the right shapes; masks as real prompts give them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg.in_channels, shape.frames, shape.latent, shape.latent, generator=g)
    masks = [torch.arange(text_len) < n for n in (min(20, text_len), min(2, text_len))]
    texts = [torch.randn(1, text_len, cfg.text_dim, generator=g) * m[None, :, None] for m in masks]
    t = torch.tensor([500])
    return StepInputs(x.to(device), t.to(device), (texts[0].to(device), masks[0][None].to(device)),
                      (texts[1].to(device), masks[1][None].to(device)))


def request_timesteps(t: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    """A request's ``steps`` timesteps with ``t`` among them, the others spaced over the schedule as a sampler's."""
    return torch.cat([t.reshape(-1).long(), torch.linspace(999, 0, steps - 1).round().long().to(t.device)])


def _prepared(model: nn.Module, text: torch.Tensor, mask: torch.Tensor,
              t: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """The text as the pipeline hands it to every step: the request prepared once where the model can."""
    if hasattr(model, "prepare"):
        with torch.inference_mode():
            return model.prepare(text, mask, timesteps=request_timesteps(t)), None
    return text, mask


def guided_step(model: nn.Module, shape: Shape, inp: StepInputs) -> Fn:
    """One sampling step's denoiser call: all guidance branches in one batched forward, on the request prepared
    once as the pipeline does (its cost is ``prepare_step``'s, not the step's)."""
    branches, weights = guidance_weights(TEXT_SCALE, [MOTION_SCALE] if shape.kind == "video" else None)
    assert len(branches) == shape.branches
    text, mask = _prepared(model, *stack_branches(inp.cond, inp.uncond, branches), inp.t)
    return lambda: guided_noise(model, inp.x, inp.t, text, mask, branches, weights)


def prepare_step(model: GenTronTransformer, shape: Shape, inp: StepInputs, steps: int = STEPS) -> Fn:
    """The request's share that ``guided_step`` leaves out (text, and a table of ``steps`` timesteps): paid once."""
    branches, _ = guidance_weights(TEXT_SCALE, [MOTION_SCALE] if shape.kind == "video" else None)
    text, mask = stack_branches(inp.cond, inp.uncond, branches)
    timesteps = request_timesteps(inp.t, steps)
    return lambda: model.prepare(text, mask, timesteps=timesteps)


def separate_step(model: nn.Module, shape: Shape, inp: StepInputs) -> Fn:
    """The same step with one forward per branch, combined with the same weights (each branch's text also
    prepared once per request)."""
    branches, weights = guidance_weights(TEXT_SCALE, [MOTION_SCALE] if shape.kind == "video" else None)
    texts = [_prepared(model, *(inp.cond if branch.conditional else inp.uncond), inp.t) for branch in branches]

    def run() -> torch.Tensor:
        out = torch.zeros(inp.x.shape, device=inp.x.device)
        for branch, w, (text, mask) in zip(branches, weights[:, 0].tolist(), texts):
            motion = torch.tensor([branch.motion], device=inp.x.device)
            out += w * model(inp.x, inp.t, text, mask, motion).float()
        return out

    return run


def stacked_inputs(inp: StepInputs, shape: Shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batched forward's inputs (branches stacked), as guided_noise builds them, for the references."""
    n = shape.branches
    branches, _ = guidance_weights(TEXT_SCALE, [MOTION_SCALE] if shape.kind == "video" else None)
    return (inp.x.repeat(n, 1, 1, 1, 1), inp.t.repeat(n), *stack_branches(inp.cond, inp.uncond, branches))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- section 1: step time and memory ------------------------------------------------------------
def bench_steps(grid: BenchGrid, models: Models, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for preset in grid.presets:
        for shape in grid.step_shapes():
            model = models.for_shape(preset, shape)
            cfg = model.cfg
            inp = step_inputs(cfg, shape, device)
            step = guided_step(model, shape, inp)
            median, times = median_seconds(step, grid.repeats, grid.warmup, device)
            peak = peak_memory_bytes(step, device)
            g = shape.latent // cfg.patch_size
            rows.append({"preset": preset, "params": _params(model), **asdict(shape), "latent": shape.latent,
                         "branches": shape.branches, "tokens": shape.tokens(cfg.patch_size),
                         "ms": median * 1e3, "ms_runs": [t * 1e3 for t in times],
                         "peak_mem_mb": None if peak is None else peak / 2**20,
                         "weights_mb": _weight_mb(model),
                         "flops": transformer_flops(cfg, shape.branches, shape.frames, g, g, TEXT_LEN)})
            log(f"step {preset} {shape.kind} {shape.resolution}px x{shape.frames}: {median * 1e3:.1f} ms")
    return rows


def _weight_mb(model: nn.Module) -> float:
    from .quantization import weight_bytes

    return weight_bytes(model) / 2**20


# ---- section 2: against diffusers' PixArt and Latte ----------------------------------------------
def build_reference(cfg: GenTronConfig, shape: Shape) -> nn.Module:
    """diffusers' PixArt-α (images) or Latte (videos) transformer with our width, depth, heads, patch,
    MLP width and text width, with exact GELU as ours (PixArt/Latte ship the tanh one)."""
    common = dict(num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads,
                  in_channels=cfg.in_channels, out_channels=cfg.in_channels, num_layers=cfg.depth,
                  cross_attention_dim=cfg.hidden_size, attention_bias=True, sample_size=shape.latent,
                  patch_size=cfg.patch_size, activation_fn="gelu", num_embeds_ada_norm=1000,
                  norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
                  caption_channels=cfg.text_dim)
    if cfg.mlp_hidden_size != 4 * cfg.hidden_size:
        raise ValueError(f"the references' MLP is 4x the width; this one is {cfg.mlp_hidden_size}/{cfg.hidden_size}")
    torch.manual_seed(0)
    if shape.kind == "image":
        from diffusers import PixArtTransformer2DModel

        return PixArtTransformer2DModel(**common, use_additional_conditions=False).eval()
    from diffusers import LatteTransformer3DModel

    return LatteTransformer3DModel(**common, video_length=shape.frames).eval()


def reference_forward(ref: nn.Module, shape: Shape, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      mask: torch.Tensor) -> Fn:
    """The reference's forward on the same stacked batch. Latte's pipeline passes no text mask
    (its forward cannot take one per frame), so neither do we for it."""
    x, text = x.to(ref.dtype), text.to(ref.dtype)
    if shape.kind == "image":
        return lambda: ref(x[:, :, 0], encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask,
                           added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
    return lambda: ref(x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]


def has_reference(preset: str) -> bool:
    """PixArt's and Latte's MLP is 4x their width: only presets like that have a like-for-like reference."""
    cfg = get_preset(preset)
    return cfg.mlp_hidden_size == 4 * cfg.hidden_size


def reference_setup(model: GenTronTransformer, shape: Shape,
                    device: torch.device) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The reference built like ``model`` (bf16), and the stacked batch both take: (x, t, text, mask,
    motion), every sample moving since Latte has no motion-free mask. ``ours_forward(model, args)`` is ours;
    ``reference_forward(ref, shape, *args[:4])`` is theirs."""
    x, t, text, mask = stacked_inputs(step_inputs(model.cfg, shape, device), shape)
    motion = torch.ones(x.shape[0], dtype=torch.bool, device=device)
    return nn.Module.to(build_reference(model.cfg, shape), device, torch.bfloat16), (x, t, text, mask, motion)


def ours_forward(model: GenTronTransformer, args: tuple[torch.Tensor, ...], timesteps: bool = True) -> Fn:
    """Our step on ``reference_setup``'s batch as the pipeline runs it: the request prepared once, outside the step
    (diffusers' PixArt and Latte pipelines redo the caption projection, the text keys/values and the timestep
    conditioning every step). ``timesteps=False``: the text alone, as a compiled pipeline prepares it."""
    x, t, text, mask, motion = args
    with torch.inference_mode():
        prepared = model.prepare(text, mask, timesteps=request_timesteps(t[:1]) if timesteps else None)
    return lambda: model(x, t, prepared, None, motion)


def bench_references(grid: BenchGrid, models: Models, device: torch.device,
                     log: Callable[[str], None]) -> list[dict]:
    rows = []
    for preset in grid.presets:
        if not has_reference(preset):
            log(f"reference: {preset} skipped, its MLP is not 4x its width as PixArt's and Latte's are")
            continue
        for shape in grid.reference_shapes():
            model = models.for_shape(preset, shape)
            ref, args = reference_setup(model, shape, device)
            ours, theirs = ours_forward(model, args), reference_forward(ref, shape, *args[:4])
            timesteps = request_timesteps(args[1][:1])
            prepare = lambda: model.prepare(*args[2:4], timesteps=timesteps)  # noqa: E731  (once per request)
            ours_flops, their_flops = counted_flops(ours), counted_flops(theirs)  # these runs count as one warm-up
            res = compare_seconds({"ours": ours, "theirs": theirs, "prepare": prepare}, grid.repeats,
                                  max(0, grid.warmup - 1), device)
            ours_s, theirs_s, prepare_s = res["ours"][0], res["theirs"][0], res["prepare"][0]
            ratio = (ours_s + prepare_s / STEPS) / theirs_s  # a 25-step request's average step
            rows.append({"preset": preset, "reference": type(ref).__name__, **asdict(shape),
                         "tokens": shape.tokens(model.cfg.patch_size), "ours_ms": ours_s * 1e3,
                         "theirs_ms": theirs_s * 1e3, "ours_prepare_ms": prepare_s * 1e3,
                         "ratio_step_alone": ours_s / theirs_s, "ratio": ratio,
                         "ratio_prepared_each_step": (ours_s + prepare_s) / theirs_s,
                         "ours_params": _params(model), "theirs_params": _params(ref),
                         "ours_gflop": ours_flops / 1e9, "theirs_gflop": their_flops / 1e9,
                         "ratio_per_flop": ours_s / theirs_s * their_flops / ours_flops,
                         "goal": GOALS["reference_ratio"], "met": ratio <= GOALS["reference_ratio"]})
            log(f"reference {preset} {shape.kind} {shape.resolution}px x{shape.frames}: ours/theirs {ratio:.2f}")
            del ref
    return rows


# ---- section 3: MFG batched vs separate ---------------------------------------------------------
def mfg_batched_vs_separate(model: nn.Module, shape: Shape, inp: StepInputs, repeats: int, warmup: int,
                            device: torch.device, check_model: nn.Module | None = None) -> dict[str, Any]:
    """Motion-free guidance as one batched forward of its 3 branches vs 3 forwards of one branch each.

    Both must compute the same guided noise: ``same_result`` compares them on ``check_model`` (an
    fp32 copy, where they agree to rounding; default ``model``) at a relative tolerance of 1e-4.
    ``rel_diff`` is the difference on ``model`` itself (bf16 rounding differs with the batch size,
    and λT = 7.5 amplifies it). Times are medians, measured alternately.
    """
    def rel_diff(m: nn.Module) -> float:
        with torch.inference_mode():
            a, b = guided_step(m, shape, inp)().float(), separate_step(m, shape, inp)().float()
        return float((a - b).norm() / b.norm().clamp(min=1e-12))

    check = rel_diff(check_model if check_model is not None else model)
    res = compare_seconds({"batched": guided_step(model, shape, inp), "separate": separate_step(model, shape, inp)},
                          repeats, warmup, device)
    return {"batched_s": res["batched"][0], "separate_s": res["separate"][0],
            "speedup": res["separate"][0] / res["batched"][0], "rel_diff": rel_diff(model), "check_rel_diff": check,
            "same_result": check < 1e-4}


def bench_mfg(grid: BenchGrid, models: Models, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for preset in grid.presets:
        for shape in grid.mfg_shapes():
            model = models.for_shape(preset, shape)
            r = mfg_batched_vs_separate(model, shape, step_inputs(model.cfg, shape, device), grid.repeats,
                                        grid.warmup, device, check_model=models.for_shape(preset, shape, torch.float32))
            rows.append({"preset": preset, **asdict(shape), "batched_ms": r["batched_s"] * 1e3,
                         "separate_ms": r["separate_s"] * 1e3, "speedup": r["speedup"], "rel_diff_bf16": r["rel_diff"],
                         "rel_diff_fp32": r["check_rel_diff"], "same_result": r["same_result"],
                         "goal": GOALS["mfg_speedup"],
                         "met": r["speedup"] >= GOALS["mfg_speedup"] and r["same_result"]})
            log(f"mfg {preset} {shape.resolution}px x{shape.frames}: batched {r['speedup']:.2f}x faster")
    return rows


# ---- section 4: achieved FLOP/s -----------------------------------------------------------------
PAIRED_MAX_MS = 5000.0  # section 4 re-times steps up to this long; the 10-25 s ones would add 10+ minutes


def bench_flops(grid: BenchGrid, models: Models, device: torch.device, steps: list[dict],
                log: Callable[[str], None]) -> dict[str, Any]:
    """FLOP/s of section-1 steps against the bf16 matmul peak, each step timed alternately with an n×n×n
    ``torch.mm`` (n = ``grid.matmul_size``) so that the machine's drift hits both alike: on this shared
    CPU the peak alone varied 0.5-1.5 TFLOP/s between runs. ``fraction_of_peak`` is the ratio of the
    paired medians; ``fraction_best`` the best step run against the best matmul run."""
    n = grid.matmul_size
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    rows, all_peaks = [], []
    for s in steps:
        if s["ms"] > PAIRED_MAX_MS:
            continue
        shape = Shape(s["kind"], s["resolution"], s["frames"])
        model = models.for_shape(s["preset"], shape)
        res = compare_seconds({"step": guided_step(model, shape, step_inputs(model.cfg, shape, device)),
                               "matmul": lambda: torch.mm(a, b)}, grid.repeats, grid.warmup, device)
        step_tf = [s["flops"] / t / 1e12 for t in res["step"][1]]
        peak_tf = [2 * n**3 / t / 1e12 for t in res["matmul"][1]]
        all_peaks += peak_tf
        fraction = statistics.median(step_tf) / statistics.median(peak_tf)
        has_goal = s["params"] >= FLOPS_GOAL_MIN_PARAMS
        rows.append({k: s[k] for k in ("preset", "params", "kind", "resolution", "frames", "tokens")}
                    | {"gflop": s["flops"] / 1e9, "ms": res["step"][0] * 1e3, "tflops": statistics.median(step_tf),
                       "peak_tflops": statistics.median(peak_tf), "fraction_of_peak": fraction,
                       "fraction_best": max(step_tf) / max(peak_tf),
                       "goal": GOALS["flops_fraction"] if has_goal else None,
                       "met": fraction >= GOALS["flops_fraction"] if has_goal else None})
        log(f"flops {s['preset']} {shape.kind} {shape.resolution}px x{shape.frames}: {100 * fraction:.0f}% of "
            f"{statistics.median(peak_tf):.2f} TFLOP/s")
    peak = {"n": n, "runs": len(all_peaks), "tflops": statistics.median(all_peaks) if all_peaks else None,
            "tflops_min": min(all_peaks, default=None), "tflops_max": max(all_peaks, default=None)}
    return {"peak": peak, "rows": rows}


# ---- section 5: quantization --------------------------------------------------------------------
def bench_quantization(grid: BenchGrid, models: Models, device: torch.device, pipe: Any,
                       log: Callable[[str], None]) -> list[dict]:
    """Every available mode on the T2V transformer (a 64 px 8-frame MFG step) and, given a pipeline,
    on its text towers (encoding a prompt and the empty text)."""
    from .quantization import available_modes, quantize_for, weight_bytes

    def quantized(module: torch.nn.Module, mode: str) -> torch.nn.Module:  # a quantized copy, served as users get it
        return quantize_for(copy.deepcopy(module).to(device), mode, device.type == "cuda")

    modes = available_modes(device.type)
    shape = Shape("video", grid.resolutions[0], grid.frames[0])
    rows = []
    for preset in grid.quant_presets:
        base = models.fp32(preset, True)
        inp = step_inputs(base.cfg, shape, device)
        for mode in modes:
            q = quantized(base, mode)
            median, _ = median_seconds(guided_step(q, shape, inp), grid.repeats, grid.warmup, device)
            rows.append({"part": "transformer", "preset": preset, "mode": mode, "weight_bytes": weight_bytes(q),
                         "ms": median * 1e3, "what": f"{shape.kind} {shape.resolution}px x{shape.frames} step"})
            log(f"quantization {preset} {mode}: {median * 1e3:.1f} ms")
            del q
    if pipe is not None:
        from .text import encode_text

        for mode in modes:
            towers = [dataclasses.replace(t, encoder=quantized(t.encoder, mode)) for t in pipe.towers]
            median, _ = median_seconds(lambda: encode_text(towers, [PROMPT, ""]), grid.repeats, grid.warmup, device)
            rows.append({"part": "text towers", "preset": "built-in", "mode": mode,
                         "weight_bytes": sum(weight_bytes(t.encoder) for t in towers),
                         "ms": median * 1e3, "what": "encode prompt + empty text"})
            del towers
    return rows


# ---- section 6: end to end ----------------------------------------------------------------------
def prompt_to_file(pipe: Any, frames: int, path: Path) -> dict[str, float]:
    """One request as ``gentron generate`` serves it: text, 25 steps, decode, then the PNG/MP4 file."""
    from .export import save_result

    start = time.perf_counter()
    result = pipe(PROMPT, frames=frames, height=64, num_inference_steps=25, seed=0)
    mid = time.perf_counter()
    save_result(result.frames[0], path, fps=4, settings=result.settings[0])
    end = time.perf_counter()
    return {"pipeline_s": mid - start, "export_s": end - mid, "total_s": end - start}


def bench_end_to_end(grid: BenchGrid, models: Models, device: torch.device, pipe: Any, model_name: str | None,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """Prompt to file with the built-in model as loaded and in bf16 (64 px image -> PNG, 8-frame video
    -> MP4), then one sampling step of small presets at 64 px in fp32 and bf16."""
    from .quantization import quantize_pipeline

    out: dict[str, Any] = {"model": model_name, "note": None, "rows": [], "steps": []}
    if pipe is None:
        out["note"] = "skipped: the built-in model (assets/gentron-shapes) is not there; give --model to use another"
    else:
        jobs = [("image", 1, "png", GOALS["e2e_image_s"])]
        if pipe.transformer.config.temporal:
            jobs.append(("video", 8, "mp4", GOALS["e2e_video_s"]))
        else:
            out["note"] = "no video row: this model has no temporal layers (text-to-image only)"
        bf16 = copy.deepcopy(pipe)
        quantize_pipeline(bf16, "bf16")
        with tempfile.TemporaryDirectory() as tmp:
            for quantize, p in (("none", pipe), ("bf16", bf16)):
                for kind, frames, ext, goal in jobs:
                    for _ in range(grid.warmup):
                        prompt_to_file(p, frames, Path(tmp) / f"out.{ext}")
                    runs = [prompt_to_file(p, frames, Path(tmp) / f"out.{ext}") for _ in range(grid.e2e_repeats)]
                    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    out["rows"].append({"kind": kind, "quantize": quantize, "resolution": 64, "frames": frames,
                                        "steps": 25, "format": ext, **med, "goal_s": goal,
                                        "met": med["total_s"] <= goal})
                    log(f"end to end {kind} ({quantize}): {med['total_s']:.2f} s")
    for preset in grid.small_presets:
        for dtype in (torch.float32, torch.bfloat16):
            for shape in (Shape("image", 64), Shape("video", 64, 8)):
                model = models.for_shape(preset, shape, dtype)
                step = guided_step(model, shape, step_inputs(model.cfg, shape, device))
                median, _ = median_seconds(step, grid.repeats, grid.warmup, device)
                out["steps"].append({"preset": preset, "precision": str(dtype).removeprefix("torch."),
                                     **asdict(shape), "branches": shape.branches, "ms": median * 1e3})
    return out


# ---- section 7: torch.compile -----------------------------------------------------------------------
def _first_call_s(fn: Fn) -> float:
    """Seconds of the first call of a freshly compiled function: compilation plus one run."""
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - start


def bench_compile(grid: BenchGrid, models: Models, device: torch.device, pipe: Any,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Our step and the reference's (PixArt for images, Latte for videos), each eager and compiled the way
    ``gentron.compilation`` compiles ours, timed alternately; then the built-in model end to end in bf16,
    eager against compiled (its first call, which compiles, reported apart)."""
    from .compilation import compile_transformer
    from .quantization import quantize_pipeline

    rows = []
    for preset in grid.presets:
        if not has_reference(preset):
            continue  # no reference to compare with (section 2 says the same)
        for shape in (Shape("image", grid.resolutions[0]), Shape("video", grid.resolutions[0], grid.frames[0])):
            model = models.for_shape(preset, shape)
            ref, args = reference_setup(model, shape, device)
            ours_c, ref_c = compile_transformer(copy.deepcopy(model)), compile_transformer(copy.deepcopy(ref))
            fns = {"ours": ours_forward(model, args), "theirs": reference_forward(ref, shape, *args[:4]),
                   "ours_compiled": ours_forward(ours_c, args, timesteps=False),
                   "theirs_compiled": reference_forward(ref_c, shape, *args[:4])}
            compile_s = {k: _first_call_s(fns[k]) for k in ("ours_compiled", "theirs_compiled")}
            res = compare_seconds(fns, grid.repeats, grid.warmup, device)
            ms = {k: v[0] * 1e3 for k, v in res.items()}
            flops = transformer_flops(model.cfg, shape.branches, shape.frames, shape.latent // model.cfg.patch_size,
                                      shape.latent // model.cfg.patch_size, TEXT_LEN)
            rows.append({"preset": preset, "reference": type(ref).__name__, **asdict(shape),
                         "params": _params(model), **{f"{k}_ms": v for k, v in ms.items()},
                         **{f"{k}_compile_s": v for k, v in compile_s.items()},
                         "compiled_vs_eager": ms["ours_compiled"] / ms["ours"],
                         "ratio_vs_eager_reference": ms["ours_compiled"] / ms["theirs"],
                         "ratio_both_compiled": ms["ours_compiled"] / ms["theirs_compiled"],
                         "compiled_tflops": flops / (ms["ours_compiled"] / 1e3) / 1e12})
            log(f"compile {preset} {shape.kind}: ours {ms['ours']:.0f} -> {ms['ours_compiled']:.0f} ms, "
                f"theirs {ms['theirs']:.0f} -> {ms['theirs_compiled']:.0f} ms")
            del ref, ref_c, ours_c
    out: dict[str, Any] = {"rows": rows, "end_to_end": []}
    if pipe is not None:
        eager = copy.deepcopy(pipe)
        quantize_pipeline(eager, "bf16")
        compiled = copy.deepcopy(eager)
        compile_transformer(compiled.transformer)
        jobs = [("image", 1, "png")] + ([("video", 8, "mp4")] if pipe.transformer.config.temporal else [])
        with tempfile.TemporaryDirectory() as tmp:
            for kind, frames, ext in jobs:
                path = Path(tmp) / f"out.{ext}"
                first = prompt_to_file(compiled, frames, path)["total_s"]
                res = compare_seconds({"eager": lambda: prompt_to_file(eager, frames, path),
                                       "compiled": lambda: prompt_to_file(compiled, frames, path)},
                                      grid.e2e_repeats, grid.warmup, device)
                out["end_to_end"].append({"kind": kind, "resolution": 64, "frames": frames, "steps": 25,
                                          "eager_s": res["eager"][0], "compiled_s": res["compiled"][0],
                                          "first_compiled_call_s": first})
                log(f"compile end to end {kind}: {res['eager'][0]:.2f} -> {res['compiled'][0]:.2f} s "
                    f"(first call {first:.0f} s)")
    return out


# ---- the run --------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers depend on: CPU model and flags, threads, GPU, library versions, commit."""
    import diffusers
    import transformers

    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # the first processor's entries
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    cpu = info.get("model name") or platform.processor() or "unknown"
    from .quantization import cpu_bf16_flags

    flags = cpu_bf16_flags()
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    return {"cpu": cpu, "cpu_flags": flags, "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _load_pipeline(model: str | None, device: torch.device) -> tuple[Any, str | None]:
    """The pipeline for sections 5-6: ``model`` if given, else the built-in one if it is there."""
    from .loading import BUILTIN_MODEL, load_pipeline

    if model is None and not BUILTIN_MODEL.exists():
        return None, None
    name = model or str(BUILTIN_MODEL)
    return load_pipeline(name, str(device)), name


def run_benchmark(grid: BenchGrid, device: str = "cpu", model: str | None = None,
                  sections: tuple[str, ...] = SECTIONS, command: str = "python -m gentron bench",
                  log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run the chosen sections and return the JSON document (see the module docstring)."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    started = time.perf_counter()
    models = Models(dev)
    result: dict[str, Any] = {
        "schema": SCHEMA, "command": command, "machine": machine_info(dev),
        "settings": {**asdict(grid), "precision": "bf16 weights (model.to(torch.bfloat16)), no autocast",
                     "latent_factor": LATENT_FACTOR, "text_len": TEXT_LEN, "text_scale": TEXT_SCALE,
                     "motion_scale": MOTION_SCALE, "sections": list(sections), "goals": GOALS},
    }
    if "step" in sections or "flops" in sections:
        result["step"] = bench_steps(grid, models, dev, log)
    if "flops" in sections:
        result["flops"] = bench_flops(grid, models, dev, result["step"], log)
    if "reference" in sections:
        result["reference"] = bench_references(grid, models, dev, log)
    if "mfg" in sections:
        result["mfg"] = bench_mfg(grid, models, dev, log)
    pipe, name = (None, None)
    if {"quantization", "end_to_end", "compile"} & set(sections):
        pipe, name = _load_pipeline(model, dev)
    if "quantization" in sections:
        result["quantization"] = bench_quantization(grid, models, dev, pipe, log)
    if "end_to_end" in sections:
        result["end_to_end"] = bench_end_to_end(grid, models, dev, pipe, name, log)
    if "compile" in sections:
        result["compile"] = bench_compile(grid, models, dev, pipe, log)
    result["seconds"] = time.perf_counter() - started
    return result


# ---- writing ------------------------------------------------------------------------------------
def _met(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _size(row: dict) -> str:
    return f"{row['resolution']} px" + (f" × {row['frames']} f" if row.get("kind") == "video" else "")


def write_markdown(result: dict[str, Any], plots: list[str] | None = None) -> str:
    """The report: the command, the machine, then one table per section (goal and met? where set)."""
    m, s = result["machine"], result["settings"]
    out = ["# GenTron benchmarks", "",
           f"Produced by `{result['command']}`" + (f" at commit {m['commit']}" if m.get("commit") else "")
           + f" on {m['date']}.", "",
           f"Machine: {m['cpu']} ({', '.join(m['cpu_flags']) or 'no AMX/AVX512-BF16'}), {m['logical_cpus']} logical "
           f"CPUs, **{m['threads']} torch threads**, device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "")
           + f"; torch {m['torch']}, diffusers {m['diffusers']}, transformers {m['transformers']}, "
             f"Python {m['python']}.", "",
           f"Method: medians of {s['repeats']} runs after {s['warmup']} warm-up run(s); compared pairs measured "
           f"alternately in this one run. Precision: {s['precision']}. Pixel sizes are for the built-in VAE "
           f"(latents = pixels / {s['latent_factor']}; an SD-style VAE's /8 halves the latent side). Text: "
           f"{s['text_len']} tokens per branch. Guidance: CFG with 2 branches for images, MFG with 3 for videos "
           f"(λT = {s['text_scale']}, λM = {s['motion_scale']}), batched in one forward.", ""]
    if "step" in result:
        out += ["## 1. Time per sampling step and peak memory", "",
                "One guided denoiser call. Peak memory: what the step adds on top of the resident weights and "
                "inputs (peak RSS over RSS before, on CPU; `max_memory_allocated` on CUDA).", "",
                _table(["preset", "params (M)", "kind", "size", "latent", "branches", "tokens", "step ms",
                        "peak MB", "weights MB"],
                       [[r["preset"], r["params"] / 1e6, r["kind"], _size(r), f"{r['latent']}²", r["branches"],
                         r["tokens"], r["ms"], r["peak_mem_mb"], r["weights_mb"]] for r in result["step"]]), ""]
        out += [f"![{Path(p).stem}]({Path(p).name})" for p in plots or []] + ([""] if plots else [])
    if "reference" in result and not result["reference"]:
        out += ["## 2. Against diffusers' PixArt-α (images) and Latte (videos)", "",
                "No preset in this run has the references' 4× MLP: nothing was compared.", ""]
    elif "reference" in result:
        out += ["## 2. Against diffusers' PixArt-α (images) and Latte (videos)", "",
                "Same width, depth, heads, patch, MLP width, exact GELU, text width and length, the same stacked "
                "batch of branches, bf16 weights, same threads. Latte runs no text mask (as its pipeline) and has "
                "a feed-forward in its temporal blocks, so it does more work per step: `ratio per FLOP` divides "
                "that out. Ours runs as our pipeline samples: what every step of a request shares (the caption "
                "projection, every block's text keys and values, and the timestep embeddings and adaLN-Zero "
                f"modulations of all its {STEPS} steps) is prepared once (`ours prepare ms`, not in `ours ms`), where "
                f"diffusers' PixArt and Latte pipelines redo it every step. `ratio`: a {STEPS}-step request's "
                f"average step, (ours + prepare / {STEPS}) / theirs, on which the goal is read; `step alone` leaves the "
                "preparation out, `prepared each step` adds all of it to every step. `ratio per FLOP` uses the step "
                "alone. Goal: ours/theirs ≤ 0.8.", "",
                _table(["reference", "preset", "kind", "size", "tokens", "ours ms", "theirs ms", "ours prepare ms",
                        "ours GFLOP", "theirs GFLOP", "ratio", "step alone", "prepared each step", "ratio per FLOP",
                        "goal", "met?"],
                       [[r["reference"], r["preset"], r["kind"], _size(r), r["tokens"], r["ours_ms"], r["theirs_ms"],
                         r.get("ours_prepare_ms"), r["ours_gflop"], r["theirs_gflop"], r["ratio"],
                         r.get("ratio_step_alone"), r.get("ratio_prepared_each_step"), r["ratio_per_flop"],
                         f"≤ {r['goal']}", _met(r["met"])] for r in result["reference"]]), ""]
    if "mfg" in result:
        out += ["## 3. Motion-free guidance: one batched forward vs three", "",
                "Both compute the same guided noise: their relative difference is checked on an fp32 copy "
                "(< 1e-4 or the row fails) and shown for the timed bf16 model (bf16 rounding depends on the batch "
                "size, and λT amplifies it). Goal: ≥ 1.3× faster.", "",
                _table(["preset", "size", "batched ms", "separate ms", "speedup", "rel diff fp32", "rel diff bf16",
                        "goal", "met?"],
                       [[r["preset"], _size(r), r["batched_ms"], r["separate_ms"], r["speedup"], r["rel_diff_fp32"],
                         r["rel_diff_bf16"], f"≥ {r['goal']}", _met(r["met"])] for r in result["mfg"]]), ""]
    if "flops" in result:
        p = result["flops"]["peak"]
        out += ["## 4. Achieved FLOP/s against the bf16 matmul peak", "",
                f"Each step (up to {PAIRED_MAX_MS / 1e3:.0f} s) is timed again alternately with a bf16 `torch.mm` of "
                f"{p['n']}³, so that drift hits both alike; across this section the matmul ran at "
                + (f"{p['tflops_min']:.2f}-{p['tflops_max']:.2f} TFLOP/s (median {p['tflops']:.2f}). "
                   if p["tflops"] else "— (no step paired). ")
                + "`% of peak`: the step's median TFLOP/s over its paired matmul median; `best/best`: the fastest "
                "step run over the fastest matmul run. FLOPs are counted from the architecture (linear layers, "
                "patch embedding, attention matmuls; `transformer_flops`, checked against torch's FlopCounterMode "
                f"in the tests). Goal: ≥ {GOALS['flops_fraction']:.0%} of peak for presets of ~100M parameters or "
                "more.", "",
                _table(["preset", "params (M)", "kind", "size", "tokens", "GFLOP/step", "step ms", "TFLOP/s",
                        "paired peak TFLOP/s", "% of peak", "% best/best", "goal", "met?"],
                       [[r["preset"], r["params"] / 1e6, r["kind"], _size(r), r["tokens"], r["gflop"], r["ms"],
                         r["tflops"], r["peak_tflops"], 100 * r["fraction_of_peak"], 100 * r["fraction_best"],
                         None if r["goal"] is None else f"≥ {r['goal']:.0%}", _met(r["met"])]
                        for r in result["flops"]["rows"]]), ""]
    if "quantization" in result:
        out += ["## 5. Quantization modes", "",
                "Each mode applied to a copy of the fp32 model (`gentron.quantization.quantize_module`; on CUDA "
                "bnb8/bnb4 load through diffusers' and transformers' `BitsAndBytesConfig` instead, "
                "`gentron.quantization.quantize_on_load`); bytes from `weight_bytes` (quantized tensors count "
                "their packed storage).", "",
                _table(["part", "preset", "mode", "weights MB", "ms", "timed"],
                       [[r["part"], r["preset"], r["mode"], r["weight_bytes"] / 2**20, r["ms"], r["what"]]
                        for r in result["quantization"]]), ""]
    if "end_to_end" in result:
        e = result["end_to_end"]
        out += ["## 6. The built-in model end to end", ""]
        if e["note"]:
            out += [e["note"] + ".", ""]
        if e["rows"]:
            out += [f"Model: `{e['model']}`. Text encoding, 25 steps, VAE decode, and the file written by "
                    "`gentron.export`; medians.", "",
                    _table(["kind", "quantize", "size", "file", "pipeline s", "export s", "total s", "goal", "met?"],
                           [[r["kind"], r["quantize"], _size(r), r["format"].upper(), r["pipeline_s"], r["export_s"],
                             r["total_s"],
                             f"≤ {r['goal_s']} s", _met(r["met"])] for r in e["rows"]]), ""]
        out += ["One sampling step (random weights) at 64 px:", "",
                _table(["preset", "precision", "kind", "size", "branches", "step ms"],
                       [[r["preset"], r["precision"], r["kind"], _size(r), r["branches"], r["ms"]]
                        for r in e["steps"]]), ""]
    if "compile" in result:
        c = result["compile"]
        out += ["## 7. torch.compile", "",
                "`gentron.compilation` (`--compile`): inductor with frozen weights and static shapes, applied alike to "
                "our transformer and to the reference's; timed alternately with the eager ones, bf16. `compile s`: "
                "the first call (compilation and one run). The section-2 goal (≤ 0.8) is read two ways here: ours "
                "compiled against the reference as diffusers runs it (eager), and both compiled.", "",
                _table(["preset", "reference", "kind", "size", "ours ms", "ours compiled ms", "theirs ms",
                        "theirs compiled ms", "ours compile s", "theirs compile s", "compiled / eager (ours)",
                        "ours compiled / theirs", "both compiled", "compiled TFLOP/s"],
                       [[r["preset"], r["reference"], r["kind"], _size(r), r["ours_ms"], r["ours_compiled_ms"],
                         r["theirs_ms"], r["theirs_compiled_ms"], r["ours_compiled_compile_s"],
                         r["theirs_compiled_compile_s"], r["compiled_vs_eager"], r["ratio_vs_eager_reference"],
                         r["ratio_both_compiled"], r["compiled_tflops"]] for r in c["rows"]]), ""]
        if c["end_to_end"]:
            out += ["The built-in model end to end (bf16, 25 steps, to PNG / MP4), eager against compiled; the "
                    "compiled pipeline's first call of each shape compiles:", "",
                    _table(["kind", "size", "eager s", "compiled s", "first compiled call s"],
                           [[r["kind"], _size(r), r["eager_s"], r["compiled_s"], r["first_compiled_call_s"]]
                            for r in c["end_to_end"]]), ""]
    out.append(f"Whole run: {result.get('seconds', 0.0):.0f} s.")
    return "\n".join(out) + "\n"


def write_plots(result: dict[str, Any], folder: Path, stem: str = "benchmarks") -> list[str]:
    """Step time vs frames and vs resolution (PNG, log scale), from section 1; returns the paths."""
    rows = result.get("step") or []
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    # step time vs frames: one line per preset and resolution (videos)
    fig, ax = plt.subplots(figsize=(6, 4))
    for preset in presets:
        for res in sorted({r["resolution"] for r in rows if r["kind"] == "video"}):
            pts = sorted((r["frames"], r["ms"]) for r in rows if r["preset"] == preset and r["kind"] == "video"
                         and r["resolution"] == res)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{preset}, {res} px")
    frames = sorted({r["frames"] for r in rows if r["kind"] == "video"})
    ax.set(xlabel="frames", ylabel="ms per step (MFG, 3 branches)", xscale="log", yscale="log",
           title="Step time vs frames")
    paths.append(_finish_plot(fig, ax, frames, folder / f"{stem}_step_vs_frames.png"))
    # step time vs resolution: images, and videos at the fewest frames
    fig, ax = plt.subplots(figsize=(6, 4))
    min_frames = min((r["frames"] for r in rows if r["kind"] == "video"), default=None)
    for preset in presets:
        for kind, frames in (("image", 1), ("video", min_frames)):
            pts = sorted((r["resolution"], r["ms"]) for r in rows if r["preset"] == preset and r["kind"] == kind
                         and r["frames"] == frames)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{preset}, {kind}" + (f" × {frames} f" if kind == "video"
                                                                              else ""))
    sides = sorted({r["resolution"] for r in rows})
    ax.set(xlabel="resolution (px; latents are /4)", ylabel="ms per step", xscale="log", yscale="log",
           title="Step time vs resolution")
    paths.append(_finish_plot(fig, ax, sides, folder / f"{stem}_step_vs_resolution.png"))
    return paths


def _finish_plot(fig, ax, ticks: list[int], path: Path) -> str:
    """Label the log x axis at ``ticks``, add legend and grid, save ``path`` and close the figure."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def save(result: dict[str, Any], json_path: Path, markdown_path: Path) -> list[str]:
    """Write the plots (next to the markdown), the markdown and the JSON; returns the plot paths."""
    plots = write_plots(result, markdown_path.parent, markdown_path.stem)
    result["plots"] = plots
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(write_markdown(result, plots))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    return plots


__all__ = ["BenchGrid", "Shape", "bench_grid", "run_benchmark", "save", "write_markdown", "write_plots",
           "transformer_flops", "counted_flops", "mfg_batched_vs_separate", "median_seconds", "compare_seconds",
           "peak_memory_bytes"]
