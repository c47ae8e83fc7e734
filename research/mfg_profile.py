"""Where a motion-free guidance step spends its time: the three branches in one batched forward against three
forwards of one branch each (bench section 3), op by op under torch.profiler, on the bench's random-weight model.

    python research/mfg_profile.py --preset S/2 --frames 16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.bench.measure import Models, Shape, guided_step, separate_step, step_inputs  # noqa: E402


def op_times(fn, runs: int) -> dict[str, float]:
    """Self CPU milliseconds per call of ``fn``, by op."""
    with torch.inference_mode():
        for _ in range(3):
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn()
    return {e.key: e.self_cpu_time_total / 1e3 / runs for e in prof.key_averages()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="S/2")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args()
    device, shape = torch.device("cpu"), Shape("video", args.resolution, args.frames)
    model = Models(device).for_shape(args.preset, shape)
    inp = step_inputs(model.cfg, shape, device)
    times = {name: op_times(fn(model, shape, inp), args.runs)
             for name, fn in (("batched", guided_step), ("separate", separate_step))}
    ops = sorted(set(times["batched"]) | set(times["separate"]),
                 key=lambda k: -max(times["batched"].get(k, 0), times["separate"].get(k, 0)))
    print(f"{args.preset}, {args.resolution} px x {args.frames} frames, ms per step (self CPU time, {args.runs} runs)")
    print("| op | batched | separate |\n|---|---|---|")
    for k in ops[:args.top]:
        print(f"| {k} | {times['batched'].get(k, 0):.1f} | {times['separate'].get(k, 0):.1f} |")
    print(f"| all ops | {sum(times['batched'].values()):.1f} | {sum(times['separate'].values()):.1f} |")


if __name__ == "__main__":
    main()
