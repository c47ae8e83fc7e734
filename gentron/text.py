"""Text conditioning: a CLIP text tower, a T5 encoder, or both ("CLIP-T5XXL").

How the two towers are combined: each tower's token embeddings keep their own width, and the two
sequences are concatenated along the token axis after zero-padding the features block-wise —
CLIP tokens are ``[clip, 0]`` and T5 tokens ``[0, t5]``, so ``text_dim = d_clip + d_t5``. The
model's first text projection is then exactly one linear map per tower, nothing is lost or
averaged, and the attention mask is the two masks concatenated. The towers are frozen.

The unconditional ("empty") text is the encoding of ``""`` through the same towers, in training
(text dropout replaces a caption by ``""``) and in sampling, where a negative prompt replaces it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (CLIPTextConfig, CLIPTextModel, PreTrainedModel, PreTrainedTokenizerBase,
                          PreTrainedTokenizerFast, T5Config, T5EncoderModel)

TEXT_ENCODERS = ("clip", "t5", "clip+t5")
CLIP_SPECIALS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<pad>", "unk_token": "<unk>"}
T5_SPECIALS = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


@dataclass
class TextTower:
    """A tokenizer with its frozen encoder and the longest token sequence it reads."""

    tokenizer: PreTrainedTokenizerBase
    encoder: PreTrainedModel
    max_length: int

    @property
    def dim(self) -> int:
        return self.encoder.config.hidden_size  # T5Config maps hidden_size to d_model


def build_word_tokenizer(words: list[str], kind: str, max_length: int = 32) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a closed vocabulary, with CLIP's or T5's special tokens.

    transformers 5's ``CLIPTokenizer(vocab_file=..., merges_file=...)`` silently builds a 2-token
    vocabulary, so we build the fast tokenizer from the ``tokenizers`` library directly.
    """
    specials = CLIP_SPECIALS if kind == "clip" else T5_SPECIALS
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*specials.values(), *words]))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials["unk_token"]))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    if kind == "clip":
        bos, eos = specials["bos_token"], specials["eos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    else:
        eos = specials["eos_token"]
        tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **specials)


def build_clip_tower(tokenizer: PreTrainedTokenizerFast, width: int, layers: int, heads: int,
                     max_length: int = 32) -> TextTower:
    """A randomly initialised CLIP text tower of the given size (for tests and pretraining)."""
    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_length,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return TextTower(tokenizer, CLIPTextModel(cfg).eval(), max_length)


def build_t5_tower(tokenizer: PreTrainedTokenizerFast, width: int, layers: int, heads: int,
                   max_length: int = 32) -> TextTower:
    """A randomly initialised T5 encoder of the given size (for tests and pretraining)."""
    cfg = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=width // heads, d_ff=4 * width,
                   num_layers=layers, num_heads=heads, pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    return TextTower(tokenizer, T5EncoderModel(cfg).eval(), max_length)


def check_round_trip(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    """Raise if the tokenizer cannot reproduce ``text`` (catches degenerate vocabularies)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    back = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if back.strip() != text.strip().lower():
        raise ValueError(f"tokenizer does not round-trip: {text!r} -> {back!r} (vocabulary size {len(tokenizer)})")


def count_tokens(towers: list[TextTower], prompt: str) -> int:
    """The longest token count of ``prompt`` over the towers, special tokens included."""
    return max(len(t.tokenizer(prompt)["input_ids"]) for t in towers)


@torch.no_grad()
def encode_text(towers: list[TextTower], prompts: list[str],
                pad_to_max: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (embeddings (B, L, sum of tower widths), mask (B, L) bool), towers combined as above.

    Each tower pads to the batch's longest prompt, or with ``pad_to_max`` to its ``max_length``: one L for
    every prompt, which a compiled transformer needs (each new L would compile anew). Padding is masked, so
    the noise predicted is the same either way. Prompts longer than a tower's ``max_length`` raise ValueError
    (callers check first with ``count_tokens``) rather than being cut silently.
    """
    if not towers:
        raise ValueError("no text tower given: the model needs 'clip', 't5' or 'clip+t5'")
    widths = [t.dim for t in towers]
    embs, masks = [], []
    for i, tower in enumerate(towers):
        padding = dict(padding="max_length", max_length=tower.max_length) if pad_to_max else dict(padding="longest")
        batch = tower.tokenizer(prompts, **padding, return_tensors="pt")
        if batch["input_ids"].shape[1] > tower.max_length:
            raise ValueError(f"prompt is {batch['input_ids'].shape[1]} tokens; this model reads at most "
                             f"{tower.max_length}: shorten the prompt")
        device = tower.encoder.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        hidden = tower.encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        hidden = hidden * mask[..., None]  # padded positions carry nothing, whatever the tower put there
        before, after = sum(widths[:i]), sum(widths[i + 1:])
        embs.append(torch.nn.functional.pad(hidden, (before, after)))
        masks.append(mask.bool())
    return torch.cat(embs, dim=1), torch.cat(masks, dim=1)


def load_text_towers(clip: str | None = None, t5: str | None = None, max_length: int | None = None,
                     subfolder: str = "") -> list[TextTower]:
    """Load full-size towers from local folders or hub ids, e.g. ``clip="openai/clip-vit-large-patch14"``,
    ``t5="google/flan-t5-xxl"``; either may be None. The encoders are frozen (eval, no grad)."""
    from transformers import AutoTokenizer

    if clip is None and t5 is None:
        raise ValueError("name at least one tower: clip=PATH_OR_ID and/or t5=PATH_OR_ID")
    towers = []
    for path, cls in ((clip, CLIPTextModel), (t5, T5EncoderModel)):
        if path is None:
            continue
        tokenizer = AutoTokenizer.from_pretrained(path, subfolder=subfolder)
        encoder = cls.from_pretrained(path, subfolder=subfolder).eval().requires_grad_(False)
        limit = getattr(encoder.config, "max_position_embeddings", None) or tokenizer.model_max_length
        towers.append(TextTower(tokenizer, encoder, min(limit, max_length or tokenizer.model_max_length)))
    return towers
