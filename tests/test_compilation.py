"""torch.compile for serving: same samples as eager, the same module and weights, opt-in by flag or env."""
import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from gentron.compilation import compile_requested, is_compiled
from gentron.factory import build_random_pipeline
from gentron.loading import load_pipeline
from gentron.model import GenTronTransformer

from test_model import _randomise


@pytest.mark.slow  # end to end
def test_compiled_pipeline_samples_like_eager(tmp_path):
    pipe = build_random_pipeline("tiny", temporal=True, seed=3)
    _randomise(pipe.transformer)  # fresh adaLN-Zero predicts zero noise: nothing to compare
    pipe.save_pretrained(tmp_path)
    eager = load_pipeline(str(tmp_path))
    compiled = load_pipeline(str(tmp_path), compile=True)
    kw = dict(frames=2, height=32, num_inference_steps=3, seed=5)  # MFG: moving and motion-free rows in one batch
    a = eager("a red circle moving left", **kw).frames
    b = compiled("a red circle moving left", **kw).frames
    assert isinstance(compiled.transformer, GenTronTransformer)  # compiled in place: config, save, device as before
    assert is_compiled(compiled.transformer) and not is_compiled(eager.transformer)
    for k, v in eager.transformer.state_dict().items():
        assert torch.equal(v, compiled.transformer.state_dict()[k]), k
    assert a.std() > 5  # a real picture of noise, not a constant
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # float reassociation moves a pixel by a level or two
    # a prompt of another length is the same shape to the compiled model (text padded to the towers' max_length,
    # masked): no new graph, and still eager's picture
    graphs = counters["stats"]["unique_graphs"]
    longer = "two blue squares above a green triangle"
    c = compiled(longer, **kw).frames
    assert counters["stats"]["unique_graphs"] == graphs
    assert np.abs(eager(longer, **kw).frames.astype(int) - c.astype(int)).max() <= 2
    compiled(longer, **{**kw, "num_inference_steps": 4})  # nor another step count (no timestep table compiled)
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("flag,env,expected", [(True, "", True), (False, "1", False), (None, "1", True),
                                               (None, "yes", True), (None, "0", False), (None, "", False)])
def test_compile_requested_by_flag_else_env(monkeypatch, flag, env, expected):
    monkeypatch.setenv("GENTRON_COMPILE", env)
    assert compile_requested(flag) is expected


def test_studio_and_loader_compile_only_when_asked(tiny_pipeline_dir, tmp_path):
    from gentron.studio import Studio

    compiled = Studio(str(tiny_pipeline_dir), device="cpu", outputs_dir=tmp_path, compile=True).pipeline("none")
    plain = Studio(str(tiny_pipeline_dir), device="cpu", outputs_dir=tmp_path).pipeline("none")
    assert is_compiled(compiled.transformer)  # compiles lazily, on the first request
    assert not is_compiled(plain.transformer)
