"""Which way do a CompBench run's single-object "moving" videos travel? For each, the tracked object's velocity
along the captioned direction and across it (fractions of the side per frame, fitted over the frames), so one
can tell a model that moves at the wrong heading from one that does not move, or moves at the wrong speed (the
checker's `direction` needs all of heading, speed band and a straight line).

The same question for the run's relation images whose two objects are drawn right: are they on the captioned
axis (left/right against above/below), and on the captioned side of each other? A model that reads the axis
word but not its sign gets the axis right and the side at chance.

    python research/travel_heading.py EVAL_DIR [EVAL_DIR ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.data.shapes import parse_caption  # noqa: E402
from gentron.evaluation.checker import _assignments, _track, along_across, detect, relation_holds, velocity  # noqa: E402
from gentron.export import read_video  # noqa: E402

STILL = 0.005  # |velocity along| below this (a third of the slowest band's floor) counts as not travelling


def headings(run: Path) -> list[tuple[str, float, float, bool] | tuple[str, None, None, bool]]:
    """(prompt, along, across, checker's direction) for each single-object moving video of the run."""
    rows = []
    for r in json.loads((run / "results.json").read_text())["results"]:
        if r["kind"] != "video_single" or " moving " not in f" {r['prompt']} ":
            continue
        frames = read_video(r["path"])
        spec, size = parse_caption(r["prompt"]), frames.shape[2]
        track = _track(spec.objects, [detect(f) for f in frames], size)[0]
        if any(d is None for d in track):
            rows.append((r["prompt"], None, None, False))
            continue
        along, across = along_across(velocity(track, size), spec.objects[0].motion.split()[1])
        rows.append((r["prompt"], along, across, bool(r["check"]["direction"])))
    return rows


def relation_sides(run: Path) -> dict[str, int]:
    """Relation images with both objects right: counts of 'captioned side', 'other side', 'other axis' and
    'not two objects' (a third object, or one merged away)."""
    tally = dict.fromkeys(("captioned side", "other side", "other axis", "not two objects"), 0)
    for r in json.loads((run / "results.json").read_text())["results"]:
        if r["kind"] != "relation" or not r["check"]["attribute"]:
            continue
        spec, image = parse_caption(r["prompt"]), np.asarray(Image.open(r["path"]).convert("RGB"))
        dets = detect(image)
        if len(dets) != 2:
            tally["not two objects"] += 1
            continue
        a, b = next(_assignments(spec.objects, dets, image.shape[0]))
        horizontal = abs(b.cx - a.cx) > abs(b.cy - a.cy)
        if horizontal != (spec.relation in ("to the left of", "to the right of")):
            tally["other axis"] += 1
        else:
            tally["captioned side" if relation_holds(spec.relation, a, b) else "other side"] += 1
    return tally


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="CompBench output folders (with results.json)")
    p.add_argument("--verbose", action="store_true", help="one line per video")
    args = p.parse_args()
    for run in args.runs:
        rows = headings(run)
        tracked = [r for r in rows if r[1] is not None]
        print(f"{run}: {len(rows)} moving videos, {len(tracked)} tracked; captioned way "
              f"{sum(a > STILL for _, a, _, _ in tracked)}, opposite way {sum(a < -STILL for _, a, _, _ in tracked)}, "
              f"hardly along it (|along| < {STILL}) {sum(abs(a) <= STILL for _, a, _, _ in tracked)}; "
              f"checker's direction {sum(ok for *_, ok in rows)}")
        for prompt, along, across, ok in rows if args.verbose else []:
            print(f"  {prompt:48s}", "untracked" if along is None else
                  f"along {along:+.4f} across {across:.4f}{'  direction ok' if ok else ''}")
        sides = relation_sides(run)
        print(f"{run}: {sum(sides.values())} relation images with both objects right: "
              + ", ".join(f"{k} {v}" for k, v in sides.items()))


if __name__ == "__main__":
    main()
