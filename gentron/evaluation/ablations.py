"""The paper's claims at our scale: collect the runs of ``scripts/run_ablations.sh`` into one report.

Each arm is ``ROOT/NAME`` (trained from ``configs/ablations/NAME.yaml``) with its CompBench results in
``eval*/results.json``, its held-out loss in ``loss/loss.json``, its training log in ``loss.jsonl`` and, for the
motion-guidance curve, ``sweep_motion/``. Every arm of a claim is judged on the same prompts and seeds, so two arms
are compared prompt by prompt: a verdict is the paired gap with its 95% interval, and where the interval holds zero
the report says how many prompts would decide a gap that size.

    python -m gentron.evaluation.ablations collect runs/ablations docs/ablations   # the small JSON files only
    python -m gentron.evaluation.ablations report docs/ablations --out docs/ablations.md
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from .compbench import IMAGE_CATEGORIES, VIDEO_CATEGORIES
from .paired import paired_gap

Z95 = 1.96
COLLECTED = ("loss.jsonl", "config.yaml", "final/transformer/config.json", "loss/loss.json",
             "eval*/results.json", "sweep_motion/sweep.json", "sweep_motion/*/results.json")


@dataclass(frozen=True)
class Variant:
    label: str
    run: str  # folder under the root
    eval: str = "eval"  # its results folder inside the run


@dataclass(frozen=True)
class Ablation:
    title: str
    claim: str  # what is claimed and by whom, with its numbers
    variants: tuple[Variant, ...]
    expected_best: str  # the label the claim says wins
    checks: tuple[tuple[str, tuple[str, ...]], ...]  # (category, its checks): a prompt's score is their mean
    measure: str  # what the score is, in words


IMAGES = tuple((kind, ("correct",)) for kind in IMAGE_CATEGORIES)  # every image category, by its full check
IMAGES_RIGHT = "images right (single, relation, count)"
REF = "t2i_ref"  # the reference arm: cross-attention on CLIP+T5 at XS/2, shift 8; every other T2I arm differs from
#   it in one field
ABLATIONS = (
    Ablation("Text conditioning", "Paper: cross-attention beats adaLN-Zero for free text (T2I-CompBench average "
             "47.84 vs 34.32)", (Variant("adaLN-Zero", "t2i_adaln"), Variant("cross-attention", REF)),
             "cross-attention", IMAGES, IMAGES_RIGHT),
    Ablation("Text encoder", "Paper: CLIP and T5-XXL together beat either alone",
             (Variant("CLIP", "t2i_clip"), Variant("T5", "t2i_t5"), Variant("CLIP+T5", REF)), "CLIP+T5", IMAGES,
             IMAGES_RIGHT),
    Ablation("Scale", "Paper: the bigger model binds better (G/2 above XL/2)",
             (Variant("XS/2", REF), Variant("S/2", "t2i_s"), Variant("S/2, 12 blocks", "t2i_s_deep")), "S/2, 12 blocks",
             IMAGES, IMAGES_RIGHT),
    Ablation("Motion-free guidance", "Paper: joint image-video training with motion-free guidance keeps the frames "
             "as good as video-only training does",
             (Variant("videos only, λM 1", "t2v_videos_only"), Variant("joint, p_motion_free 0.2, λM 1", "t2v_ref"),
              Variant("joint, p_motion_free 0.2, MFG λM 1.3", "t2v_ref", "eval_lm1.3")),
             "joint, p_motion_free 0.2, MFG λM 1.3",
             (("video_single", ("objects_every_frame",)), ("video_pair", ("objects_every_frame",))),
             "videos with the captioned objects right in every frame"),
    Ablation("Pooled text beside cross-attention", "Toys: pooled text in adaLN is a multiplicative path from the "
             "words to every token, which a relation's layout may need",
             (Variant("cross-attention", REF), Variant("cross-attention + pooled text", "t2i_pooled")),
             "cross-attention + pooled text", (("relation", ("correct",)),), "relations right"),
    Ablation("Timestep shift, relations", "Toys: a shift toward noise reads the side (the side toy: 17 of 40 at "
             "shift 1, 40 of 40 at shift 8, docs/training.md)",
             (Variant("shift 1", "t2i_shift1"), Variant("shift 4", "t2i_shift4"), Variant("shift 8", REF)),
             "shift 8", (("relation", ("correct",)),), "relations right"),
    Ablation("Timestep shift, direction", "Toys: the shift and the frame positions read the direction of travel",
             (Variant("shift 1", "t2v_shift1"), Variant("shift 4", "t2v_shift4"), Variant("shift 8", "t2v_ref")),
             "shift 8", (("video_single", ("direction",)),), "single videos moving the captioned way"),
)


def prompt_scores(results: list[dict], checks: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, float]:
    """Each scored prompt's id -> the share (0-100) of its category's checks it passes."""
    by_kind = dict(checks)
    return {r["id"]: 100 * sum(bool(r["check"][c]) for c in by_kind[r["kind"]]) / len(by_kind[r["kind"]])
            for r in results if r["kind"] in by_kind}


def load_variant(root: Path, v: Variant, ab: Ablation) -> dict | None:
    """One arm's per-prompt scores, category table, held-out loss and training record, or None if not run yet."""
    path = root / v.run / v.eval / "results.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    scores = prompt_scores(summary["results"], ab.checks)
    row: dict = {"label": v.label, "run": v.run, "eval": v.eval, "scores": scores, "table": summary["table"],
                 "score": sum(scores.values()) / max(len(scores), 1), "n": len(scores)}
    row.update(_training(root / v.run))
    loss = root / v.run / "loss" / "loss.json"
    if loss.is_file():
        held = json.loads(loss.read_text()).get("videos" if ab.checks[0][0].startswith("video") else "images")
        if held:
            row.update(heldout=held["loss"], per_sample=held["per_sample"]["loss"])
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


