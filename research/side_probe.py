"""Is the side of a relation in the text the model reads? For each of 12 colour pairs, the captions "A to the left
of B", "B to the right of A" (A on the left) and "A to the right of B", "B to the left of A" (A on the right) over
every shape pair, and linear probes (logistic regression) for "A is on the left" trained on 12 shape pairs and
tested on the other 4, from: the towers' token mean (what a cross-attention spread nearly evenly over the caption
reads: research/cross_attention_words.py), the mean of the transformer's projected caption tokens (its
cross-attention keys and values are linear in these), and the towers' tokens in order. The same for above/below.

    python research/side_probe.py [--model FOLDER]
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.data.shapes import COLOURS, SHAPES  # noqa: E402
from gentron.loading import load_pipeline  # noqa: E402
from gentron.training.encode import FrozenEncoders  # noqa: E402


def probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Held-out accuracy of an L2-regularised logistic regression on standardised features."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    w, b = torch.zeros(x_train.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x_train @ w + b, y_train) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((x_test @ w + b > 0).float() == y_test).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    p.add_argument("--pairs", type=int, default=12, help="colour pairs to probe")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    encoders, rng = FrozenEncoders(pipe, torch.device("cpu"), False), np.random.default_rng(0)
    colour_pairs = list(itertools.combinations(COLOURS, 2))
    rng.shuffle(colour_pairs)
    for first, second in (("to the left of", "to the right of"), ("above", "below")):
        scores: dict[str, list[float]] = {"towers' token mean": [], "projected token mean": [], "tokens in order": []}
        for ca, cb in colour_pairs[:args.pairs]:
            captions, labels, groups = [], [], []
            for group, (sa, sb) in enumerate(itertools.product(SHAPES, SHAPES)):
                a, b = f"a {ca} {sa}", f"a {cb} {sb}"
                for caption, label in ((f"{a} {first} {b}", 1), (f"{b} {second} {a}", 1),
                                       (f"{a} {second} {b}", 0), (f"{b} {first} {a}", 0)):
                    captions.append(caption), labels.append(label), groups.append(group)
            with torch.no_grad():
                emb, mask = encoders.text(captions)
                emb, m = emb.float(), mask.float()[..., None]
                projected = pipe.transformer.text_proj(emb.to(pipe.transformer.dtype)).float()
            features = {"towers' token mean": (emb * m).sum(1) / m.sum(1),
                        "projected token mean": (projected * m).sum(1) / m.sum(1),
                        "tokens in order": (emb * m).flatten(1)}
            y, test = torch.tensor(labels).float(), np.isin(groups, rng.choice(16, 4, replace=False))
            for name, x in features.items():
                scores[name].append(probe_accuracy(x[~test], y[~test], x[test], y[test]))
        print(f"{first} / {second}: " + ", ".join(f"{k} {100 * np.mean(v):.1f}%" for k, v in scores.items())
              + f" (held-out accuracy, mean over {args.pairs} colour pairs, 16 captions each)")


if __name__ == "__main__":
    main()
