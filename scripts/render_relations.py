"""Render Shapes World relation images ("A to the left of B", "A above B", ...) from the training split into a
folder of PNGs with same-name .txt captions: a data folder for the trainer (cache it with
``python -m gentron.data.folders cache``). Used for the rotary-positions A/B on the CPU (docs/training.md).

    python scripts/render_relations.py --out runs/rel_data --n 20000
    python scripts/render_relations.py --out runs/side_data --n 8000 --colours red,blue --shapes circle \
        --relations "to the left of,to the right of"     # a toy: the caption sets nothing but which side is red
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.data import shapes  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=77)
    p.add_argument("--colours", default=None, help="comma-separated: only these, two different ones per image")
    p.add_argument("--shapes", default=None, help="comma-separated: only these")
    p.add_argument("--relations", default=None, help="comma-separated: only these")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng, i = np.random.default_rng(args.seed), 0
    narrowed = args.colours or args.shapes or args.relations
    colours = args.colours.split(",") if args.colours else list(shapes.COLOURS)
    kinds = args.shapes.split(",") if args.shapes else list(shapes.SHAPES)
    relations = args.relations.split(",") if args.relations else list(shapes.RELATIONS)
    while i < args.n:
        if narrowed:  # every object in plain words (no size), drawn from the lists
            first, second = rng.choice(colours, 2, replace=False)
            spec = shapes.CaptionSpec("relation", (shapes.ObjectSpec(str(first), str(rng.choice(kinds))),
                                                   shapes.ObjectSpec(str(second), str(rng.choice(kinds)))),
                                      relation=str(rng.choice(relations)))
        else:
            spec = shapes.sample_caption(rng, video=False, split="train")
        if spec.kind != "relation":
            continue
        Image.fromarray(shapes.render(spec, args.size, 1, rng)[0]).save(args.out / f"{i:05d}.png")
        (args.out / f"{i:05d}.txt").write_text(shapes.caption_text(spec))
        i += 1
    print(f"{args.n} relation images in {args.out}")


if __name__ == "__main__":
    main()
