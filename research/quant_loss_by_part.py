"""Which parts lose quality when quantized? The held-out denoising loss of the built-in model
(``gentron.evaluation.heldout_loss``: the same held-out images, noise and timesteps for every variant, so
variants are paired sample by sample) with some of its parts quantized.

    python research/quant_loss_by_part.py --mode bnb4 --parts text_encoder_2 --ignore-class-keep
    python research/quant_loss_by_part.py --mode bnb4 --parts transformer --keep adaLN_modulation
--parts: pipeline components to quantize (none: full precision); --keep: name parts left unquantized.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron import quantization  # noqa: E402
from gentron.evaluation.heldout_loss import heldout_samples, per_sample_losses, summarise_losses  # noqa: E402
from gentron.loading import load_pipeline  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--mode", default="bnb4", choices=quantization.MODES)
    p.add_argument("--parts", nargs="*", default=["transformer", "text_encoder", "text_encoder_2"])
    p.add_argument("--keep", nargs="*", default=[], help="module name parts not to quantize, e.g. adaLN_modulation")
    p.add_argument("--ignore-class-keep", action="store_true",
                   help="quantize what a model class keeps in fp32 too (T5's wo), as before that was honoured")
    p.add_argument("--n-images", type=int, default=256)
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
    pixels, captions = heldout_samples(args.n_images, 1, pipe.default_resolution, seed=0)
    summary = summarise_losses(per_sample_losses(pipe, pixels, captions, seed=0))
    print(json.dumps({"mode": args.mode, "parts": args.parts, "keep": args.keep,
                      "ignore_class_keep": args.ignore_class_keep, "loss": f"{summary['loss']:.5f}",
                      "se": f"{summary['loss_se']:.5f}",
                      **{name: f"{b['loss']:.5f}" for name, b in summary["buckets"].items()}}))


if __name__ == "__main__":
    main()
