"""Which 25-step sampler lands nearer the exact sample? For a few prompts and seeds, the mean absolute pixel
difference (of 255) between DDIM and DPM-Solver++ at 25 and at 100 steps: both solve the same probability-flow
ODE, so at 100 steps they agree, and the one whose 25-step image is nearer its 100-step image is the more
accurate solver. (Accuracy is not what CompBench rewards: see docs/evaluation.md, "The sampler".)

    python research/sampler_convergence.py [--model PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.loading import load_pipeline  # noqa: E402

PROMPTS = [("three red circles", 11), ("a big red square below a big blue circle", 12), ("two yellow triangles", 13)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    for prompt, seed in PROMPTS:
        img = {(s, n): pipe(prompt, seed=seed, sampler=s, num_inference_steps=n).frames[0].astype(float)
               for s in ("ddim", "dpm++") for n in (25, 100)}

        def diff(a: tuple[str, int], b: tuple[str, int]) -> float:
            return float(np.abs(img[a] - img[b]).mean())

        print(f"{prompt:44s} ddim 25-100 {diff(('ddim', 25), ('ddim', 100)):5.2f}  dpm++ 25-100 "
              f"{diff(('dpm++', 25), ('dpm++', 100)):5.2f}  100 steps ddim-dpm++ {diff(('ddim', 100), ('dpm++', 100)):5.2f}")


if __name__ == "__main__":
    main()
