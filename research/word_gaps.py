"""How far apart does a model hold two captions that differ in one word? For caption pairs with the same objects
and one word changed (left/right, up/down, left/up, growing/shrinking, spinning/standing still, red/blue), the
distance between the text towers' outputs averaged over each caption's tokens, and, in every block, between the
cross-attention values averaged the same way: what a patch reads when its attention is spread evenly over the
caption, as research/cross_attention_words.py finds it nearly is. A word the blocks must act on but hold close to
its opposite is a small signal to learn from.

Then what each word is worth to the loss where a layout is chosen: as t nears T the best prediction of the clean
latents is their mean over the clips a caption allows, so a model that ignores a word predicts the mean over both
of its sides and loses |m_a - m_b|^2 / 4 of x0 error. From N real single-object clips a side (VAE latents, the
same objects), the share of that near-pure-noise x0 error the word removes; "left / left" compares two halves
of the same side, the estimate's floor.

    python research/word_gaps.py [--model PATH] [--clips 128]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.loading import load_pipeline  # noqa: E402
from gentron.training.encode import FrozenEncoders  # noqa: E402
from word_swap_loss import single_object_clips  # research/ is on the path when a script in it runs  # noqa: E402

OBJECTS = ("a red square", "a big blue star", "a small green triangle", "a yellow star", "a cyan square")
PAIRS = {"left / right": ("moving left", "moving right"), "up / down": ("moving up", "moving down"),
         "left / up": ("moving left", "moving up"), "growing / shrinking": ("growing", "shrinking"),
         "spinning / standing still": ("spinning", "standing still")}


def captions(pair: str) -> tuple[list[str], list[str]]:
    """The two sides of a pair, caption by caption; 'red / blue' changes the colour under one motion."""
    if pair == "red / blue":
        first = [f"a red {shape} moving left" for shape in ("square", "star", "circle", "triangle")]
        return first, [c.replace("red", "blue") for c in first]
    a, b = PAIRS[pair]
    return [f"{o} {a}" for o in OBJECTS], [f"{o} {b}" for o in OBJECTS]


def mean_over_tokens(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) features and their (B, L) mask -> (B, D), the mean over each caption's real tokens."""
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1)


@torch.no_grad()
def gaps(pipe, encoders: FrozenEncoders, pair: str) -> tuple[float, list[float]]:
    """(tower gap, per-block value gaps): mean L2 distances between the two sides' token-averaged features."""
    first, second = captions(pair)
    text, mask = encoders.text(first + second)
    n = len(first)
    tower = mean_over_tokens(text, mask)
    model = pipe.transformer
    tokens = model.text_proj(text.to(model.dtype))
    blocks = []
    for block in model.blocks:
        _, v = block.cross.keys_values(tokens)  # (B, heads, L, head_dim)
        v = mean_over_tokens(v.transpose(1, 2).flatten(2).float(), mask)
        blocks.append(float((v[:n] - v[n:]).norm(dim=-1).mean()))
    return float((tower[:n] - tower[n:]).norm(dim=-1).mean()), blocks


def side_latents(encoders: FrozenEncoders, word: str, n: int, seed: int) -> torch.Tensor:
    """(n, C·F·h·w) latents of real 8-frame 64 px single-object clips whose motion starts with ``word`` (or whose
    colour is ``word``), flattened."""
    pixels, _ = single_object_clips(lambda obj: obj.motion.startswith(word) or obj.colour == word, n, seed)
    return encoders.latents(pixels, torch.Generator().manual_seed(seed)).flatten(1)


def word_worth(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of the x0 error of predicting the pooled mean that knowing the side removes: gap / (within + gap)."""
    gap = (a.mean(0) - b.mean(0)).square().sum() / 4
    within = ((a - a.mean(0)).square().sum(1).mean() + (b - b.mean(0)).square().sum(1).mean()) / 2
    return float(gap / (within + gap))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    p.add_argument("--clips", type=int, default=128, help="real clips a side for the worth of each word")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    encoders = FrozenEncoders(pipe, torch.device("cpu"), False)
    print(f"{'pair':28s} towers  cross-attention values, blocks 0..{len(pipe.transformer.blocks) - 1}")
    for pair in [*PAIRS, "red / blue"]:
        tower, blocks = gaps(pipe, encoders, pair)
        print(f"{pair:28s} {tower:6.3f}  " + " ".join(f"{b:.2f}" for b in blocks))
    print(f"\nshare of the near-pure-noise x0 error a word removes ({args.clips} clips a side)")
    with torch.no_grad():
        for pair in ["left / left", *PAIRS, "red / blue"]:
            words = [w.replace("left", "moving left").replace("right", "moving right").replace("up", "moving up")
                     .replace("down", "moving down") for w in pair.split(" / ")]
            a = side_latents(encoders, words[0], args.clips, 1)
            b = side_latents(encoders, words[1], args.clips, 2)
            print(f"{pair:28s} {100 * word_worth(a, b):5.1f}%")


if __name__ == "__main__":
    main()
