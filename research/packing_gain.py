"""What packing linear weights for oneDNN buys on this CPU (gentron.packing): products of the transformer's shapes,
plain ``F.linear`` against the packed product, alternately timed; then the MLP's first product with its exact GELU,
as two calls against one fused call.

    python research/packing_gain.py            # bf16, the engine's default on this CPU
    python research/packing_gain.py --fp32
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.packing import PackedLinear  # noqa: E402

# (tokens, in, out): S/2 (width 256) and B/2 (width 768) linears at 64-256 px images and 8-frame videos
SHAPES = [(128, 256, 768), (512, 256, 1024), (2048, 256, 768), (2048, 1024, 256), (512, 768, 3072),
          (2048, 768, 2304), (4096, 3072, 768)]


def timed(fns: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median milliseconds per call of each function, the functions alternating round by round."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(rounds):
            for k, fn in fns.items():
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                out[k].append((time.perf_counter() - start) / calls * 1e3)
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=10)
    args = p.parse_args()
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    print(f"{dtype}, {torch.get_num_threads()} threads, medians of {args.rounds} rounds of {args.calls} calls")
    print("| tokens × in → out | plain ms | packed ms | packed / plain | + GELU: two calls ms | fused ms "
          "| fused / two |")
    print("|---|---|---|---|---|---|---|")
    for m, k, n in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(m, k, dtype=dtype)
        linear = torch.nn.Linear(k, n).to(dtype).requires_grad_(False)
        packed, fused = PackedLinear(linear), PackedLinear(linear, "gelu")
        t = timed({"plain": lambda: F.linear(x, linear.weight, linear.bias), "packed": lambda: packed(x),
                   "two": lambda: F.gelu(linear(x)), "fused": lambda: fused(x)}, args.rounds, args.calls)
        print(f"| {m} × {k} → {n} | {t['plain']:.3f} | {t['packed']:.3f} | {t['packed'] / t['plain']:.2f} | "
              f"{t['two']:.3f} | {t['fused']:.3f} | {t['fused'] / t['two']:.2f} |")


if __name__ == "__main__":
    main()
