"""Writing a benchmark result: the JSON, the markdown report and the plots of cost against frames and resolution."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .measure import GOALS, PAIRED_MAX_MS, STEPS




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
                f"average step, (ours + prepare / {STEPS}) / theirs, on which the goal is read; `step alone` leaves "
                "the preparation out, `prepared each step` adds all of it to every step. `ratio per FLOP` uses the "
                "step alone. Where the engine packs its linear weights for oneDNN (gentron.packing, on the CPU), "
                "`ours ms` is the packed step and `unpacked ms` / `ratio unpacked` the same step on plain "
                "`nn.Linear` layers, timed in the same alternation. Goal: ours/theirs ≤ 0.8.", "",
                _table(["reference", "preset", "kind", "size", "tokens", "ours ms", "theirs ms", "ours prepare ms",
                        "ours GFLOP", "theirs GFLOP", "ratio", "step alone", "prepared each step", "ratio per FLOP",
                        "unpacked ms", "ratio unpacked", "goal", "met?"],
                       [[r["reference"], r["preset"], r["kind"], _size(r), r["tokens"], r["ours_ms"], r["theirs_ms"],
                         r.get("ours_prepare_ms"), r["ours_gflop"], r["theirs_gflop"], r["ratio"],
                         r.get("ratio_step_alone"), r.get("ratio_prepared_each_step"), r["ratio_per_flop"],
                         r.get("ours_unpacked_ms") if r.get("packed") else None,
                         r.get("ratio_unpacked") if r.get("packed") else None,
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
            steps = e["rows"][0].get("steps", 25)
            out += [f"Model: `{e['model']}`. Text encoding, {steps} steps (the model's own), VAE decode, and the file "
                    "written by `gentron.export`; medians.", "",
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
            out += [f"The built-in model end to end (bf16, {c['end_to_end'][0].get('steps', 25)} steps, to PNG / MP4), "
                    "eager against compiled; the compiled pipeline's first call of each shape compiles:", "",
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


