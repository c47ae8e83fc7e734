"""Toy gates: does a training recipe read a layout word? Each trains a fresh small model in minutes.

- ``side``: two circles, one red and one blue, side by side; the caption says only which is on the left
  ("a red circle to the left of a blue circle"). Judged by the checker's detections: the red and the blue
  circle found once each, and the captioned relation holding between their centres.
- ``direction``: one red circle "moving left|right|up|down" over 8 frames. Judged by the checker's tracking:
  the circle found in every frame, and its fitted velocity pointing the captioned way (its component along the
  captioned direction positive and larger than the one across it).

Both decide their word near pure noise, which a recipe must reach (docs/training.md). Data are rendered with
the Shapes World generator, cached with the built-in model's VAE and text towers, a fresh transformer is trained
on them (resumable: a second call with more ``--steps`` continues from the last checkpoint), then held-out seeds
are sampled and judged; one JSON line is printed.

    python -m gentron toy --task side --out-dir runs/toy_side
    python -m gentron toy --task direction --objective flow --shift 8 --steps 3000 --out-dir runs/toy_dir
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import shapes
from .checker import along_across, detect, relation_holds, velocity

TASKS = ("side", "direction")
SIDE_RELATIONS = ("to the left of", "to the right of")
DIRECTIONS = ("left", "right", "up", "down")


@dataclass(frozen=True)
class ToySettings:
    task: str = "side"
    objective: str = "flow"  # "flow" or "epsilon" (with Min-SNR 5, the paper's objective as trained here)
    shift: float = 8.0  # flow's timestep shift toward noise (1 = none)
    steps: int = 0  # optimizer steps; 0 = the task's default
    frame_embedding: bool = True  # direction: frame positions at the input (GenTronConfig.frame_embedding)
    n_data: int = 0  # rendered samples; 0 = the task's default
    n_samples: int = 40  # held-out samples judged
    text_guidance: float = 4.0
    sampling_steps: int = 25
    seed: int = 0
    model: str = "assets/gentron-shapes"  # whose VAE and text towers encode the data
    preset: str = "XS/2"
    time_limit: float = 0  # seconds of training before it checkpoints and judges what it has (0 = none)

    def validate(self) -> "ToySettings":
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.objective not in ("flow", "epsilon"):
            raise ValueError(f"--objective must be flow or epsilon, got {self.objective!r}")
        if not self.shift > 0:
            raise ValueError(f"--shift must be a number > 0 (1 = no shift), got {self.shift!r}")
        for name, low in (("steps", 0), ("n_data", 0), ("n_samples", 1), ("sampling_steps", 1), ("seed", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)!r}")
        return self

    @property
    def video(self) -> bool:
        return self.task == "direction"

    @property
    def train_steps(self) -> int:
        return self.steps or (1200 if self.task == "side" else 4000)

    @property
    def data_size(self) -> int:
        return self.n_data or (8000 if self.task == "side" else 4000)


def toy_spec(task: str, rng: np.random.Generator) -> shapes.CaptionSpec:
    """One caption of the task's grammar."""
    if task == "side":
        first, second = rng.permutation(["red", "blue"])
        return shapes.CaptionSpec("relation", (shapes.ObjectSpec(str(first), "circle"),
                                               shapes.ObjectSpec(str(second), "circle")),
                                  relation=str(rng.choice(SIDE_RELATIONS)))
    return shapes.CaptionSpec("video_single", (shapes.ObjectSpec("red", "circle",
                                                                 motion=f"moving {rng.choice(DIRECTIONS)}"),))


def prompts(task: str, n: int) -> list[str]:
    """The n judged prompts: every caption of the task in turn."""
    if task == "side":
        captions = [f"a {a} circle {rel} a {b} circle" for rel in SIDE_RELATIONS for a, b in (("red", "blue"),
                                                                                             ("blue", "red"))]
    else:
        captions = [f"a red circle moving {d}" for d in DIRECTIONS]
    return [captions[i % len(captions)] for i in range(n)]


def render_data(task: str, n: int, out: Path, seed: int) -> Path:
    """n captioned samples (PNG, or an 8-frame GIF) with same-name .txt captions in ``out``, written once."""
    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()) == {"task": task, "n": n, "seed": seed}:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng, frames = np.random.default_rng(seed), 8 if task == "direction" else 1
    i = 0
    while i < n:
        spec = toy_spec(task, rng)
        try:
            pictures = shapes.render(spec, 64, frames, rng)
        except shapes.PlacementError:
            continue
        if frames == 1:
            Image.fromarray(pictures[0]).save(out / f"{i:05d}.png")
        else:
            first, *rest = [Image.fromarray(p) for p in pictures]
            first.save(out / f"{i:05d}.gif", save_all=True, append_images=rest, duration=250, loop=0)
        (out / f"{i:05d}.txt").write_text(shapes.caption_text(spec))
        i += 1
    done.write_text(json.dumps({"task": task, "n": n, "seed": seed}))
    return out


