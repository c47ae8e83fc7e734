"""Put the built-in model's pretrained parts together into a pipeline folder, and ship one.

    # base: the trained VAE and text towers + a freshly initialised transformer of a preset
    python -m gentron.training.assemble base --vae runs/builtin/vae --text runs/builtin/text \
        --preset S/2 --out runs/builtin/base
    # ship: copy a trained pipeline into assets/, the transformer stored in bf16 (half the bytes)
    python -m gentron.training.assemble ship --from runs/builtin/t2v/final --out assets/gentron-shapes \
        --runs runs/builtin
    # ship the uniform average of two transformers trained on from one start (a "model soup")
    python -m gentron.training.assemble ship --from runs/a/shipped --average-with runs/b/shipped --out runs/soup
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import yaml
from diffusers import AutoencoderKL
from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

from ..diffusion import make_scheduler
from ..model import GenTronTransformer
from ..pipeline import GenTronPipeline


def build_base(vae_dir: Path | str, text_dir: Path | None, preset: str, out: Path, seed: int = 0,
               clip: str | None = None, t5: str | None = None) -> Path:
    """A pipeline folder whose transformer is a fresh ``preset`` sized to the text towers.

    The towers come from ``text_dir`` (text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/) or
    from ``clip`` / ``t5`` folders or hub ids (e.g. CLIP-L and Flan-T5-XXL); the VAE from a folder or
    hub id (an SD-style VAE works: ``--vae stabilityai/sd-vae-ft-ema``)."""
    from ..text import load_text_towers

    vae = AutoencoderKL.from_pretrained(vae_dir)
    if text_dir is not None:
        clip_m = CLIPTextModel.from_pretrained(text_dir / "text_encoder")
        t5_m = T5EncoderModel.from_pretrained(text_dir / "text_encoder_2")
        towers = [(clip_m, AutoTokenizer.from_pretrained(text_dir / "tokenizer")),
                  (t5_m, AutoTokenizer.from_pretrained(text_dir / "tokenizer_2"))]
    else:
        loaded = {type(t.encoder).__name__: t for t in load_text_towers(clip, t5)}
        towers = [(loaded[n].encoder, loaded[n].tokenizer) if n in loaded else (None, None)
                  for n in ("CLIPTextModel", "T5EncoderModel")]
    text_dim = sum(enc.config.hidden_size for enc, _ in towers if enc is not None)  # T5 maps it to d_model
    torch.manual_seed(seed)
    transformer = GenTronTransformer.from_preset(preset, in_channels=vae.config.latent_channels, text_dim=text_dim)
    pipe = GenTronPipeline(transformer=transformer, vae=vae, scheduler=make_scheduler("dpm++"),
                           text_encoder=towers[0][0], tokenizer=towers[0][1],
                           text_encoder_2=towers[1][0], tokenizer_2=towers[1][1])
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


CPU_MACHINE = "2-core CPU (AMX, bf16), no GPU"


def provenance(runs: Path | None, stage_specs: list[str] | None = None, previous: Path | None = None,
               text_refine: Path | None = None) -> dict:
    """What each stage of the recipe did, where and how long it took, from the files the stages wrote.

    ``stage_specs``: ``NAME=DIR[@MACHINE]`` per transformer stage, in order (DIR holds the stage's loss.jsonl
    and config.yaml; MACHINE defaults to this 2-core CPU); without it, ``runs``/t2i and ``runs``/t2v.
    ``previous``: an earlier training.json whose stages come first (a model trained on from a shipped one);
    ``text_refine``: the folder ``text_towers --refine`` wrote (its refine_metrics.json)."""
    averages: list[dict] = []  # the models averaged in on the way, each after the stage it followed
    if previous is not None:
        earlier = json.loads(previous.read_text())
        stages = dict(earlier["stages"])
        averages = list(earlier.get("averages", []))
        if "averaged_with" in earlier:  # the older one-average form of the record
            averages.append({"with": earlier["averaged_with"], "after_stage": list(stages)[-1]})
    else:
        vae = json.loads((runs / "vae_metrics.json").read_text())
        text = json.loads((runs / "text" / "text_metrics.json").read_text())
        stages = {"vae": {"seconds": vae["seconds"], "steps": vae["steps"], "psnr_db": vae["psnr_db"],
                          "parameters": vae["parameters"]},
                  "text_towers": {"seconds": text["clip_seconds"] + text["t5_seconds"] + text.get("refine_seconds", 0.0),
                                  "clip": text["clip_final"], "t5": text["t5_final"]}}
    if text_refine is not None:
        refine = json.loads((text_refine / "refine_metrics.json").read_text())
        stages["text_towers_refine"] = {"seconds": refine["refine_seconds"], "steps": refine["steps"],
                                        "batch": refine["batch"], "separation_before": refine["separation_before"],
                                        "separation_after": refine["separation_after"], "machine": CPU_MACHINE}
    specs = stage_specs or ([] if previous is not None else [f"{name}={runs / name}" for name in ("t2i", "t2v")])
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep:
            raise ValueError(f"a stage is NAME=DIR[@MACHINE], got {spec!r}")
        folder, _, machine = rest.partition("@")
        step, seconds = stage_seconds(Path(folder) / "loss.jsonl")
        config = Path(folder) / "config.yaml"
        entry = {"steps": step, "seconds": seconds, "machine": machine or CPU_MACHINE}
        if config.is_file():
            entry["config"] = yaml.safe_load(config.read_text())
        stages[name] = entry
    for name in ("vae", "text_towers"):
        stages[name].setdefault("machine", CPU_MACHINE)
    machines = sorted({s["machine"] for s in stages.values()})
    record = {"machine": " + ".join(machines), "stages": stages,
              "total_seconds": sum(s["seconds"] for s in stages.values()),
              "seconds_by_machine": {m: sum(s["seconds"] for s in stages.values() if s["machine"] == m)
                                     for m in machines}}
    if averages:
        record["averages"] = averages
    return record


def average_weights(model: GenTronTransformer, other: Path | str) -> None:
    """Replace ``model``'s weights, in place, by their uniform average with those of the transformer in the
    pipeline folder ``other`` (same config). Averaged in fp32, then stored in ``model``'s own dtype."""
    theirs = GenTronTransformer.from_pretrained(Path(other) / "transformer")
    if theirs.cfg != model.cfg:  # the validated architecture, without diffusers' bookkeeping keys
        raise ValueError(f"--average-with {other}: its transformer's config differs from --from's; only two runs "
                         "of the same architecture, trained on from one start, can be averaged")
    ours, other_state = model.state_dict(), theirs.state_dict()
    model.load_state_dict({k: ((v.float() + other_state[k].float()) / 2).to(v.dtype) for k, v in ours.items()})


