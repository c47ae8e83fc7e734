"""Put the built-in model's pretrained parts together into a pipeline folder, and ship one.

    # base: the trained VAE and text towers + a freshly initialised transformer of a preset
    python -m gentron.training.assemble base --vae runs/builtin/vae --text runs/builtin/text \
        --preset S/2 --out runs/builtin/base
    # ship: copy a trained pipeline into assets/, the transformer stored in bf16 (half the bytes)
    python -m gentron.training.assemble ship --from runs/builtin/t2v/final --out assets/gentron-shapes
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

from ..diffusion import make_scheduler
from ..model import GenTronTransformer
from ..pipeline import GenTronPipeline


def build_base(vae_dir: Path, text_dir: Path, preset: str, out: Path, seed: int = 0) -> Path:
    """A pipeline folder whose transformer is a fresh ``preset`` sized to the text towers."""
    vae = AutoencoderKL.from_pretrained(vae_dir)
    clip = CLIPTextModel.from_pretrained(text_dir / "text_encoder")
    t5 = T5EncoderModel.from_pretrained(text_dir / "text_encoder_2")
    torch.manual_seed(seed)
    transformer = GenTronTransformer.from_preset(preset, in_channels=vae.config.latent_channels,
                                                 text_dim=clip.config.hidden_size + t5.config.d_model)
    pipe = GenTronPipeline(transformer=transformer, vae=vae, scheduler=make_scheduler("dpm++"),
                           text_encoder=clip, tokenizer=AutoTokenizer.from_pretrained(text_dir / "tokenizer"),
                           text_encoder_2=t5, tokenizer_2=AutoTokenizer.from_pretrained(text_dir / "tokenizer_2"))
    pipe.save_pretrained(out)
    return out


def ship(src: Path, out: Path) -> int:
    """Copy a pipeline folder, storing the transformer in bf16; returns the folder's size in bytes."""
    pipe = GenTronPipeline.from_pretrained(src)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.transformer.to(torch.bfloat16)
    pipe.save_pretrained(tmp)
    for extra in ("training.json", "metrics.json"):
        if (src / extra).exists():
            shutil.copy(src / extra, tmp / extra)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("base")
    b.add_argument("--vae", type=Path, required=True)
    b.add_argument("--text", type=Path, required=True)
    b.add_argument("--preset", default="S/2")
    b.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("ship")
    s.add_argument("--from", dest="src", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "base":
        print(json.dumps({"base": str(build_base(args.vae, args.text, args.preset, args.out))}))
    else:
        print(json.dumps({"shipped": str(args.out), "bytes": ship(args.src, args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
