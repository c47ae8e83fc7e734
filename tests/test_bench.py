"""The benchmark's pieces on tiny models: fair comparisons, exact FLOP counts, the report writer.

The real numbers come from ``python -m gentron bench`` (docs/benchmarks.md); nothing here is heavy.
"""
import json
from dataclasses import replace

import pytest
import torch

from gentron.bench import (SECTIONS, Shape, bench_grid, counted_flops, guided_step, liven, median_seconds,
                           mfg_batched_vs_separate, peak_memory_bytes, prepare_flops, prepare_step, run_benchmark,
                           save, step_inputs, transformer_flops, write_markdown)
from gentron.cli import main
from gentron.model import GenTronTransformer

CPU = torch.device("cpu")


def _tiny(**overrides) -> GenTronTransformer:
    torch.manual_seed(0)
    return liven(GenTronTransformer.from_preset("tiny", **overrides)).eval()


def test_mfg_batched_and_separate_compute_the_same_and_are_both_timed():
    model = _tiny(temporal=True)
    shape = Shape("video", 32, 4)
    r = mfg_batched_vs_separate(model, shape, step_inputs(model.cfg, shape, CPU, text_len=7), repeats=2, warmup=1,
                                device=CPU)
    assert r["batched_s"] > 0 and r["separate_s"] > 0
    assert r["same_result"] and r["check_rel_diff"] < 1e-5 and r["rel_diff"] == r["check_rel_diff"]
    with torch.no_grad():  # and the guided noise is not trivially zero (liven woke the zero-initialised gates)
        assert guided_step(model, shape, step_inputs(model.cfg, shape, CPU, text_len=7))().abs().mean() > 1e-3


@pytest.mark.parametrize("overrides", [dict(temporal=False), dict(temporal=True),
                                       dict(temporal=True, timestep_modulation="adaln_single"),
                                       dict(text_conditioning="adaln_zero"),
                                       dict(text_conditioning="cross_attention_pooled")])
@pytest.mark.parametrize("shape", [Shape("image", 32), Shape("video", 32, 4)], ids=["image", "video"])
def test_analytic_flops_equal_torch_flop_counter(overrides, shape):
    model = _tiny(**overrides)
    inp = step_inputs(model.cfg, shape, CPU, text_len=7)
    grid = shape.latent // model.cfg.patch_size
    expected = transformer_flops(model.cfg, shape.branches, shape.frames, grid, grid, text_len=7)
    assert counted_flops(guided_step(model, shape, inp)) == expected


def test_flops_by_hand_for_one_linear_and_one_attention():
    # tiny, one image branch, 2x2 patches: the counts that dominate, written out
    cfg = GenTronTransformer.from_preset("tiny").cfg
    d, n, L, m = 32, 4, 3, 64
    flops = transformer_flops(cfg, batch=1, frames=1, grid_h=2, grid_w=2, text_len=L)
    per_block = (n * 4 * d * d + 2 * n * n * d  # spatial attention: qkv + out projections, QKᵀ and AV
                 + n * 2 * d * d + 2 * n * L * d  # cross-attention: q + out, QKᵀ and AV
                 + n * 2 * d * m)  # MLP
    rest = n * 16 * d + n * d * 16  # patch embedding (4 channels x 2x2), output layer
    assert flops == 2 * (2 * per_block + rest)
    # once per request: the caption projection, each block's keys and values on the text, and for each of the
    # 25 steps the timestep MLP, each block's adaLN-Zero modulation and the final one
    per_step = (256 * d + d * d) + 2 * 6 * d * d + 2 * d * d
    assert prepare_flops(cfg, batch=1, text_len=L) == 2 * (L * (32 * d + d * d) + 2 * L * 2 * d * d + 25 * per_step)


@pytest.mark.parametrize("overrides", [dict(temporal=True), dict(timestep_modulation="adaln_single"),
                                       dict(text_conditioning="adaln_zero"),
                                       dict(text_conditioning="cross_attention_pooled")])
def test_prepare_flops_are_what_prepare_counts(overrides):
    model = _tiny(**overrides)
    shape = Shape("image", 32)
    inp = step_inputs(model.cfg, shape, CPU, text_len=7)
    assert counted_flops(prepare_step(model, shape, inp)) == prepare_flops(model.cfg, shape.branches, 7)