def compare(best: dict, rival: dict, key: str = "scores") -> dict:
    """best − rival over the samples both have, paired: the gap, its 95% interval and the sample count."""
    if key == "scores":
        ids = sorted(set(best[key]) & set(rival[key]))
        a, b = [best[key][i] for i in ids], [rival[key][i] for i in ids]
    else:  # held-out losses: every arm saw the same samples in the same order; lower is better
        a, b = rival[key], best[key]
    gap, se = paired_gap(a, b)
    return {"gap": gap, "ci95": Z95 * se, "n": len(a)}


def decide(gap: float, ci95: float, n: int) -> tuple[str, str]:
    """(agrees | disagrees | cannot tell, what would decide it) for the claimed winner's paired gap."""
    if gap > ci95:
        return "agrees", ""
    if gap < -ci95:
        return "disagrees", ""
    if gap == 0:
        return "cannot tell", "no gap on these prompts"
    need = math.ceil(n * (ci95 / abs(gap)) ** 2)
    return "cannot tell", f"a gap this size needs about {need} prompts to decide"


def verdict(ab: Ablation, rows: list[dict], key: str = "scores") -> dict:
    """The claimed winner against each rival, paired; the verdict is against the closest rival (a disagreement
    with any rival beyond its interval is a disagreement)."""
    if len(rows) < len(ab.variants) or (key != "scores" and any(key not in r for r in rows)):
        return {"verdict": "not run yet"}
    best = next(r for r in rows if r["label"] == ab.expected_best)
    rivals = [r for r in rows if r is not best and (key == "scores" or r["run"] != best["run"])]
    if not rivals:
        return {"verdict": "the same model: sampling settings do not change the loss"}
    gaps = [(r, compare(best, r, key)) for r in rivals]
    beaten_by = [x for x in gaps if x[1]["gap"] < -x[1]["ci95"]]
    rival, g = (min(beaten_by, key=lambda x: x[1]["gap"]) if beaten_by
                else min(gaps, key=lambda x: x[1]["gap"] - x[1]["ci95"]))  # the rival least clearly beaten
    word, why = decide(g["gap"], g["ci95"], g["n"])
    return {"verdict": word, "why": why, "rival": rival["label"], **g}


