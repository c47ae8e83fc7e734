"""The built-in model that `python app.py` loads: present, small, safetensors only, and working."""
import json

import numpy as np
import pytest

from gentron.loading import BUILTIN_MODEL, load_pipeline


@pytest.fixture(scope="module")
def builtin():
    return load_pipeline()  # no name: the built-in model, offline


def test_ships_in_assets_as_safetensors_under_60_mb():
    files = [p for p in BUILTIN_MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 60 * 2**20
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    provenance = json.loads((BUILTIN_MODEL / "training.json").read_text())
    assert {"vae", "text_towers", "t2i", "t2v"} <= set(provenance["stages"])


@pytest.mark.slow  # end to end
def test_is_the_full_text_to_video_model(builtin):
    assert builtin.transformer.config.temporal
    assert [type(t.encoder).__name__ for t in builtin.towers] == ["CLIPTextModel", "T5EncoderModel"]
    assert builtin.default_resolution == 64 and builtin.vae_scale_factor == 4


@pytest.mark.slow  # end to end
def test_image_and_video_deterministic(builtin):
    a = builtin("a red circle", num_inference_steps=4, seed=1)
    b = builtin("a red circle", num_inference_steps=4, seed=1)
    assert a.frames.shape == (1, 1, 64, 64, 3) and np.array_equal(a.frames, b.frames)
    v = builtin("a red circle moving right", frames=8, num_inference_steps=4, seed=1)
    assert v.frames.shape == (1, 8, 64, 64, 3)


@pytest.mark.slow  # end to end
def test_draws_on_the_shapes_world_background(builtin):
    """Most of a picture is Shapes World's dark background (16, 16, 16), as in training."""
    frame = builtin("a big blue square", seed=0).frames[0, 0].astype(int)
    background = (np.abs(frame - 16).max(-1) < 30).mean()
    assert background > 0.5


def test_provenance_continues_an_earlier_record(tmp_path):
    """A model trained on from a shipped one keeps the earlier stages and adds the new ones, totals included."""
    from gentron.training.assemble import CPU_MACHINE, provenance

    previous = tmp_path / "training.json"
    previous.write_text(json.dumps({"stages": {"vae": {"seconds": 10.0, "machine": CPU_MACHINE},
                                               "text_towers": {"seconds": 5.0, "machine": CPU_MACHINE},
                                               "t2v": {"seconds": 20.0, "steps": 4, "machine": "GPU A"}}}))
    refine = tmp_path / "refine"
    refine.mkdir()
    (refine / "refine_metrics.json").write_text(json.dumps({
        "refine_seconds": 2.0, "steps": 3, "batch": 8, "separation_before": {"direction": [0.1]},
        "separation_after": {"direction": [5.0]}}))
    stage = tmp_path / "videos"
    stage.mkdir()
    (stage / "loss.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.1, "seconds": 1.5 * s}) + "\n"
                                              for s in (2, 4)))
    record = provenance(None, [f"videos={stage}@GPU B"], previous, refine)
    assert list(record["stages"]) == ["vae", "text_towers", "t2v", "text_towers_refine", "videos"]
    assert record["stages"]["videos"] == {"steps": 4, "seconds": 6.0, "machine": "GPU B"}
    assert record["seconds_by_machine"] == {CPU_MACHINE: 17.0, "GPU A": 20.0, "GPU B": 6.0}
    assert record["total_seconds"] == 43.0


def test_ship_writes_the_models_own_text_guidance(tmp_path, tiny_pipeline_dir):
    from gentron.pipeline import GenTronPipeline
    from gentron.training.assemble import main

    assert main(["ship", "--from", str(tiny_pipeline_dir), "--out", str(tmp_path / "m"), "--text-guidance", "3.5"]) == 0
    assert GenTronPipeline.from_pretrained(tmp_path / "m").default_text_guidance == 3.5
    assert GenTronPipeline.from_pretrained(tiny_pipeline_dir).default_text_guidance == 7.5


def test_ship_writes_the_models_own_step_count_and_refuses_a_bad_one(tmp_path, tiny_pipeline_dir):
    from gentron.pipeline import GenTronPipeline
    from gentron.training.assemble import main, ship

    assert main(["ship", "--from", str(tiny_pipeline_dir), "--out", str(tmp_path / "m"), "--steps", "12"]) == 0
    assert GenTronPipeline.from_pretrained(tmp_path / "m").default_steps == 12
    assert GenTronPipeline.from_pretrained(tiny_pipeline_dir).default_steps == 25
    with pytest.raises(ValueError, match="--steps must be a whole number.*got 0"):
        ship(tiny_pipeline_dir, tmp_path / "bad", steps=0)
    assert not (tmp_path / "bad").exists()


def test_ship_averages_two_runs_weight_by_weight(tmp_path, tiny_pipeline_dir):
    """``ship --average-with``: each shipped weight is the mean of the two runs' (then stored in bf16); a
    transformer of another architecture is refused with the reason."""
    import torch

    from gentron.factory import build_random_pipeline
    from gentron.model import GenTronTransformer
    from gentron.training.assemble import ship

    other = build_random_pipeline("tiny", text="clip+t5", temporal=True, seed=1)
    other.save_pretrained(tmp_path / "other")
    ship(tiny_pipeline_dir, tmp_path / "soup", average_with=tmp_path / "other")
    a = GenTronTransformer.from_pretrained(tiny_pipeline_dir / "transformer").state_dict()
    b = other.transformer.state_dict()
    soup = GenTronTransformer.from_pretrained(tmp_path / "soup" / "transformer").state_dict()
    assert any((a[k] != b[k]).any() for k in a)  # two different runs
    for k, v in soup.items():  # loaded back in fp32: each value is the bf16 rounding of the mean
        assert torch.equal(v, ((a[k].float() + b[k].float()) / 2).to(torch.bfloat16).float()), k
    # training.json keeps every model averaged in on the way: an older record's one, then this one
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps({"stages": {name: {"steps": 5, "seconds": 1.0, "machine": "cpu"}
                                               for name in ("vae", "text_towers", "t2v")},
                                    "averaged_with": "runs/older"}))
    ship(tiny_pipeline_dir, tmp_path / "soup2", previous=previous, average_with=tmp_path / "other")
    record = json.loads((tmp_path / "soup2" / "training.json").read_text())
    assert record["averages"] == [{"with": "runs/older", "after_stage": "t2v"},
                                  {"with": str(tmp_path / "other"), "after_stage": "t2v"}]
    image_model = build_random_pipeline("tiny", text="clip+t5", temporal=False, seed=1)
    image_model.save_pretrained(tmp_path / "image_model")
    with pytest.raises(ValueError, match="config differs"):
        ship(tiny_pipeline_dir, tmp_path / "refused", average_with=tmp_path / "image_model")
    assert not (tmp_path / "refused").exists()
