"""A Shapes World CompBench: T2I-CompBench's categories, checked by a program instead of a VLM.

Prompts are drawn from the grammar by a seed, generated with the CLI's batch generation (one loaded
pipeline), written to disk as PNG / MP4 and read back, then judged by ``checker.check``:
- images: single object (colour and shape), relation (both objects bound and the relation right),
  count (exactly that many of that colour and shape);
- videos: direction (each object moves as captioned), objects right in every frame, temporal
  consistency, and the dynamic degree (mean frame-to-frame change).

    python -m gentron eval --model PATH --suite compbench [--n-images 200] [--n-videos 100] [--seed 0]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..jobs import GenerationSettings
from ..data.shapes import caption_text, sample_caption
from .checker import check

IMAGE_CATEGORIES = ("single", "relation", "count")
VIDEO_CATEGORIES = ("video_single", "video_pair")


def draw_prompts(n_images: int, n_videos: int, seed: int = 0, split: str = "all") -> list[dict]:
    """Prompts balanced over the caption kinds, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    jobs = []
    for kinds, n, video in ((IMAGE_CATEGORIES, n_images, False), (VIDEO_CATEGORIES, n_videos, True)):
        for i in range(n):
            kind = kinds[i % len(kinds)]
            spec = sample_caption(rng, video, split)
            while spec.kind != kind:
                spec = sample_caption(rng, video, split)
            jobs.append({"id": f"{'v' if video else 'i'}{i:04d}", "prompt": caption_text(spec), "kind": kind,
                         "frames": 8 if video else 1, "seed": int(rng.integers(0, 2**32 - 1))})
    return jobs


def summarise(results: list[dict]) -> dict[str, dict[str, float]]:
    """Per category: the share of prompts passing each check (and the mean dynamic degree)."""
    table: dict[str, dict[str, float]] = {}
    for kind in IMAGE_CATEGORIES + VIDEO_CATEGORIES:
        rows = [r for r in results if r["kind"] == kind]
        if not rows:
            continue
        keys = ["correct", "attribute"] + (["spatial"] if kind == "relation" else []) + (
            ["colour", "shape"] if kind in IMAGE_CATEGORIES and "colour" in rows[0]["check"] else []) + (
            ["direction", "objects_every_frame", "temporal_consistency"] if kind.startswith("video") else [])
        stats = {k: 100.0 * float(np.mean([bool(r["check"][k]) for r in rows])) for k in keys}
        stats["dynamic_degree"] = float(np.mean([r["check"]["dynamic_degree"] for r in rows]))
        stats["n"] = len(rows)
        table[kind] = stats
    return table


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    cols = ["n", "correct", "attribute", "colour", "shape", "spatial", "direction", "objects_every_frame",
            "temporal_consistency", "dynamic_degree"]
    lines = ["| category | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for kind, stats in table.items():
        cells = [("%d" % stats[c]) if c == "n" else ("%.3f" % stats[c]) if c == "dynamic_degree" else
                 ("%.1f" % stats[c]) if c in stats else "–" for c in cols]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_compbench(pipe, out_dir: Path, gen_args: GenerationSettings, n_images: int = 200, n_videos: int = 100,
                  seed: int = 0, split: str = "all") -> dict:
    """Generate the suite with ``pipe``, check every result, write results.json and table.md."""
    from ..jobs import run_jobs
    from ..export import read_video

    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = draw_prompts(n_images, n_videos, seed, split)
    for job in jobs:
        job["out"] = str(out_dir / f"{job['id']}.{'png' if job['frames'] == 1 else 'mp4'}")
    results = []
    for job, line in zip(jobs, run_jobs(pipe, jobs, gen_args)):
        frames = read_video(line["path"])  # judged from the written file, as a user would get it
        results.append({**{k: job[k] for k in ("id", "prompt", "kind", "seed")}, "path": line["path"],
                        "seconds": line["seconds"], "check": check(job["prompt"], frames)})
    table = summarise(results)
    summary = {"suite": "compbench", "seed": seed, "split": split, "n_images": n_images, "n_videos": n_videos,
               "settings": {k: getattr(gen_args.resolved(pipe), k) for k in (
                   "steps", "text_guidance", "motion_guidance", "scheduler", "guidance_interval", "eta", "quantize",
                   "quantize_text", "model")},
               "table": table, "results": results}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1, default=bool))
    (out_dir / "table.md").write_text(markdown_table(table) + "\n")
    return summary