def motion_curve(root: Path, run: str = "t2v_ref") -> dict | None:
    """Claim 5: how much the videos move against λM, and the paired change of that amount from λM 1 to each higher
    value (the dynamic degree of each prompt's video, the same prompt and noise at every λM)."""
    path = root / run / "sweep_motion" / "sweep.json"
    if not path.is_file():
        return None
    sweep = json.loads(path.read_text())
    per_value = {}
    for value in sweep["values"]:
        res = root / run / "sweep_motion" / f"motion_guidance_{value:g}" / "results.json"
        per_value[value] = {r["id"]: r["check"]["dynamic_degree"] for r in json.loads(res.read_text())["results"]}
    if 1.0 not in per_value or max(per_value) <= 1.0:
        raise ValueError(f"the motion curve needs λM 1 and a value above it, got {sweep['values']} in {path}")
    base, ids = per_value[1.0], sorted(per_value[1.0])
    steps = []
    for value in (v for v in sweep["values"] if v > 1.0):
        gap, se = paired_gap([per_value[value][i] for i in ids], [base[i] for i in ids])
        steps.append({"value": value, "gap": gap, "ci95": Z95 * se, "n": len(ids)})
    return {"sweep": sweep, "from_1": steps}


def report(root: Path) -> tuple[str, list[tuple[Ablation, list[dict]]], dict | None]:
    """The markdown report, the loaded rows of every ablation, and the motion curve."""
    loaded, summary, sections = [], [], []
    for ab in ABLATIONS:
        rows = [r for r in (load_variant(root, v, ab) for v in ab.variants) if r is not None]
        loaded.append((ab, rows))
        v, lv = verdict(ab, rows), verdict(ab, rows, "per_sample")
        numbers = ", ".join(f"{r['label']} {r['score']:.1f}" for r in rows) or "–"
        interval = f"{v['gap']:+.1f} ± {v['ci95']:.1f} against {v['rival']}" if "gap" in v else "–"
        summary.append(f"| {ab.title} | {ab.claim} | {numbers} | {interval} | {v['verdict']}"
                       + (f" ({v['why']})" if v.get("why") else "") + " |")
        counted = f", % of {rows[0]['n']} prompts" if rows else ""
        sections += [f"## {ab.title}", "", f"{ab.claim}. Score: {ab.measure}{counted}.", "",
                     f"**CompBench: {v['verdict']}**" + (f": {interval}" if "gap" in v else "")
                     + (f"; {v['why']}" if v.get("why") else "") + ".", "",
                     f"**Held-out loss: {lv['verdict']}**" + (f": {lv['gap']:+.5f} ± {lv['ci95']:.5f} against "
                                                             f"{lv['rival']}" if "gap" in lv else "") + ".", ""]
        if rows:
            cats = [k for k in IMAGE_CATEGORIES + VIDEO_CATEGORIES if k in rows[0]["table"]]
            head = ["arm", "score"] + [f"{k}: {c}" for k in cats for c in _shown(k)] + [
                "held-out loss", "params (M)", "steps", "train s"]
            sections += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            for r in rows:
                cells = [r["label"], f"{r['score']:.1f}"] + [f"{r['table'][k][c]:.1f}" for k in cats for c in _shown(k)]
                cells += [f"{r['heldout']:.5f}" if "heldout" in r else "–",
                          f"{r['params_m']:.1f}" if "params_m" in r else "–", str(r.get("steps", "–")),
                          f"{r['seconds']:.0f}" if "seconds" in r else "–"]
                sections.append("| " + " | ".join(cells) + " |")
            sections += ["", "From " + ", ".join(f"`{r['run']}/{r['eval']}`" for r in rows) + ".", ""]
    curve = motion_curve(root)
    head = ["# The paper's claims at our scale", "",
            "Produced by `bash scripts/run_ablations.sh` (arms in `configs/ablations/`; their results, collected into "
            f"`{root}`, give this page by `python -m gentron.evaluation.ablations report {root} --out "
            "docs/ablations.md`). The arms of a claim differ only in the claimed factor: the same data stream, seed, "
            "steps and objective (rectified flow). Every arm is judged on the same CompBench prompts and seeds; a gap "
            "is the claimed winner's score minus its closest rival's, paired prompt by prompt, with its 95% interval.",
            "", "| claim | said | arms | paired gap (95%) | verdict |", "|---|---|---|---|---|", *summary]
    if curve is not None:
        rises = "; ".join(f"λM {s['value']:g}: {s['gap']:+.4f} ± {s['ci95']:.4f}" for s in curve["from_1"])
        words = [decide(s["gap"], s["ci95"], s["n"])[0] for s in curve["from_1"]]
        word = "disagrees" if "disagrees" in words else "agrees" if set(words) == {"agrees"} else "cannot tell"
        head.append(f"| λM sets how much things move | Paper: more motion as λM grows from 1.0 to 1.3 and beyond | "
                    f"dynamic degree from λM 1: {rises} | paired, {curve['from_1'][0]['n']} videos | {word} |")
        from .sweep import sweep_table

        sections += ["## λM sets how much things move", "", "![motion curve](ablations_motion.png)", "",
                     sweep_table(curve["sweep"]), "", f"Dynamic degree against λM 1, paired per video: {rises}.", ""]
    else:
        head.append("| λM sets how much things move | Paper: more motion as λM grows from 1.0 to 1.3 and beyond "
                    "| – | – | not run yet |")
    return "\n".join(head + [""] + sections) + "\n", loaded, curve


