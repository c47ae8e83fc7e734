"""Sweeps: the same CompBench prompts and seeds at several λM, λT or step counts, with a plot.

- ``sweep-motion``: video prompts at each λM: the dynamic degree (how much changes between frames) against
  per-frame quality (captioned objects right in every frame; colour and shape right) and direction.
- ``sweep-text``: image prompts at each λT: binding accuracy (the full check of each category, and colour
  and shape alone) against λT.
- ``sweep-steps``: image and video prompts at each step count: every category's score against steps, and the
  fewest steps within ``STEPS_TOLERANCE`` points of the most steps' score in every category (a model's own
  default, ``python -m gentron.training.assemble ship --steps N``).

    python -m gentron eval --suite sweep-motion --values 0,0.5,1,1.5,2 --n-videos 40 --out-dir runs/sweep_m
    python -m gentron eval --suite sweep-text --values 1,3,5,7.5,10 --n-images 90 --out-dir runs/sweep_t
    python -m gentron eval --suite sweep-steps --n-images 300 --n-videos 100 --out-dir runs/sweep_s
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..jobs import GenerationSettings
from .compbench import IMAGE_CATEGORIES, VIDEO_CATEGORIES, run_compbench

SWEEPS = {  # suite -> (the generation argument swept, its default values)
    "sweep-motion": ("motion_guidance", (0.0, 0.5, 1.0, 1.5, 2.0)),
    "sweep-text": ("text_guidance", (1.0, 3.0, 5.0, 7.5, 10.0)),
    "sweep-steps": ("steps", (4, 8, 12, 16, 25)),
}
SYMBOLS = {"motion_guidance": "λM", "text_guidance": "λT", "steps": "steps"}
STEPS_TOLERANCE = 2.0  # points a step count may lose against the most steps and still be the default
STEPS_KEYS = ("correct", "direction", "objects_every_frame")  # what a fewer-steps default must keep, per category


def parse_values(text: str | None, suite: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0]; None gives the suite's defaults. Errors say the fix."""
    if text is None:
        return list(SWEEPS[suite][1])
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--values must be comma-separated numbers, e.g. 0,0.5,1, got {text!r}") from None
    if not values:
        raise ValueError("--values is empty: give at least one number")
    if SWEEPS[suite][0] == "steps":
        if any(v != int(v) or v < 1 for v in values):
            raise ValueError(f"--values for sweep-steps must be whole step counts >= 1, e.g. 4,8,25, got {text!r}")
        values = [int(v) for v in values]
    return values


def run_sweep(pipe, out_dir: Path, gen_args: GenerationSettings, suite: str, values: list[float],
              n_images: int, n_videos: int, seed: int = 0, split: str = "all") -> dict:
    """One CompBench run per value (same prompts and seeds), then sweep.json, sweep.md and sweep.png."""
    if suite not in SWEEPS:
        raise ValueError(f"suite must be one of {sorted(SWEEPS)}, got {suite!r}")
    param = SWEEPS[suite][0]
    if suite == "sweep-motion":
        n_images = 0  # λM only acts on videos
    elif suite == "sweep-text":
        n_videos = 0  # λT is judged on images, where binding is checked most directly
    points = []
    for value in values:
        args = dataclasses.replace(gen_args, **{param: value})
        summary = run_compbench(pipe, out_dir / f"{param}_{value:g}", args, n_images, n_videos, seed, split)
        points.append({"value": value, "table": summary["table"],
                       "seconds": sum(r["seconds"] for r in summary["results"])})
    result = {"suite": suite, "parameter": param, "values": values, "seed": seed, "n_images": n_images,
              "n_videos": n_videos, "settings": {k: getattr(gen_args.resolved(pipe), k) for k in
                                                 ("steps", "text_guidance", "motion_guidance", "scheduler",
                                                  "guidance_interval", "eta", "model")},
              "points": points}
    if param == "steps":
        result["chosen"] = fewest_steps(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(result, indent=1))
    (out_dir / "sweep.md").write_text(sweep_table(result) + "\n")
    plot_sweep(result, out_dir / "sweep.png")
    return result


