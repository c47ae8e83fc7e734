"""Where does the transformer's cross-attention look? On real Shapes World clips, noised to timestep t, the share
of each block's cross-attention (averaged over heads, frames and patches) that lands on each caption word, in
either tower's tokens. A word the blocks hardly attend to cannot steer the picture.

    python research/cross_attention_words.py --motion moving --t 600
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from einops import rearrange

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this clone's gentron, installed or not
from gentron.data import shapes  # noqa: E402
from gentron.diffusion import NoiseSchedule  # noqa: E402
from gentron.loading import load_pipeline  # noqa: E402
from gentron.training.encode import FrozenEncoders  # noqa: E402
from word_swap_loss import motion_clips  # research/ is on the path when a script in it runs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder (default: the built-in model)")
    p.add_argument("--motion", default="moving", help="captions whose motion starts with this")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--t", type=int, default=600)
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    encoders = FrozenEncoders(pipe, torch.device("cpu"), False)
    pixels, captions = motion_clips(args.motion, args.n)  # the clips research/word_swap_loss.py draws
    # each caption's words, token by token, for both towers (word-level tokenizers: one token a word)
    words: list[list[str]] = []
    for tower in pipe.towers:
        ids = tower.tokenizer(captions, padding="longest")["input_ids"]
        for i, row in enumerate(ids):
            toks = tower.tokenizer.convert_ids_to_tokens(row)
            words.append(toks) if len(words) < len(captions) else words[i].extend(toks)
    shares: dict[int, list[torch.Tensor]] = defaultdict(list)
    entropies: dict[int, float] = {}

    def hook(index):
        def grab(module, inputs):
            h, context, mask = inputs
            q = rearrange(module.q(h), "b n (h d) -> b h n d", h=module.num_heads)
            k, _ = context if isinstance(context, tuple) else module.keys_values(context)
            scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(-1)  # (B, heads, queries, L)
            shares[index].append(probs.mean(dim=(1, 2)))  # (B, L)
            # each query's entropy over the text, as a fraction of the uniform distribution's (1 = no selection)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
            entropies[index] = float((entropy / mask.sum(-1, keepdim=True).log()).mean())
        return grab

    handles = [b.cross.register_forward_pre_hook(hook(i)) for i, b in enumerate(pipe.transformer.blocks)]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x0 = encoders.latents(pixels, g)
        text, mask = encoders.text(captions)
        ts = torch.full((len(captions),), args.t)
        noise = torch.randn(x0.shape, generator=g)
        pipe.transformer(NoiseSchedule().q_sample(x0, noise, ts), ts, text, mask, torch.ones(len(captions), dtype=bool))
    for h in handles:
        h.remove()
    kinds = {"colour": set(shapes.PALETTE), "shape": {"circle", "square", "triangle", "star", "circles", "squares",
             "triangles", "stars"}, "direction": {"left", "right", "up", "down"}, "moving": {"moving"},
             "speed": {"slowly", "quickly"}, "size": {"big", "small"}, "other motion": {"growing", "shrinking",
             "spinning", "standing", "still"}}
    kind_of = [[next((k for k, ws in kinds.items() if tok in ws), None) for tok in toks] for toks in words]
    print(f"t={args.t}, {len(captions)} '{args.motion}' clips; share of each block's cross-attention by word kind")
    print("block | " + " | ".join(kinds) + " | rest (articles, special tokens) | entropy / uniform's")

    def table_row(name: str, a: torch.Tensor, entropy: float) -> None:  # a: (B, L) attention over the text
        row = {k: 0.0 for k in kinds}
        for b, ks in enumerate(kind_of):
            for j, kind in enumerate(ks):
                if kind:
                    row[kind] += float(a[b, j]) / len(kind_of)
        print(f"{name} | " + " | ".join(f"{v:.3f}" for v in row.values()) + f" | {1 - sum(row.values()):.3f} | {entropy:.2f}")

    table_row("uniform", mask.float() / mask.float().sum(1, keepdim=True), 1.0)  # every unmasked token alike
    for i in sorted(shares):
        table_row(str(i), shares[i][0], entropies[i])


if __name__ == "__main__":
    main()