def judge(task: str, caption: str, frames: np.ndarray) -> str:
    """'right', 'wrong' or 'unclear' (side: not exactly one red and one blue circle; direction: the circle lost
    in a frame) for one sample's uint8 frames (F, H, W, 3)."""
    size = frames.shape[1]
    if task == "side":
        dets = detect(frames[0])
        red = [d for d in dets if d.colour == "red"]
        blue = [d for d in dets if d.colour == "blue"]
        if len(dets) != 2 or len(red) != 1 or len(blue) != 1:
            return "unclear"
        spec = shapes.parse_caption(caption)
        a, b = (red[0], blue[0]) if spec.objects[0].colour == "red" else (blue[0], red[0])
        return "right" if relation_holds(spec.relation, a, b) else "wrong"
    track = []
    for frame in frames:
        red = [d for d in detect(frame) if d.colour == "red"]
        if not red:
            return "unclear"
        track.append(max(red, key=lambda d: d.area))
    v = velocity(track, size)
    along, across = along_across(v, caption.split()[-1])
    return "right" if along > 0 and along > across else "wrong"


def run_toy(settings: ToySettings, out_dir: str | Path) -> dict:
    """Render, cache, train (or resume), sample and judge; returns the result line (also written to
    ``out_dir/result.json``, and each sample's verdict to ``out_dir/samples.jsonl``)."""
    import torch

    from ..data.folders import build_cache, is_cache
    from ..pipeline import GenTronPipeline
    from ..training.config import TrainConfig
    from ..training.trainer import train

    s = settings.validate()
    out = Path(out_dir)
    data_dir = out.parent / f".toy-data-{s.task}-{s.data_size}-{s.seed}"  # shared by every arm beside this one
    cache = data_dir / "cache"
    if not is_cache(cache):
        build_cache(render_data(s.task, s.data_size, data_dir / "media", s.seed), s.model, cache,
                    frames=8 if s.video else 1, overwrite=True)
    flow = s.objective == "flow"
    cfg = TrainConfig(
        stage=f"toy_{s.task}", init_from=s.model, transformer_preset=s.preset, output_dir=str(out / "run"),
        data=str(cache), resolution=64, frames=8 if s.video else 1, to_video=s.video,
        frame_embedding=s.video and s.frame_embedding, batch_size=16 if s.video else 64, lr=5e-4, warmup=100,
        steps=s.train_steps, time_limit=s.time_limit, ema_decay=0.999, mixed_precision="bf16", text_dropout=0.1,
        objective=s.objective, flow_shift=s.shift if flow else 1.0, min_snr_gamma=None if flow else 5.0,
        checkpoint_every=500, keep_checkpoints=1, log_every=50, seed=s.seed)
    started = time.perf_counter()
    final = train(cfg)
    train_seconds = time.perf_counter() - started
    losses = [json.loads(line) for line in (out / "run" / "loss.jsonl").read_text().splitlines()]

    pipe = GenTronPipeline.from_pretrained(final)
    counts = {"right": 0, "wrong": 0, "unclear": 0}
    with (out / "samples.jsonl").open("w") as f:
        for i, caption in enumerate(prompts(s.task, s.n_samples)):
            result = pipe(caption, frames=8 if s.video else 1, num_inference_steps=s.sampling_steps,
                          text_guidance=s.text_guidance, seed=10_000 + i)
            frames = result.frames[0]
            verdict = judge(s.task, caption, frames)
            counts[verdict] += 1
            f.write(json.dumps({"caption": caption, "seed": 10_000 + i, "verdict": verdict}) + "\n")
            if i < 8:
                Image.fromarray(np.concatenate(list(frames), axis=1)).save(out / f"sample_{i:02d}.png")
    line = {"task": s.task, "objective": s.objective, "shift": s.shift if flow else None,
            "frame_embedding": s.frame_embedding if s.video else None, "steps": losses[-1]["step"],
            "accuracy": counts["right"] / s.n_samples, "counts": counts, "n_samples": s.n_samples,
            "train_seconds": round(train_seconds, 1), "final_loss": losses[-1]["loss"],
            "threads": torch.get_num_threads()}
    (out / "result.json").write_text(json.dumps(line, indent=1))
    return line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--objective", default="flow", choices=("flow", "epsilon"))
    p.add_argument("--shift", type=float, default=8.0, help="flow's timestep shift toward noise (1 = none)")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps (default: 1200 side, 4000 direction); "
                   "more steps on the same --out-dir resume the run")
    p.add_argument("--no-frame-embedding", dest="frame_embedding", action="store_false",
                   help="direction: leave the frame positions out of the input (inside temporal attention only)")
    p.add_argument("--n-data", type=int, default=0, help="rendered samples (default: 8000 side, 4000 direction)")
    p.add_argument("--n-samples", type=int, default=40)
    p.add_argument("--sampling-steps", type=int, default=25, help="sampler steps per judged sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=0, help="seconds of training, then judge (0 = none)")
    p.add_argument("--model", default="assets/gentron-shapes", help="the VAE and text towers that encode the data")
    p.add_argument("--out-dir", required=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gentron toy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    a = p.parse_args(argv)
    settings = ToySettings(task=a.task, objective=a.objective, shift=a.shift, steps=a.steps,
                           frame_embedding=a.frame_embedding, n_data=a.n_data, n_samples=a.n_samples,
                           sampling_steps=a.sampling_steps, seed=a.seed,
                           model=a.model, time_limit=a.time_limit)
    try:
        line = run_toy(settings, a.out_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
