"""Pretrain the built-in model's small text towers on Shapes World, then freeze them.

- CLIP: a CLIPModel (small text and vision towers) trained contrastively on captions against their
  pictures. The vision tower sees the first and last frame stacked as six channels (an image is
  stacked with itself), so motion words get grounded too. Only the text tower is kept.
- T5: a T5ForConditionalGeneration trained with T5's span-corruption objective on captions.
  Only the encoder is kept.

Both use word-level tokenizers over the Shapes World vocabulary (``text.build_word_tokenizer``).

Neither objective needs every word. Span corruption never asks the encoder to tell "left" from "right"
(no other word depends on it), and the contrastive loss had not grounded it by the end of its budget: the
first shipped CLIP tower put "moving left" / "moving right"-type pairs 0.85 apart at that word, where a
colour change moved it 8.7 (``word_separation``), and the transformer's loss was the same for either
caption, so no video moved the captioned way. ``refine`` fixes such towers in place: every token's output must name its word through a cosine
classifier (a fixed temperature, so words are told apart by angle, not by a head's large weights),
while a distillation term keeps the outputs near the frozen originals, which the transformer was trained on.

    python -m gentron.training.text_towers --out runs/builtin/text     # pretraining, then the refinement
    python -m gentron.training.text_towers --refine assets/gentron-shapes --out runs/text_refined  # refinement only
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTextModel, T5Config, T5EncoderModel, T5ForConditionalGeneration

from ..data import shapes
from ..text import TextTower, build_word_tokenizer, check_round_trip

MAX_TOKENS = 32  # the longest caption of the grammar is 22 tokens with specials
N_SENTINELS = 8


def shapes_vocabulary() -> list[str]:
    """Every word a Shapes World caption can use, plus the plural shape nouns."""
    words = "a an and of the to left right above below two three moving slowly quickly spinning growing " \
            "shrinking standing still up down".split()
    words += list(shapes.SIZE_WORDS) + list(shapes.COLOURS) + list(shapes.SHAPES) + [s + "s" for s in shapes.SHAPES]
    return list(dict.fromkeys(words))


def _pictures(rng: np.random.Generator, n: int, size: int = 32) -> tuple[torch.Tensor, list[str]]:
    """(n, 6, S, S) first+last frames in [-1, 1] and their captions; half images, half videos."""
    xs, caps = [], []
    for i in range(n):
        video = i % 2 == 1
        clip, caption, _ = shapes.sample(rng, 64, 8 if video else 1, video)
        xs.append(np.concatenate([clip[0], clip[-1]], axis=-1))
        caps.append(caption)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.avg_pool2d(x, 64 // size), caps


def train_clip(tokenizer, steps: int, batch: int, width: int, layers: int, seed: int) -> tuple[CLIPTextModel, list]:
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
                         num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=32, patch_size=4, num_channels=6, hidden_size=width, intermediate_size=4 * width,
                           num_hidden_layers=layers, num_attention_heads=4),
        projection_dim=width)
    model = CLIPModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    log = []
    for step in range(steps):
        x, caps = _pictures(np.random.default_rng([seed, step]), batch)
        tok = tokenizer(caps, padding=True, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=x)
        logits = out.logits_per_text.float()
        # identical captions in a batch are both right answers: a soft target over duplicates
        same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            acc = (logits.argmax(1) == torch.arange(batch)).float().mean().item()
            log.append({"tower": "clip", "step": step + 1, "loss": loss.item(), "top1": acc})
            print(json.dumps(log[-1]), flush=True)
    text = CLIPTextModel(cfg.text_config)
    text.load_state_dict(model.text_model.state_dict())  # transformers 5: CLIPTextModel is the bare tower
    return text.eval(), log


def span_corrupt(ids: list[int], rng: np.random.Generator, sentinels: list[int], eos: int) -> tuple[list, list]:
    """T5's objective: replace ~15% of tokens, in spans of mean length 2, by sentinels."""
    n = len(ids)
    n_mask = max(1, round(0.15 * n))
    masked = np.zeros(n, bool)
    while masked.sum() < n_mask:
        start = rng.integers(0, n)
        masked[start:start + rng.integers(1, 4)] = True
    inputs, targets, s = [], [], 0
    for i, tok in enumerate(ids):
        if masked[i]:
            if i == 0 or not masked[i - 1]:
                inputs.append(sentinels[min(s, len(sentinels) - 1)])
                targets.append(sentinels[min(s, len(sentinels) - 1)])
                s += 1
            targets.append(tok)
        else:
            inputs.append(tok)
    return inputs + [eos], targets + [eos]


