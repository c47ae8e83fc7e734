"""Is a 4096³ bf16 matmul a fair "peak" for the FLOP/s section? Times square matmuls of several sizes and
B/2-shaped linear layers (M tokens × 768 -> 3072) alternately, and prints median and best TFLOP/s.

    python research/matmul_shapes.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.bench import compare_seconds  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    fns, flops = {}, {}
    for n in (1024, 2048, 4096, 6144):
        a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
        fns[f"mm {n}³"], flops[f"mm {n}³"] = (lambda a=a, b=b: torch.mm(a, b)), 2 * n**3
    for m in (1536, 4096, 16384):
        x, lin = torch.randn(m, 768, dtype=torch.bfloat16), torch.nn.Linear(768, 3072).to(torch.bfloat16)
        fns[f"linear {m}×768→3072"], flops[f"linear {m}×768→3072"] = (lambda x=x, lin=lin: lin(x)), 2 * m * 768 * 3072
    res = compare_seconds(fns, repeats=9, warmup=2, device=torch.device("cpu"))
    for name, (median, times) in res.items():
        print(f"{name}: median {flops[name] / median / 1e12:.3f} TFLOP/s, best {flops[name] / min(times) / 1e12:.3f}")


if __name__ == "__main__":
    main()
