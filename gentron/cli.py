"""Command line: ``python -m gentron generate | info | train | eval | convert | bench``.

Every result prints one JSON line; every bad argument prints a clear message and exits non-zero.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from .jobs import PER_JOB, GenerationSettings, run_jobs


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", help="what to draw, e.g. 'a red circle moving left'")
    p.add_argument("--negative-prompt", default="", help="replaces the empty text in guidance")
    p.add_argument("--out", help="output file: .png for an image, .mp4 or .gif for a video")
    p.add_argument("--prompts-file", help="JSONL of {id, prompt, frames, ...}: batch form, with --out-dir")
    p.add_argument("--out-dir", help="folder for the batch form's <id>.png / <id>.mp4")
    p.add_argument("--frames", type=int, default=None, help="1 for an image (default: 1 for .png, 8 otherwise)")
    p.add_argument("--resolution", type=int, default=None, help="side in pixels (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own, 25 unless its "
                   "folder names another)")
    p.add_argument("--text-guidance", type=float, default=None, help="λT (default: the model's own, 7.5 "
                   "unless its folder names another)")
    p.add_argument("--motion-guidance", type=float, default=1.0, help="λM, videos only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", default=None,
                   help="sampler: one the model's objective takes, read from its folder (epsilon: ddim, dpm++, euler; "
                   "flow: flow-euler, flow-dpm++); default: the model's own, ddim for the built-in model")
    p.add_argument("--guidance-interval", default=None, metavar="LOW,HIGH",
                   help="guide only at the steps whose timestep (0-1000) lies in LOW..HIGH; the others take the "
                   "prompt's plain prediction, one branch, so they cost less (default: the model's own; every step, "
                   "0,1000, for the built-in model)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM's η: fresh noise mixed in at every step, from 0 "
                   "(deterministic) to 1 (as much as DDPM); the ddim sampler only")
    p.add_argument("--fps", type=float, default=4.0)
    p.add_argument("--model", default=None, help="folder or hub id; default: the built-in model; "
                   "random:PRESET for an explicitly random one")
    p.add_argument("--quantize", default=None, help="none, bf16, int8, int8-dynamic, bnb8 or bnb4 (default: bf16 "
                   "where the device multiplies bf16 natively, else none)")
    p.add_argument("--quantize-text", default=None, help="the text towers' mode when it should differ from "
                   "--quantize's, e.g. --quantize bnb4 --quantize-text bnb8 (default: the same)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer: pays when many samples "
                   "share a shape (30-50 s per new shape on a 2-core CPU; see gentron.compilation)")
    p.add_argument("--no-pack", dest="pack", action="store_false", help="on the CPU, run the transformer's linear "
                   "layers on plain weights instead of packed copies (gentron.packing): slower, in less memory")


def _interval(text: str) -> tuple[float, float]:
    """"0,900" -> (0.0, 900.0); the range is checked with the model's timesteps (``_check_settings``)."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--guidance-interval takes two timesteps as LOW,HIGH, e.g. 0,900 (got {text!r})") from None
    return low, high


def _settings(args: argparse.Namespace) -> GenerationSettings:
    interval = None if args.guidance_interval is None else _interval(args.guidance_interval)
    return GenerationSettings(
        steps=args.steps, negative_prompt=args.negative_prompt, resolution=args.resolution,
        text_guidance=args.text_guidance, motion_guidance=args.motion_guidance, seed=args.seed,
        scheduler=args.scheduler, guidance_interval=interval, eta=args.eta, fps=args.fps, quantize=args.quantize,
        quantize_text=args.quantize_text, model=args.model)


def _model_facts(args: argparse.Namespace) -> dict:
    """What the model's folder says about itself, from its JSON configs (no weights): its samplers, default sampler,
    size multiple, whether it makes videos, its last timestep; the engine's limits. Only the limits where nothing
    local can be read (a hub id, random:PRESET): the engine checks the rest once loaded."""
    from .loading import folder_configs
    from .quantization import backends_held_back

    with backends_held_back({args.quantize, args.quantize_text or args.quantize}, args.device):
        from . import pipeline
        from .diffusion import objective_of, samplers_for
    facts = {"max_frames": pipeline.MAX_FRAMES, "max_steps": pipeline.MAX_STEPS, "max_seed": pipeline.MAX_SEED,
             "max_guidance": pipeline.MAX_GUIDANCE, "max_prompt_chars": pipeline.MAX_PROMPT_CHARS}
    configs = folder_configs(args.model)
    if configs is None:
        return facts
    scheduler, transformer, vae = configs["scheduler"], configs["transformer"], configs["vae"]
    objective = objective_of(scheduler)
    offered = samplers_for(objective)
    facts.update(objective=objective, samplers=sorted(offered), top=scheduler.get("num_train_timesteps", 1000),
                 default_sampler=next((n for n, (cls, _) in offered.items()
                                       if cls.__name__ == scheduler.get("_class_name")), None))
    if vae.get("block_out_channels") and transformer.get("patch_size"):
        facts["multiple"] = 2 ** (len(vae["block_out_channels"]) - 1) * transformer["patch_size"]
    if "temporal" in transformer:
        facts["temporal"] = bool(transformer["temporal"])
    return facts


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


