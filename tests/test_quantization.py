"""Every quantization mode runs on the CPU, shrinks the weights, and stays close to full precision."""
import copy

import numpy as np
import pytest
import torch

from gentron.factory import build_random_pipeline
from gentron.model import GenTronTransformer
from gentron.quantization import (MODES, available_modes, quantize_module, quantize_on_load, quantize_pipeline,
                                  weight_bytes)

from test_model import _inputs, _randomise


@pytest.fixture(scope="module")
def model():
    # width 64 so that 4-bit (in_features % 64) applies to most layers
    return _randomise(GenTronTransformer.from_preset("tiny", hidden_size=64, mlp_hidden_size=128, text_dim=64,
                                                     temporal=True)).eval()


@pytest.mark.parametrize("mode,tol,shrink", [("bf16", 0.05, 0.55), ("int8", 0.05, 0.5), ("int8-dynamic", 0.1, 0.5),
                                             ("bnb8", 0.1, 0.5), ("bnb4", 0.3, 0.5)])
def test_modes_run_shrink_and_stay_close(model, mode, tol, shrink):
    assert mode in available_modes()
    x, t, _, mask = _inputs(b=2, f=2)
    text = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x, t, text, mask)
        q = quantize_module(copy.deepcopy(model), mode)
        out = q(x, t, text, mask).float()
    rel = (out - ref).norm() / ref.norm()
    assert rel < tol, f"{mode}: relative error {rel:.3f}"
    assert weight_bytes(q) < shrink * weight_bytes(model) + 40_000  # embeddings/out layers stay full precision


def test_unknown_mode_is_a_clear_error(model):
    with pytest.raises(ValueError, match="quantize must be one of"):
        quantize_module(model, "fp4")
    assert set(available_modes()) <= set(MODES)


def test_pipeline_quantized_end_to_end():
    pipe = build_random_pipeline("tiny", seed=0)
    quantize_pipeline(pipe, "bf16")
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    out = pipe("a red circle moving left", frames=2, height=32, num_inference_steps=3, seed=0)
    assert out.frames.shape == (1, 2, 32, 32, 3) and np.isfinite(out.frames).all()


def test_default_mode_follows_the_hardware(monkeypatch, tmp_path):
    """bf16 where the device multiplies it natively (CUDA, AMX / AVX512-BF16 CPUs), fp32 elsewhere; the CLI's
    generate starts there, eval judges fp32 weights unless told."""
    from gentron import cli, quantization

    assert quantization.default_mode("cuda") == "bf16"
    monkeypatch.setattr(quantization, "native_bf16", lambda device="cpu": False)
    assert quantization.default_mode("cpu") == "none"
    monkeypatch.setattr(quantization, "native_bf16", lambda device="cpu": True)
    assert quantization.default_mode("cpu") == "bf16"
    seen = []
    monkeypatch.setattr(cli, "cmd_generate", lambda args: seen.append(("generate", args.quantize)) or 0)
    monkeypatch.setattr(cli, "cmd_eval", lambda args: seen.append(("eval", args.quantize)) or 0)
    cli.main(["generate", "--prompt", "a red circle", "--out", str(tmp_path / "x.png")])
    cli.main(["eval", "--out-dir", str(tmp_path)])
    cli.main(["generate", "--prompt", "a red circle", "--out", str(tmp_path / "y.png"), "--quantize", "int8"])
    assert seen == [("generate", "bf16"), ("eval", "none"), ("generate", "int8")]
    from gentron.studio import Studio
    assert Studio(model="random:tiny").precision == "bf16"  # the app's dropdown starts there


def test_text_tower_quantized_on_load_through_transformers_config():
    """The CUDA path (from_pretrained with transformers' BitsAndBytesConfig) also runs on the CPU for a tower
    (8-bit here: bitsandbytes' CPU 4-bit kernel wants widths that are multiples of 64, the tiny tower's aren't)."""
    mode, tol = "bnb8", 0.1
    pytest.importorskip("bitsandbytes")
    tower = build_random_pipeline("tiny", temporal=False, seed=0).text_encoder
    q = quantize_on_load(tower, mode)
    assert any(type(m).__name__ == "Linear8bitLt" for m in q.modules())
    assert weight_bytes(q) < 0.6 * weight_bytes(tower)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert (q(ids).last_hidden_state - tower(ids).last_hidden_state).abs().max() < tol


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal of diffusers' config")
def test_transformer_quantized_on_load_needs_a_gpu():
    pytest.importorskip("bitsandbytes")
    with pytest.raises(RuntimeError, match="GPU"):
        quantize_on_load(build_random_pipeline("tiny", temporal=False, seed=0).transformer, "bnb8")


