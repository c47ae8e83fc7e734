"""Which scaled_dot_product_attention kernel to use on the CPU: MATH against the default (flash) one.

Times S/2 in bf16 for sampling (an image step with CFG's 2 branches, an 8-frame video step with MFG's 3)
and for training (forward + backward under bf16 autocast, batch 16): medians of 7 (5 for training), measured
in alternating rounds (math, default, math, default, ...) so that drift in the machine's speed hits both.
gentron/layers.py picks from these numbers.

    python research/sdpa_kernels.py [--threads 2]
"""
import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
import gentron.layers as layers  # noqa: E402
from gentron.bench import Shape, stacked_inputs, step_inputs  # noqa: E402
from gentron.model import GenTronTransformer  # noqa: E402

KERNELS = {"math": lambda backend: sdpa_kernel(SDPBackend.MATH), "default": lambda backend: contextlib.nullcontext()}


def median_ms(fn, n: int = 7) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2] * 1e3


def report(what: str, fn, rounds: int, n: int) -> None:
    """Each kernel's median per round, alternating, then the median over rounds."""
    times: dict[str, list[float]] = {name: [] for name in KERNELS}
    for _ in range(rounds):
        for name, kernel in KERNELS.items():
            layers.sdpa_kernel = kernel  # the layer's own choice is replaced by the one under test
            with torch.inference_mode() if what.startswith("sampling") else contextlib.nullcontext():
                times[name].append(median_ms(fn, n))
    print(what + ": " + ", ".join(f"{name} {sorted(v)[len(v) // 2]:.1f} ms (rounds {', '.join(f'{x:.0f}' for x in v)})"
                                  for name, v in times.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for kind, frames in (("image", 1), ("video", 8)):
        shape = Shape(kind, 64, frames)
        model = GenTronTransformer.from_preset("S/2", temporal=kind == "video").to(torch.bfloat16).eval()
        x, t, text, mask = stacked_inputs(step_inputs(model.cfg, shape, torch.device("cpu")), shape)
        motion = torch.ones(x.shape[0], dtype=torch.bool)
        report(f"sampling {kind}", lambda: model(x, t, text, mask, motion), args.rounds, 7)
    model = GenTronTransformer.from_preset("S/2").train()
    b = 16
    x, t = torch.randn(b, 4, 1, 16, 16), torch.randint(0, 1000, (b,))
    text, mask = torch.randn(b, 20, 256), torch.arange(20).expand(b, 20) < 15

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16):
            out = model(x, t, text, mask)
        out.float().pow(2).mean().backward()

    report(f"training batch {b}", step, args.rounds, 5)


if __name__ == "__main__":
    main()
