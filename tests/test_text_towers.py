"""The text-tower refinement: words a tower had collapsed become distinct, the rest stays put."""
import pytest
import torch

from gentron.text import build_clip_tower, build_t5_tower, build_word_tokenizer
from gentron.training.text_towers import COLOUR_PAIRS, DIRECTION_PAIRS, refine, shapes_vocabulary, word_separation


def _collapsed_towers():
    """Tiny CLIP and T5 towers whose "left"/"right"/"up"/"down" share one input embedding: they cannot tell
    directions apart, like the first shipped CLIP tower."""
    torch.manual_seed(0)
    towers = []
    for kind, build in (("clip", build_clip_tower), ("t5", build_t5_tower)):
        tokenizer = build_word_tokenizer(shapes_vocabulary(), kind)
        tower = build(tokenizer, width=32, layers=1, heads=2)
        table = tower.encoder.get_input_embeddings().weight
        ids = tokenizer.convert_tokens_to_ids(["left", "right", "up", "down"])
        with torch.no_grad():
            table[ids] = table[ids[0]].clone()
        towers.append(tower)
    return towers


@pytest.mark.slow  # end to end
def test_refine_separates_collapsed_words_and_refreezes():
    towers = _collapsed_towers()
    assert all(word_separation(t, DIRECTION_PAIRS) < 1e-4 for t in towers)
    log = refine(towers, steps=60, batch=16, seed=0, identity_weight=1.0, lr=3e-3)
    assert log[-1]["identity"] < log[0]["identity"]
    for tower in towers:
        assert word_separation(tower, DIRECTION_PAIRS) > 0.1 * word_separation(tower, COLOUR_PAIRS)  # from 0
        assert not any(p.requires_grad for p in tower.encoder.parameters())
        assert not tower.encoder.training


def test_refine_without_identity_keeps_the_outputs():
    """Distillation alone starts at zero (no dropout in the student) and keeps every output where it was."""
    towers = _collapsed_towers()
    captions = ["a red star moving left", "a small blue circle above a big green square", "three white stars"]

    def outputs():
        return [t.encoder(**t.tokenizer(captions, padding=True, return_tensors="pt")).last_hidden_state.detach()
                for t in towers]

    before = outputs()
    log = refine(towers, steps=5, batch=8, seed=0, identity_weight=0.0)
    assert log[0]["distill"] < 1e-10
    for old, new in zip(before, outputs()):
        assert ((new - old) ** 2).mean() / (old ** 2).mean() < 1e-3