def test_bnb_on_cuda_pipelines_goes_through_the_loading_configs(monkeypatch):
    """On CUDA, --quantize bnb8 reloads each part with from_pretrained(quantization_config=...); on the CPU
    it swaps bitsandbytes' layers in place (the config route refuses to run there)."""
    import gentron.quantization as q

    pipe = build_random_pipeline("tiny", temporal=False, seed=0)
    reloaded = []
    monkeypatch.setattr(q, "_on_cuda", lambda p: True)
    monkeypatch.setattr(q, "quantize_on_load", lambda module, mode: reloaded.append((type(module).__name__, mode))
                        or copy.deepcopy(module))
    q.quantize_pipeline(pipe, "bnb8")
    assert reloaded == [("GenTronTransformer", "bnb8"), ("CLIPTextModel", "bnb8"), ("T5EncoderModel", "bnb8")]
    monkeypatch.setattr(q, "_on_cuda", lambda p: False)
    reloaded.clear()
    q.quantize_pipeline(pipe, "bf16")
    assert reloaded == [] and pipe.transformer.dtype == torch.bfloat16


@pytest.mark.parametrize("mode", ["int8", "bnb8"])
def test_quantized_video_model_draws_images(mode):
    """A T2V model on one frame skips temporal attention's q and k; quantized layers must still work there."""
    if mode not in available_modes():
        pytest.skip(f"{mode} is not installed")
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    x, t, text, mask = _inputs(f=1)
    with torch.no_grad():
        reference = model(x, t, text, mask)
        out = quantize_module(copy.deepcopy(model), mode)(x, t, text, mask)
    assert out.shape == reference.shape and (out - reference).abs().max() < 0.2


@pytest.mark.parametrize("mode", ["int8", "bnb8", "bnb4"])
def test_layers_the_class_keeps_in_fp32_stay_full_precision(mode):
    """T5's feed-forward output ``wo`` (T5's ``_keep_in_fp32_modules``) is left alone, as transformers' own
    bitsandbytes path leaves it; the other linears are quantized."""
    from gentron.text import build_t5_tower, build_word_tokenizer
    from gentron.training.text_towers import shapes_vocabulary

    torch.manual_seed(0)
    encoder = build_t5_tower(build_word_tokenizer(shapes_vocabulary(), "t5"), width=64, layers=1, heads=2).encoder
    assert "wo" in encoder._keep_in_fp32_modules
    quantize_module(encoder, mode)
    linears = {name: type(m) for name, m in encoder.named_modules() if name.endswith((".wo", ".wi", ".q"))}
    assert linears and all(isinstance(encoder.get_submodule(n).weight, torch.nn.Parameter)
                           and type(encoder.get_submodule(n).weight) is torch.nn.Parameter
                           and encoder.get_submodule(n).weight.dtype == torch.float32
                           for n in linears if n.endswith(".wo"))
    assert all(t is not torch.nn.Linear or type(encoder.get_submodule(n).weight) is not torch.nn.Parameter
               for n, t in linears.items() if not n.endswith(".wo"))


def test_text_towers_take_their_own_mode(tiny_pipeline_dir):
    from gentron.loading import load_pipeline

    plain = load_pipeline(str(tiny_pipeline_dir))
    split = load_pipeline(str(tiny_pipeline_dir), quantize="bf16", quantize_text="none")
    assert split.transformer.dtype == torch.bfloat16
    for part in ("text_encoder", "text_encoder_2"):
        assert weight_bytes(getattr(split, part)) == weight_bytes(getattr(plain, part))  # towers left as they were
    towers_only = load_pipeline(str(tiny_pipeline_dir), quantize="none", quantize_text="bf16")
    assert towers_only.transformer.dtype == torch.float32 and towers_only.text_encoder.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="quantize_text: quantize must be one of"):
        load_pipeline(str(tiny_pipeline_dir), quantize="bf16", quantize_text="fp3")