def test_timing_and_memory_helpers():
    median, runs = median_seconds(lambda: torch.ones(1000).sum(), repeats=3, warmup=1, device=CPU)
    assert len(runs) == 3 and median > 0
    peak = peak_memory_bytes(lambda: torch.ones(16 * 2**20 // 4).sum(), CPU)  # touches 16 MB
    assert peak is None or peak >= 12 * 2**20


def _small_result() -> dict:
    step = {"preset": "tiny", "params": 52656, "kind": "video", "resolution": 64, "frames": 8, "latent": 16,
            "branches": 3, "tokens": 1536, "ms": 12.5, "ms_runs": [12.5], "peak_mem_mb": 4.0, "weights_mb": 0.1,
            "flops": 153_000_000}
    return {
        "schema": "gentron-bench/1", "command": "python -m gentron bench --quick",
        "machine": {"cpu": "Test CPU", "cpu_flags": ["amx_bf16"], "logical_cpus": 2, "threads": 2, "device": "cpu",
                    "gpu": None, "torch": "2.x", "diffusers": "0.x", "transformers": "5.x", "python": "3.11",
                    "commit": "abc1234", "date": "today"},
        "settings": {"repeats": 2, "warmup": 1, "precision": "bf16 weights", "latent_factor": 4, "text_len": 77,
                     "text_scale": 7.5, "motion_scale": 1.5},
        "step": [step],
        "reference": [{"preset": "S/2", "reference": "LatteTransformer3DModel", "kind": "video", "resolution": 64,
                       "frames": 8, "tokens": 1536, "ours_ms": 7.0, "theirs_ms": 10.0, "ratio": 0.7,
                       "ours_gflop": 30.0, "theirs_gflop": 45.0, "ratio_per_flop": 1.05, "goal": 0.8, "met": True}],
        "mfg": [{"preset": "tiny", "kind": "video", "resolution": 64, "frames": 8, "batched_ms": 10.0,
                 "separate_ms": 12.0, "speedup": 1.2, "rel_diff_fp32": 1e-7, "rel_diff_bf16": 0.01,
                 "same_result": True, "goal": 1.3, "met": False}],
        "flops": {"peak": {"n": 4096, "runs": 5, "tflops": 0.7, "tflops_min": 0.55, "tflops_max": 1.0},
                  "rows": [{**{k: step[k] for k in ("preset", "params", "kind", "resolution", "frames", "tokens",
                                                    "ms")}, "gflop": 0.153, "tflops": 0.012,
                            "peak_tflops": 0.7, "fraction_of_peak": 0.017, "fraction_best": 0.02, "goal": None,
                            "met": None}]},
        "quantization": [{"part": "transformer", "preset": "tiny", "mode": "int8", "weight_bytes": 100_000,
                          "ms": 20.0, "what": "video 64px x8 step"}],
        "end_to_end": {"model": None, "note": "skipped: no built-in model", "rows": [],
                       "steps": [{"preset": "tiny", "precision": "bfloat16", "kind": "image", "resolution": 64,
                                  "frames": 1, "branches": 2, "ms": 3.0}]},
        "compile": {"rows": [{"preset": "S/2", "reference": "PixArtTransformer2DModel", "kind": "image",
                              "resolution": 64, "frames": 1, "params": 12e6, "ours_ms": 24.0, "theirs_ms": 26.0,
                              "ours_compiled_ms": 17.0, "theirs_compiled_ms": 15.0, "ours_compiled_compile_s": 30.0,
                              "theirs_compiled_compile_s": 25.0, "compiled_vs_eager": 0.71,
                              "ratio_vs_eager_reference": 0.65, "ratio_both_compiled": 1.13, "compiled_tflops": 0.14}],
                    "end_to_end": [{"kind": "video", "resolution": 64, "frames": 8, "steps": 25, "eager_s": 2.6,
                                    "compiled_s": 2.3, "first_compiled_call_s": 41.0}]},
        "seconds": 1.0,
    }


def test_markdown_has_the_command_the_machine_and_one_table_per_section():
    md = write_markdown(_small_result())
    assert "`python -m gentron bench --quick`" in md and "Test CPU" in md and "**2 torch threads**" in md
    for n in range(1, 8):
        assert f"## {n}." in md
    assert md.count("| goal | met? |") == 3  # reference, MFG, FLOP/s (end to end is skipped here)
    assert "| LatteTransformer3DModel | S/2 | video | 64 px × 8 f | 1536 |" in md and "| ≤ 0.8 | yes |" in md
    assert "| ≥ 1.3 | no |" in md  # MFG row: goal not met
    assert "skipped: no built-in model" in md and "| transformer | tiny | int8 |" in md
    assert "| S/2 | PixArtTransformer2DModel | image | 64 px | 24 | 17 | 26 | 15 | 30 | 25 | 0.71 | 0.65 | 1.13 |" in md
    assert "| video | 64 px × 8 f | 2.6 | 2.3 | 41 |" in md


@pytest.mark.slow  # end to end
def test_quick_grid_end_to_end_on_tiny(tmp_path):
    grid = replace(bench_grid(quick=True), presets=("tiny",), resolutions=(32,), frames=(4,), quant_presets=("tiny",),
                   small_presets=("tiny",), repeats=1, warmup=0, matmul_size=256)
    result = run_benchmark(grid, sections=("step", "flops", "mfg", "reference"), command="test")
    plots = save(result, tmp_path / "b.json", tmp_path / "b.md")
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["schema"] == "gentron-bench/1" and data["machine"]["threads"] == torch.get_num_threads()
    assert [(r["kind"], r["frames"]) for r in data["step"]] == [("image", 1), ("video", 4)]
    assert all(r["ms"] > 0 and r["flops"] > 0 for r in data["step"])
    assert data["flops"]["peak"]["tflops"] > 0 and data["mfg"][0]["same_result"]
    assert [r["kind"] for r in data["flops"]["rows"]] == ["image", "video"]  # each step paired with the matmul
    assert all(0 < r["fraction_of_peak"] and r["peak_tflops"] > 0 for r in data["flops"]["rows"])
    assert data["reference"] == []  # tiny's MLP is 2x its width: no like-for-like reference exists
    assert len(plots) == 2 and all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in plots)
    assert "## 1. Time per sampling step" in (tmp_path / "b.md").read_text()


def test_cli_rejects_unknown_sections(tmp_path, capsys):
    assert main(["bench", "--quick", "--sections", "step,bogus", "--out", str(tmp_path / "b.json")]) == 2
    assert "unknown sections ['bogus']" in capsys.readouterr().err
    assert set(SECTIONS) == {"step", "reference", "mfg", "flops", "quantization", "end_to_end",
                             "compile"}
