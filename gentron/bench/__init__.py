"""Benchmarks: ``python -m gentron bench [--quick]`` writes docs/bench/HOST.json, .md and plots.

``measure``: the request shapes, timing, memory and FLOP counts, models and inputs; ``sections``: the seven
sections below; ``report``: the markdown and plots; this module runs the chosen sections.

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
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from .measure import (GOALS, LATENT_FACTOR, MOTION_SCALE, SCHEMA, SECTIONS, TEXT_LEN, TEXT_SCALE, BenchGrid, Models,
                      Shape, bench_grid, compare_seconds, counted_flops, guided_step, liven, median_seconds,
                      peak_memory_bytes, prepare_flops, prepare_step, stacked_inputs, step_inputs, transformer_flops)
from .report import save, write_markdown, write_plots
from .sections import (bench_compile, bench_end_to_end, bench_flops, bench_mfg, bench_quantization, bench_references,
                       bench_steps, mfg_batched_vs_separate)

__all__ = ["SECTIONS", "BenchGrid", "Shape", "bench_grid", "run_benchmark", "save", "write_markdown", "write_plots",
           "compare_seconds", "counted_flops", "guided_step", "liven", "median_seconds", "mfg_batched_vs_separate",
           "peak_memory_bytes", "prepare_flops", "prepare_step", "stacked_inputs", "step_inputs", "transformer_flops"]



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
    from ..quantization import cpu_bf16_flags

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
    from ..loading import BUILTIN_MODEL, load_pipeline

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
        "settings": {**asdict(grid), "precision": "bf16 weights (model.to(torch.bfloat16)), no autocast"
                     + ("; linear weights packed for oneDNN as the engine serves them on the CPU (gentron.packing)"
                        if models.pack else ""),
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