SAMPLE_FLAGS = {"frames": "--frames", "resolution": "--resolution", "text_guidance": "--text-guidance",
                "motion_guidance": "--motion-guidance", "seed": "--seed", "negative_prompt": "--negative-prompt",
                "prompt": "--prompt"}


def _check_sample(values: dict, name, facts: dict) -> None:
    """One sample's values (a flag's or a prompts-file line's), each error naming the value as ``name(field)``."""
    for field in ("prompt", "negative_prompt"):
        text = values.get(field)
        if text is None:
            continue
        if not isinstance(text, str):
            raise ValueError(f"{name(field)} must be text (got {text!r})")
        if len(text) > facts["max_prompt_chars"]:
            raise ValueError(f"{name(field)} is {len(text)} characters; at most {facts['max_prompt_chars']} are "
                             "allowed")
        if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
            raise ValueError(f"{name(field)} contains control characters; remove them")
    if "prompt" in values and not values["prompt"].strip():
        raise ValueError(f"{name('prompt')} is empty: describe what to draw, e.g. 'a red circle'")
    frames = values.get("frames")
    if frames is not None:
        if not _is_int(frames) or not 1 <= frames <= facts["max_frames"]:
            raise ValueError(f"{name('frames')} must be an integer from 1 to {facts['max_frames']} (got {frames!r})")
        if frames > 1 and facts.get("temporal") is False:
            raise ValueError(f"{name('frames')} must be 1: this is a text-to-image model (got {frames})")
    side = values.get("resolution")
    if side is not None:
        m = facts.get("multiple", 1)
        if not _is_int(side) or not m <= side <= 2048 or side % m:
            what = f"a multiple of {m} between {m} and 2048" if m > 1 else "an integer from 1 to 2048"
            raise ValueError(f"{name('resolution')} must be {what} (got {side!r})")
    for field in ("text_guidance", "motion_guidance"):
        v = values.get(field)
        if v is not None and (not _is_number(v) or not 0 <= v <= facts["max_guidance"]):
            raise ValueError(f"{name(field)} must be a number from 0 to {facts['max_guidance']:g} (got {v!r})")
    seed = values.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= facts["max_seed"]):
        raise ValueError(f"{name('seed')} must be an integer from 0 to {facts['max_seed']} (got {seed!r})")


def _check_settings(s: GenerationSettings, args: argparse.Namespace, facts: dict) -> None:
    """Every flag that applies to all samples, checked before the model loads; each message names its flag."""
    from .quantization import BACKENDS, MODES, installed

    if s.steps is not None and not 1 <= s.steps <= facts["max_steps"]:
        raise ValueError(f"--steps must be an integer from 1 to {facts['max_steps']} (got {s.steps})")
    samplers = facts.get("samplers")
    if s.scheduler is not None and samplers and s.scheduler not in samplers:
        raise ValueError(f"--scheduler must be one of {', '.join(samplers)} for this {facts['objective']} model "
                         f"(got {s.scheduler!r})")
    if not math.isfinite(s.eta) or not 0 <= s.eta <= 1:
        raise ValueError(f"--eta must be a number from 0 (deterministic) to 1 (as much noise as DDPM) (got {s.eta})")
    sampler = s.scheduler or facts.get("default_sampler")
    if s.eta and sampler is not None and sampler != "ddim":
        raise ValueError(f"--eta applies to the ddim sampler only (the sampler is {sampler}): add --scheduler ddim "
                         "or leave --eta at 0")
    if s.guidance_interval is not None:
        low, high = s.guidance_interval
        top = facts.get("top", 1000)
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high <= top):
            raise ValueError(f"--guidance-interval must be LOW,HIGH with 0 <= LOW <= HIGH <= {top:g}, e.g. 0,{top:g} "
                             f"to guide at every step (got {args.guidance_interval!r})")
    if not math.isfinite(s.fps) or not 0.5 <= s.fps <= 60:
        raise ValueError(f"--fps must be a number from 0.5 to 60 (got {s.fps:g})")
    for flag, mode in (("--quantize", s.quantize), ("--quantize-text", s.quantize_text)):
        if mode is None:
            continue
        if mode not in MODES:
            raise ValueError(f"{flag} must be one of {', '.join(MODES)} (got {mode!r})")
        if mode in BACKENDS and not installed(BACKENDS[mode]):
            raise ValueError(f"{flag} {mode} needs {BACKENDS[mode]}, which is not installed (pip install "
                             f"{BACKENDS[mode]})")
    device = str(args.device)
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be cpu or cuda (or cuda:N) (got {device!r})")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available here; use --device cpu")
    _check_sample({k: getattr(s, k) for k in ("resolution", "text_guidance", "motion_guidance", "seed",
                                              "negative_prompt")}, SAMPLE_FLAGS.get, facts)


