"""How far apart does a model hold two captions that differ in one word? For caption pairs with the same objects
and one word changed (left/right, up/down, left/up, growing/shrinking, spinning/standing still, red/blue), the
distance between the text towers' outputs averaged over each caption's tokens, and, in every block, between the
cross-attention values averaged the same way: what a patch reads when its attention is spread evenly over the
caption, as scripts/cross_attention_words.py finds it nearly is. A word the blocks must act on but hold close to
its opposite is a small signal to learn from.

    python scripts/word_gaps.py [--model PATH]
"""
from __future__ import annotations

import argparse

import torch

from gentron.loading import load_pipeline
from gentron.training.encode import FrozenEncoders

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    encoders = FrozenEncoders(pipe, torch.device("cpu"), False)
    print(f"{'pair':28s} towers  cross-attention values, blocks 0..{len(pipe.transformer.blocks) - 1}")
    for pair in [*PAIRS, "red / blue"]:
        tower, blocks = gaps(pipe, encoders, pair)
        print(f"{pair:28s} {tower:6.3f}  " + " ".join(f"{b:.2f}" for b in blocks))


if __name__ == "__main__":
    main()
