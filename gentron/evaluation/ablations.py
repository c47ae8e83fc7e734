"""The paper's ablations at our scale: collect the runs of ``scripts/run_ablations.sh`` into one report.

Each run is ``ROOT/NAME`` (trained from ``configs/ablations/NAME.yaml``) with its CompBench results in
``eval*/results.json`` and its held-out denoising loss in ``loss/loss.json``. The report puts each
ablation's variants side by side with the paper's claim, a standard error on every number (prompts are
a sample, so small gaps are noise), the final training loss and a bar plot, and says on both measures
whether our result agrees with the paper, disagrees, or cannot tell.

    python -m gentron.evaluation.ablations runs/ablations --out docs/ablations.md
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .compbench import IMAGE_CATEGORIES, VIDEO_CATEGORIES
from .paired import paired_gap

# the image score: T2I-CompBench averages its sub-categories; ours are each category's checks
IMAGE_CHECKS = {"single": ("correct", "attribute", "colour", "shape"),
                "relation": ("correct", "attribute", "spatial", "colour", "shape"),
                "count": ("correct", "attribute", "colour", "shape")}
IMAGE_COLUMNS = ("correct", "attribute", "colour", "shape")  # each averaged over the three categories
VIDEO_CHECKS = ("objects_every_frame", "attribute", "temporal_consistency", "direction", "correct")


@dataclass(frozen=True)
class Variant:
    label: str
    run: str  # folder under the root
    eval: str = "eval"  # its results folder inside the run


@dataclass(frozen=True)
class Ablation:
    title: str
    paper: str  # what the paper claims, with its numbers
    variants: tuple[Variant, ...]
    expected_best: str  # the label the paper says wins
    video: bool = False


ABLATIONS = (
    Ablation("Text conditioning", "cross-attention beats adaLN-Zero for free text: T2I-CompBench average 47.84 vs "
             "34.32", (Variant("adaLN-Zero", "t2i_adaln_clip_t5"),
                                 Variant("cross-attention", "t2i_cross_clip_t5")), "cross-attention"),
    Ablation("Text encoder", "CLIP and T5-XXL together (CLIP-T5XXL) is the best text encoder",
             (Variant("CLIP", "t2i_cross_clip"), Variant("T5", "t2i_cross_t5"),
              Variant("CLIP+T5", "t2i_cross_clip_t5")), "CLIP+T5"),
    Ablation("Scale", "the bigger model binds better (GenTron-G/2 above XL/2)",
             (Variant("XS/2", "t2i_cross_clip_t5_xs"), Variant("S/2", "t2i_cross_clip_t5")), "S/2"),
    Ablation("Motion-free guidance", "joint image-video training with motion-free guidance keeps frames as good as "
             "images, and λM sets how much things move",
             (Variant("videos only, CFG (λM 1)", "t2v_videos_only"),
              Variant("p_motion_free 0.3, λM 1", "t2v_motion_free"),
              Variant("p_motion_free 0.3, MFG λM 1.3", "t2v_motion_free", "eval_lm1.3")),
             "p_motion_free 0.3, MFG λM 1.3", video=True),
)


def standard_error(percent: float, n: int) -> float:
    """Binomial standard error of a percentage measured on n prompts."""
    p = percent / 100
    return 100 * math.sqrt(max(p * (1 - p), 0.25 / n) / n)  # floor: 0% on 40 prompts is not certainty


def load_variant(root: Path, v: Variant, video: bool) -> dict | None:
    """Scores of one variant, or None if it has not been run yet."""
    results = root / v.run / v.eval / "results.json"
    if not results.is_file():
        return None
    table = json.loads(results.read_text())["table"]
    row: dict = {"label": v.label, "run": v.run, "eval": v.eval}
    if video:
        rows = [table[k] for k in VIDEO_CATEGORIES if k in table]
        n = sum(r["n"] for r in rows)
        for key in VIDEO_CHECKS:
            row[key] = sum(r[key] * r["n"] for r in rows) / n
        row["dynamic_degree"] = sum(r["dynamic_degree"] * r["n"] for r in rows) / n
        row["score"] = (row["objects_every_frame"] + row["direction"]) / 2  # per-frame quality and motion, as the paper
        checks = 2 * n
    else:
        cells = [table[k][c] for k in IMAGE_CATEGORIES if k in table for c in IMAGE_CHECKS[k]]
        for c in IMAGE_COLUMNS:
            row[c] = sum(table[k][c] for k in IMAGE_CATEGORIES if k in table) / len(table)
        row["spatial"] = table["relation"]["spatial"] if "relation" in table else float("nan")
        row["score"] = sum(cells) / len(cells)
        n = sum(table[k]["n"] for k in IMAGE_CATEGORIES if k in table)
        checks = n  # each prompt counts once in the average's spread (its checks are correlated)
    row["n"] = n
    row["se"] = standard_error(row["score"], checks)
    row.update(_training(root / v.run))
    loss = root / v.run / "loss" / "loss.json"
    if loss.is_file():
        held = json.loads(loss.read_text()).get("videos" if video else "images")
        if held:
            row.update(heldout=held["loss"], heldout_se=held["loss_se"], text_gain=100 * held["text_gain"],
                       per_sample=held["per_sample"]["loss"])
    return row


def _training(run: Path) -> dict:
    """Final training loss (mean of the last five log lines), steps, seconds and parameter count."""
    out: dict = {}
    log = run / "loss.jsonl"
    if log.is_file():
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        if lines:
            tail = lines[-5:]
            out.update(loss=sum(x["loss"] for x in tail) / len(tail), steps=lines[-1]["step"],
                       seconds=lines[-1]["seconds"])
    cfg = run / "final" / "transformer" / "config.json"
    if cfg.is_file():
        from ..model import GenTronTransformer

        model = GenTronTransformer.from_config(json.loads(cfg.read_text()))
        out["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    return out


def add_paired_gaps(ablation: Ablation, rows: list[dict]) -> None:
    """Each row's held-out loss minus the paper's winner's, paired sample by sample (the plot's lower row)."""
    best = next((r for r in rows if r["label"] == ablation.expected_best and "per_sample" in r), None)
    for r in rows:
        if best is not None and "per_sample" in r:
            r["vs_best"], r["vs_best_se"] = paired_gap(r["per_sample"], best["per_sample"])


def loss_verdict(ablation: Ablation, rows: list[dict]) -> str:
    """The same question on the held-out loss (lower is better), with the paired standard error of the
    difference: every model saw the same samples, noise and timesteps."""
    if len(rows) < len(ablation.variants) or any("per_sample" not in r for r in rows):
        return "not measured yet"
    best = next(r for r in rows if r["label"] == ablation.expected_best)
    rival = min((r for r in rows if r is not best and r["run"] != best["run"]), key=lambda r: r["heldout"],
                default=None)
    if rival is None:  # variants that differ only in sampling share one trained model and one loss
        return "the same model: sampling settings do not change the loss"
    mean, se = paired_gap(rival["per_sample"], best["per_sample"])
    head = f"{ablation.expected_best} {best['heldout']:.5f} vs {rival['label']} {rival['heldout']:.5f}"
    if abs(mean) < 2 * se:
        return f"within noise: {head} (paired gap {mean:+.5f}, two standard errors {2 * se:.5f})"
    word = "agrees with" if mean > 0 else "disagrees with"
    return f"{word} the paper: {head} (paired gap {mean:+.5f}, two standard errors {2 * se:.5f})"


def verdict(ablation: Ablation, rows: list[dict]) -> str:
    """Agrees / disagrees / within noise, by the headline score against the runner-up."""
    if len(rows) < len(ablation.variants):
        return "not run yet"
    best = next(r for r in rows if r["label"] == ablation.expected_best)
    others = [r for r in rows if r is not best]
    rival = max(others, key=lambda r: r["score"])
    gap = best["score"] - rival["score"]
    noise = math.hypot(best["se"], rival["se"])
    if abs(gap) < 2 * noise:
        return (f"within noise: {ablation.expected_best} {best['score']:.1f} vs {rival['label']} {rival['score']:.1f} "
                f"(gap {gap:+.1f}, two standard errors {2 * noise:.1f})")
    word = "agrees with" if gap > 0 else "disagrees with"
    return (f"{word} the paper: {ablation.expected_best} {best['score']:.1f} vs {rival['label']} "
            f"{rival['score']:.1f} (gap {gap:+.1f}, two standard errors {2 * noise:.1f})")


def report(root: Path) -> tuple[str, list[tuple[Ablation, list[dict]]]]:
    """The markdown report and the loaded rows of every ablation."""
    loaded = []
    lines = ["# Ablations at our scale", "",
             "Produced by `bash scripts/run_ablations.sh` (configs in `configs/ablations/`, report by "
             "`python -m gentron.evaluation.ablations runs/ablations --out docs/ablations.md`). Same data stream, "
             "training budget and seeds within each ablation; judged by the Shapes World CompBench at its default "
             "settings (25 steps, λT 7.5). ± is one binomial standard error over the prompts.", ""]
    for ab in ABLATIONS:
        rows = [r for r in (load_variant(root, v, ab.video) for v in ab.variants) if r is not None]
        add_paired_gaps(ab, rows)
        loaded.append((ab, rows))
        lines += [f"## {ab.title}", "", f"Paper: {ab.paper}.", "",
                  f"**Ours, CompBench: {verdict(ab, rows)}.**", "",
                  f"**Ours, held-out loss: {loss_verdict(ab, rows)}.**", ""]
        if not rows:
            continue
        cols = (list(VIDEO_CHECKS) + ["dynamic_degree"]) if ab.video else list(IMAGE_COLUMNS) + ["spatial"]
        head = ["variant", "score ± se"] + cols + ["held-out loss ± se", "minus the winner's (paired) ± se",
                                                   "text gain %", "n", "params (M)", "final train loss", "steps",
                                                   "train s"]
        lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in rows:
            cells = [r["label"], f"{r['score']:.1f} ± {r['se']:.1f}"]
            cells += [f"{r[c]:.3f}" if c == "dynamic_degree" else f"{r[c]:.1f}" for c in cols]
            cells += [f"{r['heldout']:.5f} ± {r['heldout_se']:.5f}" if "heldout" in r else "–",
                      f"{r['vs_best']:+.5f} ± {r['vs_best_se']:.5f}" if "vs_best" in r else "–",
                      f"{r['text_gain']:.1f}" if "text_gain" in r else "–"]
            cells += [str(r["n"]), f"{r.get('params_m', float('nan')):.1f}", f"{r.get('loss', float('nan')):.4f}",
                      str(r.get("steps", "–")), f"{r.get('seconds', float('nan')):.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        score = "mean of objects right in every frame and direction" if ab.video else \
            ("mean of the image checks (single, relation, count: correct, attribute, colour alone, shape alone; "
             "relation: spatial); the columns average each check over the three categories")
        lines += ["", f"Score: {score}. Held-out loss: `python -m gentron eval --suite loss` (epsilon MSE on "
                  "held-out captions, the same samples, noise and timesteps for every model; text gain = the share "
                  "of it the caption removes). Evaluated from `<run>/loss/loss.json` and `<run>/<eval>/results.json` "
                  f"under `{root}`: "
                  + ", ".join(f"{r['label']} = `{r['run']}/{r['eval']}`" for r in rows) + ".", ""]
    return "\n".join(lines) + "\n", loaded


def plot(loaded: list[tuple[Ablation, list[dict]]], path: Path) -> None:
    """Two rows of bars per ablation: the CompBench score, and the held-out loss as a paired difference from the
    paper's winner (the losses' own spreads are 10x the gaps, but every model saw the same samples); ±1 se."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(loaded), figsize=(4.2 * len(loaded), 6.6), dpi=110, squeeze=False)
    for col, (ab, rows) in enumerate(loaded):
        labels = [r["label"].replace(", ", "\n") for r in rows]
        colours = ["tab:green" if r["label"] == ab.expected_best else "tab:gray" for r in rows]
        for row, (key, err, name) in enumerate((("score", "se", "CompBench score (%)"),
                                                ("vs_best", "vs_best_se", "held-out loss minus the\n"
                                                 "green one's, paired (lower is better)"))):
            ax = axes[row][col]
            have = [r for r in rows if key in r]
            ax.bar(range(len(have)), [r[key] for r in have], yerr=[r[err] for r in have], capsize=4,
                   color=[c for c, r in zip(colours, rows) if key in r])
            ax.set_xticks(range(len(have)), [lab for lab, r in zip(labels, rows) if key in r], fontsize=7)
            if key == "vs_best":
                ax.axhline(0, color="black", linewidth=0.6)
            ax.set_title(ab.title if row == 0 else "", fontsize=10)
            ax.set_ylabel(name if col == 0 else "", fontsize=8)
    fig.suptitle("Ablations on Shapes World (green: the paper's winner; bars: ±1 standard error)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gentron.evaluation.ablations", description=__doc__)
    parser.add_argument("root", help="the folder of the ablation runs (runs/ablations)")
    parser.add_argument("--out", default="docs/ablations.md", help="markdown report; the plot goes beside it")
    args = parser.parse_args(argv)
    text, loaded = report(Path(args.root))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(loaded, png)
    title = "# Ablations at our scale\n"
    out.write_text(text.replace(title, f"{title}\n![ablations]({png.name})\n", 1))
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