def _load(settings: GenerationSettings, args: argparse.Namespace):
    """The pipeline the settings name, loaded once."""
    from .loading import load_pipeline

    return load_pipeline(settings.model, args.device, settings.quantize, args.compile, settings.quantize_text,
                         args.pack)


def _checked(args: argparse.Namespace) -> tuple[GenerationSettings, dict]:
    settings = _settings(args)
    facts = _model_facts(args)
    _check_settings(settings, args, facts)
    return settings, facts


OUT_SUFFIXES = (".png", ".mp4", ".gif")


def cmd_generate(args: argparse.Namespace) -> int:
    if (args.prompts_file is None) == (args.prompt is None):
        raise ValueError("give either --prompt (with --out) or --prompts-file (with --out-dir)")
    if args.prompt is not None and not args.out:
        raise ValueError("--out is required with --prompt, e.g. --out result.mp4")
    if args.prompts_file and not args.out_dir:
        raise ValueError("--out-dir is required with --prompts-file")
    settings, facts = _checked(args)
    if args.prompts_file:
        jobs = _read_jobs(args, facts)
    else:
        suffix = Path(args.out).suffix.lower()
        if suffix not in OUT_SUFFIXES:
            raise ValueError(f"--out must end in .png (an image), .mp4 or .gif (a video) (got {args.out!r})")
        frames = (1 if suffix == ".png" else 8) if args.frames is None else args.frames
        _check_sample({"prompt": args.prompt, "frames": frames}, SAMPLE_FLAGS.get, facts)
        if suffix == ".png" and frames != 1:
            raise ValueError(f"--frames must be 1 for a .png --out (got {frames}): write .mp4 or .gif for a video")
        jobs = [dict(prompt=args.prompt, out=args.out, frames=frames)]
    pipe = _load(settings, args)  # once, for every job
    for line in run_jobs(pipe, jobs, settings):
        print(json.dumps(line), flush=True)
    return 0


JOB_FIELDS = {"id", "prompt", "frames", *PER_JOB}


