"""CLIP score and FID through torchmetrics: plumbing on a tiny random CLIP saved to a folder, checked
against the definitions (cosine x 100, a distance that is 0 on itself), not for quality."""
import json

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor
from transformers.models.clip import CLIPImageProcessorPil

from gentron.cli import main
from gentron.data.shapes import COLOURS, SHAPES
from gentron.evaluation import quality
from gentron.text import build_word_tokenizer

PROMPTS = ["a red circle", "a blue square", "a big green triangle", "a small yellow square", "a purple circle",
           "a red triangle"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    words = ["a", "an", "the", "of", "and", *COLOURS, *SHAPES, "big", "small"]
    tok = build_word_tokenizer(words, "clip", 16)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    path = tmp_path_factory.mktemp("clip")
    model.save_pretrained(path)
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(path)
    return path


def test_clip_score_is_100_times_the_cosine(clip_dir):
    model, processor = quality.load_clip(str(clip_dir))
    images = quality.shapes_references(PROMPTS, 64, seed=0)
    score = quality.clip_score(images, PROMPTS, model, processor, batch_size=4)  # two batches
    with torch.no_grad():
        px = processor(images=list(quality.to_uint8_nchw(images)), return_tensors="pt")["pixel_values"]
        tx = processor(text=PROMPTS, return_tensors="pt", padding=True)
        a = quality._embedding(model.get_image_features(pixel_values=px))
        b = quality._embedding(model.get_text_features(input_ids=tx["input_ids"], attention_mask=tx["attention_mask"]))
    expected = (100 * torch.nn.functional.cosine_similarity(a, b)).clamp(min=0).mean()
    assert score == pytest.approx(float(expected), abs=1e-3)
    assert quality.clip_score(images[:2], PROMPTS[:2], model, processor) != score  # it depends on the pairs


def test_fid_is_a_distance_in_clip_space(clip_dir):
    model, processor = quality.load_clip(str(clip_dir))
    features = quality.ClipImageFeatures(model, processor)
    a = quality.shapes_references(PROMPTS, 64, seed=0)
    b = quality.shapes_references(PROMPTS, 64, seed=1)
    noise = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(6)]
    assert quality.fid(a, a, features) == pytest.approx(0.0, abs=1e-6)
    near, far = quality.fid(a, b, features), quality.fid(a, noise, features)
    assert 0 < near < far  # other renders of the same captions are closer than noise
    assert quality.fid(b, a, features) == pytest.approx(near, rel=1e-6)


def test_bad_inputs_say_what_to_change(clip_dir, tmp_path):
    model, processor = quality.load_clip(str(clip_dir))
    images = quality.shapes_references(PROMPTS[:2], 64, seed=0)
    with pytest.raises(ValueError, match="one prompt per image"):
        quality.clip_score(images, PROMPTS[:1], model, processor)
    with pytest.raises(ValueError, match="at least 2"):
        quality.fid(images[:1], images, quality.ClipImageFeatures(model, processor))
    with pytest.raises(ValueError, match="not a CLIPModel folder"):
        quality.load_clip(str(tmp_path))
    with pytest.raises(ValueError, match="not a folder"):
        quality.read_images(tmp_path / "missing", 64)


@pytest.mark.slow  # end to end
def test_quality_suite_cli(tmp_path, tiny_pipeline_dir, clip_dir, capsys):
    """Generates with a tiny random model, judges with the tiny CLIP: files and numbers are written."""
    out = tmp_path / "q"
    assert main(["eval", "--suite", "quality", "--clip", str(clip_dir), "--model", str(tiny_pipeline_dir),
                 "--resolution", "32", "--steps", "2", "--n-images", "4", "--out-dir", str(out)]) == 0
    result = json.loads((out / "quality.json").read_text())
    assert result["n_images"] == 4 and len(list(out.glob("i*.png"))) == 4
    assert 0 <= result["clip_score"] <= 100 and result["fid"] > 0 and result["clip_score_real"] is not None
    assert "CLIP score" in capsys.readouterr().out
    real = tmp_path / "real"
    real.mkdir()
    from PIL import Image
    for i, im in enumerate(quality.shapes_references(PROMPTS, 48, seed=2)):
        Image.fromarray(im).save(real / f"{i}.png")
    (real / "broken.png").write_bytes(b"not a png")  # skipped, not a crash
    assert main(["eval", "--suite", "quality", "--clip", str(clip_dir), "--model", str(tiny_pipeline_dir),
                 "--resolution", "32", "--steps", "2", "--n-images", "3", "--real-dir", str(real),
                 "--out-dir", str(tmp_path / "q2")]) == 0
    assert json.loads((tmp_path / "q2" / "quality.json").read_text())["real"] == str(real)
    assert main(["eval", "--suite", "quality", "--model", str(tiny_pipeline_dir), "--out-dir", str(out)]) == 2
    assert "needs --clip" in capsys.readouterr().err