def fewest_steps(result: dict, tolerance: float = STEPS_TOLERANCE) -> dict:
    """The fewest swept steps whose every category (each of ``STEPS_KEYS`` it reports) scores within ``tolerance``
    points of the most steps' score; that count is always a candidate, so one is always chosen."""
    points = sorted(result["points"], key=lambda p: p["value"])
    best = points[-1]["table"]

    def kept(table: dict) -> bool:
        return all(table[kind][key] >= best[kind][key] - tolerance
                   for kind in best for key in STEPS_KEYS if key in best[kind] and kind in table)

    chosen = next(p["value"] for p in points if kept(p["table"]))
    return {"steps": chosen, "against": points[-1]["value"], "tolerance": tolerance}


def _series(result: dict) -> dict[str, list[float]]:
    """The curves of a sweep: per category for steps; pooled over its categories (weighted by their prompt
    counts) for guidance."""
    if result["suite"] == "sweep-steps":
        series: dict[str, list[float]] = {}
        for point in result["points"]:
            for kind, row in point["table"].items():
                for key in STEPS_KEYS:
                    if key in row:  # direction and frames: video rows only
                        series.setdefault(f"{key}: {kind}", []).append(row[key])
        return series
    kinds = VIDEO_CATEGORIES if result["suite"] == "sweep-motion" else IMAGE_CATEGORIES
    keys = (["dynamic_degree", "objects_every_frame", "attribute", "direction", "correct"]
            if result["suite"] == "sweep-motion" else ["correct", "attribute"])
    series: dict[str, list[float]] = {k: [] for k in keys}
    if result["suite"] == "sweep-text":
        series.update({f"correct: {k}": [] for k in kinds})
    for point in result["points"]:
        rows = [(k, point["table"][k]) for k in kinds if k in point["table"]]
        total = sum(r["n"] for _, r in rows)
        for key in keys:
            series[key].append(sum(r[key] * r["n"] for _, r in rows) / total)
        if result["suite"] == "sweep-text":
            for k, r in rows:
                series[f"correct: {k}"].append(r["correct"])
    return series


def sweep_table(result: dict) -> str:
    series = _series(result)
    symbol = SYMBOLS[result["parameter"]]
    lines = [f"| {symbol} | " + " | ".join(series) + " |", "|---" * (len(series) + 1) + "|"]
    for i, point in enumerate(result["points"]):
        cells = [f"{v[i]:.3f}" if k == "dynamic_degree" else f"{v[i]:.1f}" for k, v in series.items()]
        lines.append(f"| {point['value']:g} | " + " | ".join(cells) + " |")
    if "chosen" in result:
        c = result["chosen"]
        lines.append(f"\nfewest steps within {c['tolerance']:g} points of {c['against']} steps in every category: "
                     f"{c['steps']}")
    return "\n".join(lines)


def plot_sweep(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, x = _series(result), result["values"]
    symbol = SYMBOLS[result["parameter"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for key, ys in series.items():
        if key != "dynamic_degree":
            ax.plot(x, ys, marker="o", label=key)
    ax.set_xlabel(symbol)
    ax.set_ylabel("% of prompts")
    ax.set_ylim(-2, 102)
    if "dynamic_degree" in series:
        ax2 = ax.twinx()
        ax2.plot(x, series["dynamic_degree"], marker="s", color="black", linestyle="--", label="dynamic degree")
        ax2.set_ylabel("dynamic degree (mean frame change)")
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    counts = [f"{n} {kind} prompts" for n, kind in ((result["n_images"], "image"), (result["n_videos"], "video")) if n]
    ax.set_title(f"{symbol} sweep on {' and '.join(counts)} (seed {result['seed']})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