def _shown(kind: str) -> tuple[str, ...]:
    return ("correct",) if kind in IMAGE_CATEGORIES else ("direction", "objects_every_frame")


def plot(loaded: list[tuple[Ablation, list[dict]]], path: Path) -> None:
    """One panel per claim: every arm's score, the claimed winner green; bars ± each arm's paired 95% interval
    against it (zero for the winner itself)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(loaded), figsize=(3.2 * len(loaded), 3.8), dpi=110, squeeze=False)
    for ax, (ab, rows) in zip(axes[0], loaded):
        best = next((r for r in rows if r["label"] == ab.expected_best), None)
        errs = [0.0 if best is None or r is best else compare(best, r)["ci95"] for r in rows]
        ax.bar(range(len(rows)), [r["score"] for r in rows], yerr=errs, capsize=4,
               color=["tab:green" if r is best else "tab:gray" for r in rows])
        ax.set_xticks(range(len(rows)), [r["label"].replace(", ", "\n") for r in rows], fontsize=6)
        ax.set_title(ab.title, fontsize=9)
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("% right")
    fig.suptitle("Claims on Shapes World (green: the claimed winner; bars: paired 95% interval against it)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def collect(runs: Path, out: Path) -> list[Path]:
    """Copy what the report reads (JSON and logs, no images or weights) from the arms under ``runs`` to ``out``."""
    copied = []
    for arm in sorted(p for p in runs.iterdir() if p.is_dir()):
        for pattern in COLLECTED:
            for src in arm.glob(pattern):
                dst = out / arm.name / src.relative_to(arm)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.name == "results.json":  # one line, without the local file paths: a third of the size
                    summary = json.loads(src.read_text())
                    for r in summary.get("results", []):
                        r.pop("path", None)
                    dst.write_text(json.dumps(summary, separators=(",", ":"), default=bool))
                else:
                    shutil.copyfile(src, dst)
                copied.append(dst)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gentron.evaluation.ablations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="copy the arms' results (JSON, logs) from RUNS into OUT")
    c.add_argument("runs", type=Path)
    c.add_argument("out", type=Path)
    r = sub.add_parser("report", help="write the report and its plots from collected results")
    r.add_argument("root", type=Path, help="the collected results (docs/ablations)")
    r.add_argument("--out", type=Path, default=Path("docs/ablations.md"), help="markdown; the plots go beside it")
    args = parser.parse_args(argv)
    if args.command == "collect":
        if not args.runs.is_dir():
            parser.error(f"no such folder of ablation runs: {args.runs}")
        print(json.dumps({"copied": len(collect(args.runs, args.out)), "out": str(args.out)}))
        return 0
    if not args.root.is_dir():
        parser.error(f"no such folder of collected results: {args.root}")
    text, loaded, curve = report(args.root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(loaded, args.out.with_suffix(".png"))
    if curve is not None:
        from .sweep import plot_sweep

        plot_sweep(curve["sweep"], args.out.parent / "ablations_motion.png")
    title = "# The paper's claims at our scale\n"
    args.out.write_text(text.replace(title, f"{title}\n![claims]({args.out.with_suffix('.png').name})\n", 1))
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
