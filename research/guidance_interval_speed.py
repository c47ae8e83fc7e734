"""What a guidance interval saves end to end: the built-in model (bf16, 25 steps) guided at every step against
intervals that leave the noisiest steps unguided (one branch instead of two or three), alternated, medians.

    python research/guidance_interval_speed.py --intervals 0,1000 0,900 0,800 --runs 8
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.loading import load_pipeline  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--intervals", nargs="+", default=["0,1000", "0,900", "0,800"])
    p.add_argument("--runs", type=int, default=8, help="alternated runs per interval; the first is warm-up")
    p.add_argument("--quantize", default="bf16")
    args = p.parse_args()
    pipe = load_pipeline(None, "cpu", args.quantize)
    arms = {iv: tuple(float(v) for v in iv.split(",")) for iv in args.intervals}
    for frames in (1, 8):
        seconds = {iv: [] for iv in arms}
        for run in range(args.runs):
            for iv, interval in arms.items():
                started = time.perf_counter()
                pipe("a red circle moving right", frames=frames, seed=run, guidance_interval=interval)
                seconds[iv].append(time.perf_counter() - started)
        for iv, s in seconds.items():
            s = sorted(s[1:])
            print(f"{'image' if frames == 1 else f'{frames}-frame video'}, guided at {iv}: median {s[len(s) // 2]:.3f} s")


if __name__ == "__main__":
    main()
