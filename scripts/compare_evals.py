"""Two CompBench runs of the same prompts and seeds (e.g. two --quantize modes), compared prompt by prompt:
per category, the change in "correct" with its 95% interval from the paired differences, and how many
prompts were lost and won. Paired, because both runs drew the same prompts and noise.

    python scripts/compare_evals.py runs/quant4_none runs/quant4_bnb4

More pairs (base, other, base, other, ...), each of its own prompts, pool their prompts into one comparison:

    python scripts/compare_evals.py runs/quant8_none runs/quant8_bnb8 runs/quant9_none runs/quant9_bnb8

--check NAME compares another of the checker's pass/fail checks instead (e.g. objects_every_frame, direction).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def load(folder: Path, tag: str = "") -> dict[str, dict]:
    """A run's results by prompt id, each id prefixed with ``tag`` (so that pooled runs keep their prompts apart)."""
    return {tag + r["id"]: r for r in json.loads((folder / "results.json").read_text())["results"]}


def paired(base: dict[str, dict], other: dict[str, dict], category: str, check: str = "correct") -> dict[str, float]:
    """Difference in percentage points of passing ``check`` (other - base) over the prompts both runs have
    (those of the category that the check applies to)."""
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="base other [base other ...]: CompBench output folders")
    p.add_argument("--check", default="correct", help="which pass/fail check to compare (default: correct)")
    args = p.parse_args()
    if len(args.runs) % 2:
        p.error(f"give runs in pairs (base other ...), got {len(args.runs)} folders")
    base, other = {}, {}
    for k in range(0, len(args.runs), 2):
        base.update(load(args.runs[k], f"{k // 2}:"))
        other.update(load(args.runs[k + 1], f"{k // 2}:"))
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


if __name__ == "__main__":
    main()
