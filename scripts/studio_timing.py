"""The app's engine alone: time to the first preview and to the written file, without the server or a browser.

    python scripts/studio_timing.py [--runs 3] [--frames 8] [--prompt "a red circle moving right"]

Loads the built-in model (or --model) as ``python app.py`` does, at the device's default precision, and runs
``Studio.generate`` --runs times; the README compares these with the browser test's click-to-preview times.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.studio import Studio  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--prompt", default="a red circle moving right")
    args = p.parse_args()
    studio = Studio(args.model, device="cpu")
    started = time.perf_counter()
    info = studio.info()  # loads the model, as the app does before it serves
    print(f"loaded {info.name} at {studio.precision} in {time.perf_counter() - started:.2f} s")
    for run in range(args.runs):
        started, first = time.perf_counter(), None
        for update in studio.generate(args.prompt, frames=args.frames, seed=0):
            if first is None and update.preview is not None:
                first = time.perf_counter() - started
        print(f"run {run + 1}: first preview {first:.2f} s, file written {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