def train_t5(tokenizer, steps: int, batch: int, width: int, layers: int, seed: int) -> tuple[T5EncoderModel, list]:
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=width // 4, d_ff=4 * width, num_layers=layers,
                   num_decoder_layers=1, num_heads=4, pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    model = T5ForConditionalGeneration(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(N_SENTINELS)])
    pad, log = tokenizer.pad_token_id, []
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        pairs = []
        for _ in range(batch):
            caption = shapes.caption_text(shapes.sample_caption(rng, video=bool(rng.integers(2))))
            ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
            pairs.append(span_corrupt(ids, rng, sentinels, tokenizer.eos_token_id))
        li, lt = max(len(a) for a, _ in pairs), max(len(b) for _, b in pairs)
        inp = torch.tensor([a + [pad] * (li - len(a)) for a, _ in pairs])
        lab = torch.tensor([b + [-100] * (lt - len(b)) for _, b in pairs])
        loss = model(input_ids=inp, attention_mask=(inp != pad).long(), labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            log.append({"tower": "t5", "step": step + 1, "loss": loss.item()})
            print(json.dumps(log[-1]), flush=True)
    encoder = T5EncoderModel(cfg)
    missing, unexpected = encoder.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    return encoder.eval(), log


def word_separation(tower, pairs: list[tuple[str, str]]) -> float:
    """Mean distance between a tower's outputs for captions that differ in one word, at that word's token."""
    dists = []
    for a, b in pairs:
        tok = tower.tokenizer([a, b], padding=True, return_tensors="pt")
        with torch.no_grad():
            h = tower.encoder(**tok).last_hidden_state.float()
        at = (tok["input_ids"][0] != tok["input_ids"][1]).nonzero()[0, 0]
        dists.append(float((h[0, at] - h[1, at]).norm()))
    return float(np.mean(dists))


DIRECTION_PAIRS = [(f"a red star moving {a}", f"a red star moving {b}")
                   for a, b in (("left", "right"), ("up", "down"), ("left", "up"), ("right", "down"))]
COLOUR_PAIRS = [("a red star moving left", "a blue star moving left"), ("a green circle", "a white circle")]


def refine(towers: list, steps: int, batch: int, seed: int, identity_weight: float = 0.2,
           temperature: float = 10.0, lr: float = 3e-4) -> list[dict]:
    """Train ``towers`` (TextTower, in place) so that each token's output names its word, keeping them near
    their current outputs. Returns the log; the encoders end frozen again."""
    torch.manual_seed(seed)
    params, parts = [], []
    for tower in towers:
        teacher = type(tower.encoder)(tower.encoder.config).eval().requires_grad_(False)
        teacher.load_state_dict(tower.encoder.state_dict())
        head = torch.nn.Parameter(torch.randn(len(tower.tokenizer), tower.dim) * 0.02)
        tower.encoder.eval().requires_grad_(True)  # eval: no dropout, so the student starts equal to its teacher
        params += [*tower.encoder.parameters(), head]
        parts.append((tower, teacher, head))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    log = []
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        caps = [shapes.caption_text(shapes.sample_caption(rng, video=bool(rng.integers(2)))) for _ in range(batch)]
        distill = identity = 0.0
        for tower, teacher, head in parts:
            tok = tower.tokenizer(caps, padding=True, return_tensors="pt")
            real = tok["attention_mask"].bool()
            h = tower.encoder(**tok).last_hidden_state.float()
            with torch.no_grad():
                target = teacher(**tok).last_hidden_state.float()
            distill = distill + ((h - target)[real] ** 2).mean() / (target[real] ** 2).mean()
            logits = temperature * F.normalize(h[real], dim=-1) @ F.normalize(head, dim=-1).t()
            identity = identity + F.cross_entropy(logits, tok["input_ids"][real])
        loss = distill + identity_weight * identity
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0 or step == 0:
            log.append({"step": step + 1, "distill": distill.item(), "identity": identity.item()})
            print(json.dumps(log[-1]), flush=True)
    for tower, _, _ in parts:
        tower.encoder.requires_grad_(False)
    return log


def refine_main(args: argparse.Namespace) -> int:
    """--refine PIPELINE: refine its towers; writes them (and their tokenizers) under --out."""
    from ..loading import load_pipeline
    towers = load_pipeline(str(args.refine)).towers  # CLIP, then T5
    before = {"direction": [word_separation(t, DIRECTION_PAIRS) for t in towers],
              "colour": [word_separation(t, COLOUR_PAIRS) for t in towers]}
    started = time.perf_counter()
    log = refine(towers, args.refine_steps, args.batch, args.seed, args.identity_weight)
    seconds = time.perf_counter() - started
    after = {"direction": [word_separation(t, DIRECTION_PAIRS) for t in towers],
             "colour": [word_separation(t, COLOUR_PAIRS) for t in towers]}
    for tower, name in zip(towers, ("", "_2")):
        tower.encoder.save_pretrained(args.out / f"text_encoder{name}")
        tower.tokenizer.save_pretrained(args.out / f"tokenizer{name}")
    summary = {"refine_seconds": seconds, "from": str(args.refine), "steps": args.refine_steps, "batch": args.batch,
               "separation_before": before, "separation_after": after, "final": log[-1] if log else None}
    (args.out / "refine_metrics.json").write_text(json.dumps({**summary, "log": log}, indent=1))
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/builtin/text"))
    p.add_argument("--clip-steps", type=int, default=1200)
    p.add_argument("--t5-steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refine", type=Path, default=None, help="a pipeline folder whose towers to refine (see above)")
    p.add_argument("--refine-steps", type=int, default=300, help="the refinement's steps (after pretraining too; 0: none)")
    p.add_argument("--identity-weight", type=float, default=0.2,
                   help="identity loss against distillation (0.2 shipped: outputs moved 13%%, directions 0.85 -> 5.2)")
    args = p.parse_args(argv)
    if args.refine is not None:
        return refine_main(args)
    words = shapes_vocabulary()
    clip_tok = build_word_tokenizer(words, "clip", MAX_TOKENS)
    t5_tok = build_word_tokenizer(words + [f"<extra_id_{i}>" for i in range(N_SENTINELS)], "t5", MAX_TOKENS)
    probe = "a big red circle moving left slowly and a small blue star spinning"
    for tok in (clip_tok, t5_tok):
        check_round_trip(tok, probe)
    started = time.perf_counter()
    clip, clip_log = train_clip(clip_tok, args.clip_steps, args.batch, args.width, args.layers, args.seed)
    clip_seconds = time.perf_counter() - started
    t5, t5_log = train_t5(t5_tok, args.t5_steps, args.batch, args.width, args.layers, args.seed)
    t5_seconds = time.perf_counter() - started - clip_seconds
    towers = [TextTower(clip_tok, clip, MAX_TOKENS), TextTower(t5_tok, t5, MAX_TOKENS)]
    separation = {"direction_before": [word_separation(t, DIRECTION_PAIRS) for t in towers]}
    refine_log = refine(towers, args.refine_steps, args.batch, args.seed, args.identity_weight)  # see above
    refine_seconds = time.perf_counter() - started - clip_seconds - t5_seconds
    separation["direction_after"] = [word_separation(t, DIRECTION_PAIRS) for t in towers]
    args.out.mkdir(parents=True, exist_ok=True)
    clip.save_pretrained(args.out / "text_encoder")
    clip_tok.save_pretrained(args.out / "tokenizer")
    t5.save_pretrained(args.out / "text_encoder_2")
    t5_tok.save_pretrained(args.out / "tokenizer_2")
    summary = {"clip_seconds": clip_seconds, "t5_seconds": t5_seconds, "refine_seconds": refine_seconds,
               "clip_final": clip_log[-1:], "t5_final": t5_log[-1:], "refine_final": refine_log[-1:],
               "separation": separation, "vocabulary": len(words)}
    (args.out / "text_metrics.json").write_text(json.dumps({**summary, "log": clip_log + t5_log + refine_log}, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
