"""The benchmark's seven sections (see the package docstring); each returns its rows."""
from __future__ import annotations

import copy
import dataclasses
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import GenTronConfig, get_preset
from ..model import GenTronTransformer
from ..packing import is_packed, pack_linears, unpack_linears
from .measure import (FLOPS_GOAL_MIN_PARAMS, GOALS, PAIRED_MAX_MS, PROMPT, STEPS, TEXT_LEN, BenchGrid, Fn, Models,
                      Shape, StepInputs, _params, compare_seconds, counted_flops, guided_step, median_seconds,
                      peak_memory_bytes, prepared, preparing, separate_step, stacked_inputs, step_inputs,
                      transformer_flops)


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
    from ..quantization import weight_bytes

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
    request = prepared(model, text, mask, t[:1] if timesteps else None)
    return lambda: model(x, t, request, None, motion)


def bench_references(grid: BenchGrid, models: Models, device: torch.device,
                     log: Callable[[str], None]) -> list[dict]:
    rows = []
    for preset in grid.presets:
        if not has_reference(preset):
            log(f"reference: {preset} skipped, its MLP is not 4x its width as PixArt's and Latte's are")
            continue
        for shape in grid.reference_shapes():
            model, plain = models.for_shape(preset, shape), models.for_shape(preset, shape, packed=False)
            ref, args = reference_setup(model, shape, device)
            ours, theirs = ours_forward(model, args), reference_forward(ref, shape, *args[:4])
            unpacked = ours_forward(plain, args)  # the same step without gentron.packing, for the record
            prepare = preparing(model, *args[2:4], args[1][:1])  # once per request
            # FlopCounterMode does not see oneDNN's packed product: count on the plain model (the same products)
            ours_flops, their_flops = counted_flops(unpacked), counted_flops(theirs)  # these count as one warm-up
            with torch.inference_mode():
                ours()  # and this is ours'
            res = compare_seconds({"ours": ours, "theirs": theirs, "prepare": prepare, "unpacked": unpacked},
                                  grid.repeats, max(0, grid.warmup - 1), device)
            ours_s, theirs_s, prepare_s = res["ours"][0], res["theirs"][0], res["prepare"][0]
            ratio = (ours_s + prepare_s / STEPS) / theirs_s  # a 25-step request's average step
            rows.append({"preset": preset, "reference": type(ref).__name__, **asdict(shape),
                         "tokens": shape.tokens(model.cfg.patch_size), "ours_ms": ours_s * 1e3,
                         "theirs_ms": theirs_s * 1e3, "ours_prepare_ms": prepare_s * 1e3,
                         "ours_unpacked_ms": res["unpacked"][0] * 1e3, "packed": is_packed(model),
                         "ratio_unpacked": (res["unpacked"][0] + prepare_s / STEPS) / theirs_s,
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
    from ..quantization import available_modes, quantize_for, weight_bytes

    def quantized(module: torch.nn.Module, mode: str, pack: bool = False) -> torch.nn.Module:
        """A quantized copy, served as users get it (``pack``: the transformer, packed where load_pipeline packs)."""
        q = quantize_for(copy.deepcopy(module).to(device), mode, device.type == "cuda")
        return pack_linears(q) if pack and models.pack else q

    modes = available_modes(device.type)
    shape = Shape("video", grid.resolutions[0], grid.frames[0])
    rows = []
    for preset in grid.quant_presets:
        base = models.fp32(preset, True)
        inp = step_inputs(base.cfg, shape, device)
        for mode in modes:
            q = quantized(base, mode, pack=True)
            median, _ = median_seconds(guided_step(q, shape, inp), grid.repeats, grid.warmup, device)
            rows.append({"part": "transformer", "preset": preset, "mode": mode, "weight_bytes": weight_bytes(q),
                         "ms": median * 1e3, "what": f"{shape.kind} {shape.resolution}px x{shape.frames} step"})
            log(f"quantization {preset} {mode}: {median * 1e3:.1f} ms")
            del q
    if pipe is not None:
        from ..text import encode_text

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
    """One request as ``gentron generate`` serves it: text, the model's own steps, decode, then the PNG/MP4 file."""
    from ..export import save_result

    start = time.perf_counter()
    result = pipe(PROMPT, frames=frames, height=64, seed=0)
    mid = time.perf_counter()
    save_result(result.frames[0], path, fps=4, settings=result.settings[0])
    end = time.perf_counter()
    return {"pipeline_s": mid - start, "export_s": end - mid, "total_s": end - start}


def bench_end_to_end(grid: BenchGrid, models: Models, device: torch.device, pipe: Any, model_name: str | None,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """Prompt to file with the built-in model as loaded and in bf16 (64 px image -> PNG, 8-frame video
    -> MP4) at its own step count, then one sampling step of small presets at 64 px in fp32 and bf16."""
    from ..quantization import quantize_pipeline

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
                                        "steps": pipe.default_steps, "format": ext, **med, "goal_s": goal,
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
    from ..compilation import compile_transformer
    from ..quantization import quantize_pipeline

    rows = []
    for preset in grid.presets:
        if not has_reference(preset):
            continue  # no reference to compare with (section 2 says the same)
        for shape in (Shape("image", grid.resolutions[0]), Shape("video", grid.resolutions[0], grid.frames[0])):
            model = models.for_shape(preset, shape)
            ref, args = reference_setup(model, shape, device)
            plain = models.for_shape(preset, shape, packed=False)  # inductor packs the weights it freezes itself
            ours_c, ref_c = compile_transformer(copy.deepcopy(plain)), compile_transformer(copy.deepcopy(ref))
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
        compile_transformer(unpack_linears(compiled.transformer))  # as load_pipeline(compile=True): unpacked
        jobs = [("image", 1, "png")] + ([("video", 8, "mp4")] if pipe.transformer.config.temporal else [])
        with tempfile.TemporaryDirectory() as tmp:
            for kind, frames, ext in jobs:
                path = Path(tmp) / f"out.{ext}"
                first = prompt_to_file(compiled, frames, path)["total_s"]
                res = compare_seconds({"eager": lambda: prompt_to_file(eager, frames, path),
                                       "compiled": lambda: prompt_to_file(compiled, frames, path)},
                                      grid.e2e_repeats, grid.warmup, device)
                out["end_to_end"].append({"kind": kind, "resolution": 64, "frames": frames, "steps": pipe.default_steps,
                                          "eager_s": res["eager"][0], "compiled_s": res["compiled"][0],
                                          "first_compiled_call_s": first})
                log(f"compile end to end {kind}: {res['eager'][0]:.2f} -> {res['compiled'][0]:.2f} s "
                    f"(first call {first:.0f} s)")
    return out