def ship(src: Path, out: Path, runs: Path | None = None, stages: list[str] | None = None,
         previous: Path | None = None, text_refine: Path | None = None, average_with: Path | None = None,
         text_guidance: float | None = None, steps: int | None = None) -> int:
    """Copy a pipeline folder, storing the transformer in bf16 (with the recipe's provenance from
    ``runs`` or ``previous``, see ``provenance``); returns the folder's size in bytes. ``average_with``: a
    pipeline folder whose transformer is averaged with ``src``'s first (``average_weights``). ``text_guidance``:
    the model's own λT, written to its model_index.json (``GenTronPipeline.default_text_guidance``); ``steps``
    likewise its own sampling steps (``GenTronPipeline.default_steps``)."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"--steps must be a whole number of sampling steps >= 1, got {steps!r}")
    record = None
    if runs is not None or previous is not None:  # read before ``out`` is replaced: previous may live there
        record = provenance(runs, stages, previous, text_refine)
    pipe = GenTronPipeline.from_pretrained(src)
    if average_with is not None:  # loaded before ``out`` is replaced: it may be the folder shipped before
        average_weights(pipe.transformer, average_with)
        if record is not None:
            record["averages"] = [*record.get("averages", []),
                                  {"with": str(average_with), "after_stage": list(record["stages"])[-1]}]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.transformer.to(torch.bfloat16)
    if text_guidance is not None:
        pipe.register_to_config(text_guidance=float(text_guidance))
    if steps is not None:
        pipe.register_to_config(steps=steps)
    pipe.save_pretrained(tmp)
    if record is not None:
        (tmp / "training.json").write_text(json.dumps(record, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("base")
    b.add_argument("--vae", required=True, help="VAE folder or hub id")
    b.add_argument("--text", type=Path, default=None, help="folder of pretrained towers (the built-in recipe)")
    b.add_argument("--clip", default=None, help="CLIP text tower folder or hub id (instead of --text)")
    b.add_argument("--t5", default=None, help="T5 encoder folder or hub id (instead of --text)")
    b.add_argument("--preset", default="S/2")
    b.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("ship")
    s.add_argument("--from", dest="src", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--runs", type=Path, default=None, help="the stages' output folder, for training.json")
    s.add_argument("--stage", action="append", default=None, metavar="NAME=DIR[@MACHINE]",
                   help="a transformer stage for training.json, in order (default: RUNS/t2i and RUNS/t2v)")
    s.add_argument("--previous", type=Path, default=None, help="an earlier training.json whose stages come first")
    s.add_argument("--text-refine", type=Path, default=None, help="the folder of a text_towers --refine run")
    s.add_argument("--average-with", type=Path, default=None,
                   help="a pipeline folder whose transformer is averaged, weight by weight, with --from's")
    s.add_argument("--text-guidance", type=float, default=None,
                   help="the model's own λT, used where a request names none (default: the folder's, else 7.5)")
    s.add_argument("--steps", type=int, default=None, help="the model's own sampling steps, used where a request "
                   "names none (default: the folder's, else 25; python -m gentron eval --suite sweep-steps picks it)")
    args = p.parse_args(argv)
    if args.cmd == "base":
        print(json.dumps({"base": str(build_base(args.vae, args.text, args.preset, args.out, clip=args.clip, t5=args.t5))}))
    else:
        print(json.dumps({"shipped": str(args.out), "bytes": ship(args.src, args.out, args.runs, args.stage, args.previous,
                                                                    args.text_refine, args.average_with,
                                                                    args.text_guidance, args.steps)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
