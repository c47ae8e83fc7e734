"""Two CompBench runs of the same prompts and seeds, compared prompt by prompt.

Every run of the suite with the same ``--seed`` draws the same prompts and noise, so two models (or two settings)
differ only in what they do with them: the difference of their pass rates is measured on paired prompts, and its
interval comes from the per-prompt differences, far narrower than two independent binomial intervals.

    python -m gentron.evaluation.paired runs/quant4_none runs/quant4_bnb4

prints, per category, the change in "correct" with its 95% interval and how many prompts were lost and won. More
pairs (base, other, base, other, ...), each of its own prompts, pool their prompts into one comparison:

    python -m gentron.evaluation.paired runs/quant8_none runs/quant8_bnb8 runs/quant9_none runs/quant9_bnb8

--check NAME compares another of the checker's pass/fail checks instead (e.g. objects_every_frame, direction).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def load_results(folder: Path, tag: str = "") -> dict[str, dict]:
    """A run's results by prompt id, each id prefixed with ``tag`` (so that pooled runs keep their prompts apart)."""
    return {tag + r["id"]: r for r in json.loads((Path(folder) / "results.json").read_text())["results"]}


def paired_gap(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a − b over paired samples, and its standard error."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples must be two non-empty lists of one length, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    return mean, math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1) / len(diffs))


def paired(base: dict[str, dict], other: dict[str, dict], category: str, check: str = "correct") -> dict[str, float]:
    """Difference in percentage points of passing ``check`` (other − base) over the prompts both runs have
    (those of the category that the check applies to), with its 95% interval and the prompts lost and won."""
    ids = [i for i, r in base.items() if r["check"]["kind"] == category and i in other
           and r["check"].get(check) is not None]
    if not ids:
        return {"n": 0}
    a = [bool(base[i]["check"][check]) for i in ids]
    b = [bool(other[i]["check"][check]) for i in ids]
    lost = sum(x and not y for x, y in zip(a, b))
    won = sum(y and not x for x, y in zip(a, b))
    n = len(ids)
    diff = (won - lost) / n
    se = math.sqrt(max(lost + won - (won - lost) ** 2 / n, 0.0)) / n  # SD of per-prompt differences / sqrt(n)
    return {"n": n, "base": 100 * sum(a) / n, "other": 100 * sum(b) / n, "diff": 100 * diff,
            "ci95": 196 * se, "lost": lost, "won": won}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gentron.evaluation.paired", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="base other [base other ...]: CompBench output folders")
    p.add_argument("--check", default="correct", help="which pass/fail check to compare (default: correct)")
    args = p.parse_args(argv)
    if len(args.runs) % 2:
        p.error(f"give runs in pairs (base other ...), got {len(args.runs)} folders")
    base, other = {}, {}
    for k in range(0, len(args.runs), 2):
        base.update(load_results(args.runs[k], f"{k // 2}:"))
        other.update(load_results(args.runs[k + 1], f"{k // 2}:"))
    names = [" + ".join(r.name for r in args.runs[start::2]) for start in (0, 1)]
    categories = sorted({r["check"]["kind"] for r in base.values()})
    if args.check != "correct":
        print(f"{args.check}:")
    print(f"| category | n | {names[0]} | {names[1]} | change (95%) | lost | won |")
    print("|---|---|---|---|---|---|---|")
    for c in categories:
        r = paired(base, other, c, args.check)
        if r["n"]:
            print(f"| {c} | {r['n']} | {r['base']:.0f} | {r['other']:.0f} | {r['diff']:+.0f} ± {r['ci95']:.0f} | "
                  f"{r['lost']} | {r['won']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
