"""What the benchmark measures and how: the request shapes and grids, timing, memory, FLOP counts, and the
models and inputs every section shares."""
from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..config import GenTronConfig
from ..guidance import Branch, guidance_weights, guided_noise, stack_branches
from ..model import GenTronTransformer, Prepared
from ..packing import pack_linears, packing_available

SCHEMA = "gentron-bench/1"
SECTIONS = ("step", "reference", "mfg", "flops", "quantization", "end_to_end", "compile")
GOALS = {"reference_ratio": 0.8, "mfg_speedup": 1.3, "flops_fraction": 0.4, "e2e_image_s": 1.0, "e2e_video_s": 5.0}
FLOPS_GOAL_MIN_PARAMS = 100_000_000  # the FLOP/s goal is set for presets of ~100M parameters or more
LATENT_FACTOR = 4  # the built-in VAE downsamples by 4 (three blocks); SD-style VAEs by 8
TEXT_LEN = 77  # text tokens per sample (CLIP's length); real tokens: 20 in the prompt, 2 in the empty text
TEXT_SCALE, MOTION_SCALE = 7.5, 1.5  # λT, λM: every guidance branch has a non-zero weight
STEPS = 25  # sampling steps of a request (the default): what the once-per-request work is spread over
PROMPT = "a red circle moving left"
PAIRED_MAX_MS = 5000.0  # section 4 re-times steps up to this long; the 10-25 s ones would add 10+ minutes

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


def prepare_flops(cfg: GenTronConfig, batch: int, text_len: int, steps: int = STEPS) -> int:
    """FLOPs of ``GenTronTransformer.prepare``, once per request: the caption projection, every block's text
    keys/values, and the timestep table of ``steps`` steps (the timestep MLP; every block's and the output
    layer's adaLN-Zero modulation where they are tabulated)."""
    d = cfg.hidden_size
    macs = batch * text_len * (cfg.text_dim * d + d * d)
    if cfg.cross_attends:
        macs += cfg.depth * batch * text_len * 2 * d * d
    macs += steps * (256 * d + d * d)
    if cfg.tabulated_modulation:
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
    tabulated = cfg.tabulated_modulation
    macs = tokens * cfg.in_channels * cfg.patch_size**2 * d  # patch embedding, a strided convolution
    if cfg.pools_text:
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
    if cfg.cross_attends:
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
    """Random-weight transformers built once per (preset, temporal) in fp32, handed out in any dtype; packed
    (gentron.packing) by default where the engine serves them packed, on the CPU."""

    def __init__(self, device: torch.device, pack: bool | None = None):
        self.device = device
        self.pack = device.type == "cpu" and packing_available() if pack is None else pack
        self._fp32: dict[tuple[str, bool], GenTronTransformer] = {}
        self._cast: dict[tuple[str, bool, torch.dtype, bool], GenTronTransformer] = {}

    def fp32(self, preset: str, temporal: bool) -> GenTronTransformer:
        """The plain (unpacked) fp32 model."""
        key = (preset, temporal)
        if key not in self._fp32:
            torch.manual_seed(0)
            self._fp32[key] = liven(GenTronTransformer.from_preset(preset, temporal=temporal)).eval()
        return self._fp32[key]

    def get(self, preset: str, temporal: bool, dtype: torch.dtype = torch.bfloat16,
            packed: bool | None = None) -> GenTronTransformer:
        packed = self.pack if packed is None else packed
        key = (preset, temporal, dtype, packed)
        if dtype == torch.float32 and self.device.type == "cpu" and not packed:
            return self.fp32(preset, temporal)
        if key not in self._cast:
            # nn.Module.to: ModelMixin.to would warn about fp32 modules that this model does not have
            model = nn.Module.to(copy.deepcopy(self.fp32(preset, temporal)), self.device, dtype)
            self._cast[key] = pack_linears(model) if packed else model
        return self._cast[key]

    def for_shape(self, preset: str, shape: Shape, dtype: torch.dtype = torch.bfloat16,
                  packed: bool | None = None) -> GenTronTransformer:
        """Images run the text-to-image model, videos the text-to-video one (with temporal layers)."""
        return self.get(preset, shape.kind == "video", dtype, packed)


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


def _guidance(shape: Shape) -> tuple[list[Branch], torch.Tensor]:
    """The guidance branches and weights of a request of ``shape``: CFG for images, MFG (λM > 1) for videos."""
    branches, weights = guidance_weights(TEXT_SCALE, [MOTION_SCALE] if shape.kind == "video" else None)
    assert len(branches) == shape.branches
    return branches, weights


def preparing(model: GenTronTransformer, text: torch.Tensor, mask: torch.Tensor, t: torch.Tensor | None,
              steps: int = STEPS) -> Fn:
    """Preparing one request, the work a pipeline does once: its text, and (given a step's ``t``) the table of
    ``steps`` timesteps around it; None leaves the table out, as a compiled pipeline does."""
    timesteps = None if t is None else request_timesteps(t, steps)
    return lambda: model.prepare(text, mask, timesteps=timesteps)


def prepared(model: GenTronTransformer, text: torch.Tensor, mask: torch.Tensor, t: torch.Tensor | None) -> Prepared:
    """The request as the pipeline hands it to every step, prepared once (``preparing``'s result)."""
    with torch.inference_mode():
        return preparing(model, text, mask, t)()


def guided_step(model: GenTronTransformer, shape: Shape, inp: StepInputs) -> Fn:
    """One sampling step's denoiser call: all guidance branches in one batched forward, on the request prepared
    once as the pipeline does (its cost is ``prepare_step``'s, not the step's)."""
    branches, weights = _guidance(shape)
    request = prepared(model, *stack_branches(inp.cond, inp.uncond, branches), inp.t)
    return lambda: guided_noise(model, inp.x, inp.t, request, None, branches, weights)


def prepare_step(model: GenTronTransformer, shape: Shape, inp: StepInputs, steps: int = STEPS) -> Fn:
    """The request's share that ``guided_step`` leaves out (text, and a table of ``steps`` timesteps): paid once."""
    return preparing(model, *stack_branches(inp.cond, inp.uncond, _guidance(shape)[0]), inp.t, steps)


def separate_step(model: GenTronTransformer, shape: Shape, inp: StepInputs) -> Fn:
    """The same step with one forward per branch, combined with the same weights (each branch's text also
    prepared once per request)."""
    branches, weights = _guidance(shape)
    requests = [prepared(model, *(inp.cond if branch.conditional else inp.uncond), inp.t) for branch in branches]

    def run() -> torch.Tensor:
        out = torch.zeros(inp.x.shape, device=inp.x.device)
        for branch, w, request in zip(branches, weights[:, 0].tolist(), requests):
            motion = torch.tensor([branch.motion], device=inp.x.device)
            out += w * model(inp.x, inp.t, request, None, motion).float()
        return out

    return run


def stacked_inputs(inp: StepInputs, shape: Shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batched forward's inputs (branches stacked), as guided_noise builds them, for the references."""
    n = shape.branches
    return (inp.x.repeat(n, 1, 1, 1, 1), inp.t.repeat(n), *stack_branches(inp.cond, inp.uncond, _guidance(shape)[0]))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