def _read_jobs(args: argparse.Namespace, facts: dict) -> list[dict]:
    """The --prompts-file's jobs, every line checked (its number and field named) before anything is generated."""
    path = Path(args.prompts_file)
    if not path.is_file():
        raise ValueError(f"--prompts-file {args.prompts_file} does not exist")
    if args.frames is not None:
        _check_sample({"frames": args.frames}, SAMPLE_FLAGS.get, facts)
    jobs, ids = [], {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"--prompts-file {args.prompts_file} line {n}"
        try:
            job = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not JSON: {e}") from None
        if not isinstance(job, dict) or "prompt" not in job:
            raise ValueError(f"{where} needs a \"prompt\", e.g. {{\"id\": \"a\", \"prompt\": \"a red circle\"}}")
        unknown = sorted(set(job) - JOB_FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}; a line may hold {', '.join(sorted(JOB_FIELDS))}")
        job_id = str(job.get("id", n))
        if not job_id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{where}: \"id\" {job_id!r} may hold only letters, digits, - and _")
        if job_id in ids:
            raise ValueError(f"{where}: \"id\" {job_id!r} is already used on line {ids[job_id]}")
        ids[job_id] = n
        frames = job.get("frames", 1 if args.frames is None else args.frames)
        _check_sample({**job, "frames": frames}, lambda field: f"{where}: \"{field}\"", facts)
        jobs.append({**job, "id": job_id, "frames": frames,
                     "out": str(Path(args.out_dir) / f"{job_id}.{'png' if frames == 1 else 'mp4'}")})
    if not jobs:
        raise ValueError(f"--prompts-file {args.prompts_file} holds no prompts (one JSON object a line)")
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    return jobs


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.compbench import markdown_table, run_compbench

    if not args.out_dir:
        raise ValueError("--out-dir is required: the folder for the generated files, results.json and table.md")
    settings, _ = _checked(args)
    if args.suite == "loss":
        from .evaluation.heldout_loss import run_heldout_loss

        pipe = _load(settings, args)
        result = run_heldout_loss(pipe, Path(args.out_dir), args.n_images, args.n_videos, args.seed, args.resolution)
        for kind in ("images", "videos"):
            if kind in result:
                r = result[kind]
                print(f"{kind}: held-out loss {r['loss']:.5f} ± {r['loss_se']:.5f}, with empty text "
                      f"{r['loss_empty']:.5f}, text gain {100 * r['text_gain']:.1f}% (n={r['n']})")
        return 0
    if args.suite == "quality":
        from .evaluation.quality import run_quality

        if not args.clip:
            raise ValueError("--suite quality needs --clip: a local CLIPModel folder (or cached hub id) to judge with")
        pipe = _load(settings, args)
        result = run_quality(pipe, Path(args.out_dir), settings.resolved(pipe), args.clip, args.n_images, args.seed,
                             args.real_dir, args.fid_features, args.inception_weights)
        print(f"CLIP score {result['clip_score']:.2f}  FID ({args.fid_features}) {result['fid']:.3f}  "
              f"on {args.n_images} images -> {Path(args.out_dir) / 'quality.json'}")
        return 0
    if args.suite != "compbench":
        from .evaluation.sweep import parse_values, run_sweep

        values = parse_values(args.values, args.suite)
        pipe = _load(settings, args)
        run_sweep(pipe, Path(args.out_dir), settings.resolved(pipe), args.suite, values, args.n_images,
                  args.n_videos, args.seed, args.split)
        print((Path(args.out_dir) / "sweep.md").read_text(), end="")
        return 0
    pipe = _load(settings, args)
    summary = run_compbench(pipe, Path(args.out_dir), settings.resolved(pipe), args.n_images, args.n_videos,
                            args.seed, args.split)
    print(markdown_table(summary["table"]))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .config import get_preset
    from .model import GenTronTransformer

    cfg = get_preset(args.preset, temporal=args.temporal, timestep_modulation=args.timestep_modulation)
    with torch.device("meta"):  # counts parameters without allocating them
        model = GenTronTransformer(**asdict(cfg))
    print(json.dumps({"preset": args.preset, "parameters": model.count_parameters(), **asdict(cfg)}))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_pixart_pipeline

    resolution = None
    if args.resolution is not None:
        try:
            h, w = (int(v) for v in args.resolution.lower().split("x"))
        except ValueError:
            raise ValueError(f"--resolution must be HEIGHTxWIDTH in pixels, e.g. 1024x1024, "
                             f"got {args.resolution!r}") from None
        if h <= 0 or w <= 0:
            raise ValueError(f"--resolution must be positive, got {args.resolution!r}")
        resolution = (h, w)
    out = convert_pixart_pipeline(args.from_pixart, Path(args.out), resolution)
    print(json.dumps({"converted": args.from_pixart, "out": str(out),
                      **json.loads((out / "conversion.json").read_text())}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    import torch

    from .bench import SECTIONS, bench_grid, run_benchmark, save

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    sections = tuple(args.sections.split(",")) if args.sections else SECTIONS
    # one full report per host kind under docs/bench/ (docs/benchmarks.md summarises them); a smoke run apart
    stem = f"docs/bench/{host_kind(args.device)}" + ("-quick" if args.quick else "")
    json_path, md_path = Path(args.out or f"{stem}.json"), Path(args.markdown or f"{stem}.md")
    command = "python -m gentron " + " ".join(shlex.quote(a) for a in args.argv)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.verbose else (lambda s: None)
    result = run_benchmark(bench_grid(args.quick), args.device, args.model, sections, command, log)
    plots = save(result, json_path, md_path)
    print(json.dumps({"json": str(json_path), "markdown": str(md_path), "plots": plots,
                      "threads": result["machine"]["threads"], "seconds": round(result["seconds"], 1)}))
    return 0


def host_kind(device: str) -> str:
    """The report's name: the accelerator, or the CPU by the features that change its speed."""
    if device == "cuda":
        return "cuda"
    from .quantization import cpu_bf16_flags

    flags = cpu_bf16_flags()
    if "amx_bf16" in flags:
        return "xeon-amx"
    try:
        amd = "AuthenticAMD" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cpu"
    if amd:
        return "epyc" if "avx512_bf16" in flags else "epyc-avx2"  # Zen 4 multiplies bf16; Zen 2/3 emulate it
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    prog = "gentron" if Path(sys.argv[0]).name == "gentron" else "python -m gentron"  # the console script or -m
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="text to image or video")
    _generate_args(gen)
    info = sub.add_parser("info", help="a preset's fields and parameter count, as JSON")
    info.add_argument("--preset", default="XL/2")
    info.add_argument("--temporal", action="store_true", help="count the text-to-video model")
    info.add_argument("--timestep-modulation", default="adaln_zero", choices=["adaln_zero", "adaln_single"],
                      help="per-block adaLN-Zero (DiT) or shared adaLN-single (PixArt)")
    sub.add_parser("train", help="train a stage from a YAML config (python -m gentron train --help)")
    sub.add_parser("toy", help="a recipe's gate in minutes: train a small model on one word's toy and judge it "
                   "(python -m gentron toy --help)")
    ev = sub.add_parser("eval", help="the Shapes World CompBench: generate, check, tabulate")
    _generate_args(ev)
    ev.add_argument("--suite", default="compbench",
                    choices=["compbench", "sweep-motion", "sweep-text", "sweep-steps", "quality", "loss"],
                    help="compbench: one run at the given settings; sweep-motion / sweep-text / sweep-steps: the "
                    "same prompts at each of --values for λM (videos), λT (images) or the step count (both, and the "
                    "fewest steps that keep every category's score), with sweep.png; quality: CLIP score "
                    "and FID through torchmetrics (needs --clip); loss: held-out denoising loss with and without "
                    "the caption (paired across models: same samples, noise and timesteps)")
    ev.add_argument("--values", default=None, help="the sweep's comma-separated values (default: 0,0.5,1,1.5,2 "
                    "for λM; 1,3,5,7.5,10 for λT; 4,8,12,16,25 for steps)")
    ev.add_argument("--n-images", type=int, default=200)
    ev.add_argument("--n-videos", type=int, default=100)
    ev.add_argument("--clip", default=None, help="quality suite: local CLIPModel folder or cached hub id "
                    "(e.g. openai/clip-vit-large-patch14) for the CLIP score and FID-CLIP")
    ev.add_argument("--real-dir", default=None, help="quality suite: folder of real images for FID (default: "
                    "Shapes World renders of the same captions)")
    ev.add_argument("--fid-features", default="clip", choices=["clip", "inception"],
                    help="quality suite: FID in CLIP image space, or Inception-v3 (needs torch-fidelity)")
    ev.add_argument("--inception-weights", default=None, help="quality suite: local torch-fidelity Inception "
                    "weights file for --fid-features inception")
    ev.add_argument("--split", default="all", choices=["all", "train", "heldout"], help="caption split to draw from")
    conv = sub.add_parser("convert", help="start from open weights: a PixArt-α pipeline -> a GenTron T2I folder")
    conv.add_argument("--from-pixart", required=True, metavar="PATH_OR_ID",
                      help="diffusers PixArt-α pipeline folder or hub id, e.g. PixArt-alpha/PixArt-XL-2-512x512")
    conv.add_argument("--out", required=True, help="new folder for the GenTron pipeline")
    conv.add_argument("--resolution", default=None, metavar="HxW",
                      help="only for the 1024px (size-conditioned) models: the image size to condition on")
    bench = sub.add_parser("bench", help="speed, memory and FLOP/s benchmarks -> docs/bench/HOST.json/.md")
    bench.add_argument("--quick", action="store_true", help="reduced grid for smoke tests (64 px, 8 frames, "
                       "2 repeats, tiny and S/2); writes docs/bench/HOST-quick.* unless --out/--markdown are given")
    bench.add_argument("--out", default=None, help="JSON results (default: docs/bench/HOST.json, HOST = cuda, xeon-amx, epyc or cpu)")
    bench.add_argument("--markdown", default=None, help="report with one table per section; the plots go "
                       "next to it (default: docs/bench/HOST.md)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    bench.add_argument("--model", default=None, help="pipeline for the end-to-end and text-tower rows "
                       "(default: the built-in model, skipped if absent)")
    bench.add_argument("--sections", default=None, help="comma-separated subset of "
                       "step,reference,mfg,flops,quantization,end_to_end,compile (default: all)")
    bench.add_argument("--verbose", action="store_true", help="print progress to stderr")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # the trainer owns its flags (see python -m gentron.training --help)
        from .training.__main__ import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["toy"]:  # so does the toy gate
        from .evaluation.toy import main as toy_main

        return toy_main(argv[1:])
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if getattr(args, "quantize", "none") is None:  # eval judges the weights as trained unless told otherwise
        from .quantization import default_mode

        args.quantize = "none" if args.command == "eval" else default_mode(args.device)
    try:
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "info":
            return cmd_info(args)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "convert":
            return cmd_convert(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
