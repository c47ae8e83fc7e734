"""The fused adaLN's own gain: sampling steps with the shared timestep row (each block's shift and scale as the
LayerNorm's affine, ``gentron.layers.norm_modulate``) against the per-sample path, in one process, timed call by call
alternately as the bench does, on the bench's random-weight models (bf16, packed).

    python research/fused_adaln_ab.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
import gentron.model as model_module  # noqa: E402
from gentron.bench.measure import Models, Shape, compare_seconds, guided_step, step_inputs  # noqa: E402

CASES = [("S/2", Shape("image", 64, 1)), ("S/2", Shape("image", 256, 1)), ("S/2", Shape("video", 64, 8)),
         ("B/2", Shape("image", 64, 1)), ("B/2", Shape("image", 256, 1)), ("B/2", Shape("video", 64, 8))]


def main() -> None:
    shared_rows = model_module._table_rows

    def per_sample_rows(table: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, bool]:
        return shared_rows(table, timestep)[0], False  # as if the samples' timesteps differed: the two-pass path

    device, models = torch.device("cpu"), Models(torch.device("cpu"))
    for preset, shape in CASES:
        model = models.for_shape(preset, shape)
        step = guided_step(model, shape, step_inputs(model.cfg, shape, device))

        def with_rows(rows_fn):
            def run() -> None:
                model_module._table_rows = rows_fn
                step()
            return run

        repeats = 31 if shape.kind == "image" and shape.resolution == 64 else 11
        res = compare_seconds({"per-sample": with_rows(per_sample_rows), "fused": with_rows(shared_rows)},
                              repeats, 2, device)
        model_module._table_rows = shared_rows
        a, f = res["per-sample"][0] * 1e3, res["fused"][0] * 1e3
        print(f"{preset} {shape.kind} {shape.resolution} px x{shape.frames}: per-sample {a:.1f} ms, fused {f:.1f} ms, "
              f"ratio {f / a:.3f}", flush=True)


if __name__ == "__main__":
    main()
