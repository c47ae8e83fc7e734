"""Which parts lose quality when quantized? The text-conditioned denoising loss (epsilon MSE) of the built-in
model on 64 Shapes World images, the same images, noise and timesteps for every variant.

    python scripts/quant_loss_by_part.py --mode bnb4 --parts text_encoder_2 --ignore-class-keep
    python scripts/quant_loss_by_part.py --mode bnb4 --parts transformer --keep adaLN_modulation
--parts: pipeline components to quantize (none: full precision); --keep: name parts left unquantized.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from gentron import quantization
from gentron.data import shapes
from gentron.diffusion import NoiseSchedule
from gentron.loading import load_pipeline
from gentron.training.encode import FrozenEncoders


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--mode", default="bnb4", choices=quantization.MODES)
    p.add_argument("--parts", nargs="*", default=["transformer", "text_encoder", "text_encoder_2"])
    p.add_argument("--keep", nargs="*", default=[], help="module name parts not to quantize, e.g. adaLN_modulation")
    p.add_argument("--ignore-class-keep", action="store_true",
                   help="quantize what a model class keeps in fp32 too (T5's wo), as before that was honoured")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    if args.parts:
        default = quantization._quantizable
        quantization._quantizable = lambda name, model=None: default(
            name, None if args.ignore_class_keep else model) and not any(k in name.split(".") for k in args.keep)
        try:
            quantization.quantize_pipeline(pipe, args.mode, tuple(args.parts))
        finally:
            quantization._quantizable = default
    rng, clips, captions = np.random.default_rng(7), [], []
    for _ in range(64):
        clip, caption, _ = shapes.sample(rng, 64, 1, False)
        clips.append(clip)
        captions.append(caption)
    pixels = torch.tensor(np.stack(clips)).float().permute(0, 1, 4, 2, 3) / 127.5 - 1
    encoders, schedule, g = FrozenEncoders(pipe, torch.device("cpu"), False), NoiseSchedule(), torch.Generator().manual_seed(0)
    row = {"mode": args.mode, "parts": args.parts, "keep": args.keep, "ignore_class_keep": args.ignore_class_keep}
    with torch.no_grad():
        x0 = encoders.latents(pixels, g)
        text, mask = encoders.text(captions)
        for t in (300, 500, 700):
            ts = torch.full((len(captions),), t)
            noise = torch.randn(x0.shape, generator=g)
            eps = pipe.transformer(schedule.q_sample(x0, noise, ts), ts, text, mask).float()
            row[f"t{t}"] = float(f"{float(((eps - noise) ** 2).mean()):.4g}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
