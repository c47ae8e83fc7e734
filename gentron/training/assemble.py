"""Put the built-in model's pretrained parts together into a pipeline folder, and ship one.

    # base: the trained VAE and text towers + a freshly initialised transformer of a preset
    python -m gentron.training.assemble base --vae runs/builtin/vae --text runs/builtin/text \
        --preset S/2 --out runs/builtin/base
    # ship: copy a trained pipeline into assets/, the transformer stored in bf16 (half the bytes)
    python -m gentron.training.assemble ship --from runs/builtin/t2v/final --out assets/gentron-shapes \
        --runs runs/builtin
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


def stage_seconds(loss_log: Path) -> tuple[int, float]:
    """(last step, compute seconds) of a stage from its loss.jsonl; a resume restarts the clock."""
    total, prev, step = 0.0, 0.0, 0
    for line in loss_log.read_text().splitlines():
        row = json.loads(line)
        total += row["seconds"] - prev if row["seconds"] >= prev else row["seconds"]
        prev, step = row["seconds"], row["step"]
    return step, total


def provenance(runs: Path) -> dict:
    """What each stage of the recipe did and how long it took, from the files the stages wrote."""
    vae = json.loads((runs / "vae_metrics.json").read_text())
    text = json.loads((runs / "text" / "text_metrics.json").read_text())
    stages = {"vae": {"seconds": vae["seconds"], "steps": vae["steps"], "psnr_db": vae["psnr_db"],
                      "parameters": vae["parameters"]},
              "text_towers": {"seconds": text["clip_seconds"] + text["t5_seconds"], "clip": text["clip_final"],
                              "t5": text["t5_final"]}}
    for name in ("t2i", "t2v"):
        step, seconds = stage_seconds(runs / name / "loss.jsonl")
        stages[name] = {"steps": step, "seconds": seconds, "config": f"configs/builtin_{name}.yaml"}
    return {"machine": "2-core CPU (AMX, bf16), no GPU", "stages": stages,
            "total_seconds": sum(s["seconds"] for s in stages.values())}


def ship(src: Path, out: Path, runs: Path | None = None) -> int:
    """Copy a pipeline folder, storing the transformer in bf16 (with the recipe's provenance from
    ``runs``); returns the folder's size in bytes."""
    pipe = GenTronPipeline.from_pretrained(src)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.transformer.to(torch.bfloat16)
    pipe.save_pretrained(tmp)
    if runs is not None:
        (tmp / "training.json").write_text(json.dumps(provenance(runs), indent=1))
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
    s.add_argument("--runs", type=Path, default=None, help="the stages' output folder, for training.json")
    args = p.parse_args(argv)
    if args.cmd == "base":
        print(json.dumps({"base": str(build_base(args.vae, args.text, args.preset, args.out))}))
    else:
        print(json.dumps({"shipped": str(args.out), "bytes": ship(args.src, args.out, args.runs)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
