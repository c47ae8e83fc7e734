"""Does a model read a caption word? Its denoising loss on real Shapes World clips, captioned right and with
that word swapped (left<->right, up<->down, above<->below, growing<->shrinking, spinning -> standing still), with
the empty caption, and with the temporal attention masked to the identity; or (``--relations``) on two-object
images captioned "A to the left of B", "A above B", .... The same clips, noise and timesteps for every
variant, so a difference is the model's, not the sample's. A model that ignores a word loses nothing when it
is swapped.

    python research/word_swap_loss.py --model assets/gentron-shapes --motion moving
    python research/word_swap_loss.py --relations --timesteps 600,800,900
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.data import shapes  # noqa: E402
from gentron.diffusion import NoiseSchedule  # noqa: E402
from gentron.loading import load_pipeline  # noqa: E402
from gentron.training.encode import FrozenEncoders  # noqa: E402

SWAP = {"left": "right", "right": "left", "up": "down", "down": "up", "above": "below", "below": "above",
        "growing": "shrinking", "shrinking": "growing", "spinning": "standing still"}


def swapped(caption: str) -> str:
    return " ".join(SWAP.get(w, w) for w in caption.split())


def single_object_clips(keep: Callable[[shapes.ObjectSpec], bool], n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """n single-object 64 px, 8-frame clips whose object ``keep`` accepts, rendered from their captions:
    pixels (n, F, 3, S, S) in [-1, 1] and the captions."""
    rng, clips, captions = np.random.default_rng(seed), [], []
    while len(clips) < n:
        spec = shapes.sample_caption(rng, video=True)
        if len(spec.objects) == 1 and keep(spec.objects[0]):
            clips.append(shapes.render(spec, 64, 8, rng))
            captions.append(shapes.caption_text(spec))
    return torch.tensor(np.stack(clips)).float().permute(0, 1, 4, 2, 3) / 127.5 - 1, captions


def motion_clips(motion: str, n: int, seed: int = 123) -> tuple[torch.Tensor, list[str]]:
    """n single-object clips whose motion starts with ``motion`` (``single_object_clips``)."""
    return single_object_clips(lambda obj: obj.motion.startswith(motion), n, seed)


def relation_images(n: int, seed: int = 123, only: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """n two-object 64 px images with a spatial relation, as one-frame clips (n, 1, 3, S, S), and their captions;
    ``only``: draw the captions from these."""
    rng, images, captions = np.random.default_rng(seed), [], []
    while len(images) < n:
        spec = shapes.parse_caption(only[rng.integers(len(only))]) if only else shapes.sample_caption(rng, video=False)
        if spec.kind == "relation":
            images.append(shapes.render(spec, 64, 1, rng))
            captions.append(shapes.caption_text(spec))
    return torch.tensor(np.stack(images)).float().permute(0, 1, 4, 2, 3) / 127.5 - 1, captions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    p.add_argument("--motion", default="moving", help="captions whose motion starts with this: moving, growing, ...")
    p.add_argument("--relations", action="store_true", help="two-object relation images instead of moving clips")
    p.add_argument("--captions", default=None, help="with --relations: only these captions, separated by ';'")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--timesteps", default="200,400,600,800")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    encoders, schedule = FrozenEncoders(pipe, torch.device("cpu"), False), NoiseSchedule()
    only = args.captions.split(";") if args.captions else None
    pixels, captions = relation_images(args.n, only=only) if args.relations else motion_clips(args.motion, args.n)
    g, rows = torch.Generator().manual_seed(0), []
    with torch.no_grad():
        x0 = encoders.latents(pixels, g)
        texts = {"right": encoders.text(captions), "swapped": encoders.text([swapped(c) for c in captions]),
                 "empty": encoders.text([""] * len(captions))}
        for t in map(int, args.timesteps.split(",")):
            ts = torch.full((len(captions),), t)
            noise = torch.randn(x0.shape, generator=g)
            xt = schedule.q_sample(x0, noise, ts)
            row = {"t": t}
            for name, (text, mask), motion in [(k, v, True) for k, v in texts.items()] + \
                    [("right, identity mask", texts["right"], False)]:
                eps = pipe.transformer(xt, ts, text, mask, torch.full((len(captions),), motion))
                row[name] = float(f"{float(((eps.float() - noise) ** 2).mean()):.5g}")
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
