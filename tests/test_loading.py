"""Loading a model: every broken folder is a clear error naming the path; nothing unpickles."""
import json
import shutil

import pytest

from gentron.loading import ModelLoadError, load_pipeline


@pytest.fixture()
def copy(tmp_path, tiny_pipeline_dir):
    dst = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, dst)
    return dst


def test_good_folder_loads(copy):
    assert load_pipeline(str(copy)).transformer.config.temporal


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline(str(tmp_path / "nope"))


def test_not_a_pipeline_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_pipeline(str(tmp_path))


def test_truncated_safetensors(copy):
    weights = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_pipeline(str(copy))


def test_corrupt_safetensors_header(copy):
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_pipeline(str(copy))


def test_pickle_offered_as_checkpoint_is_refused_unread(copy):
    folder = copy / "transformer"
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not read")  # never unpickled
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_pipeline(str(copy))


def test_config_that_does_not_match_the_weights(copy):
    cfg_path = copy / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["hidden_size"] = 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="could not load model"):
        load_pipeline(str(copy))
