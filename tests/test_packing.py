"""Packed linear weights for CPU serving (gentron.packing): the same products as the plain layers, a model that
saves, loads, casts and copies like any other, and no silent backward."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gentron.model import GenTronTransformer
from gentron.packing import PackedLinear, is_packed, pack_linears, packing_available, unpack_linears

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN")


def _linear(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(64, 96).to(dtype).requires_grad_(False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [10, 1024])
def test_packed_product_is_the_plain_one(dtype, tokens):
    plain = _linear(dtype)
    x = torch.randn(2, tokens, 64).to(dtype)
    packed = PackedLinear(plain)
    with torch.no_grad():
        assert torch.allclose(packed(x).float(), plain(x).float(), atol=1e-5 if dtype == torch.float32 else 0)
        fused = PackedLinear(plain, "gelu")(x)
        assert torch.allclose(fused.float(), F.gelu(plain(x).float()), atol=1e-5 if dtype == torch.float32 else 2e-2)
        assert torch.allclose(packed(x.transpose(0, 1)).float(), plain(x.transpose(0, 1)).float(), atol=1e-2, rtol=1e-2)


def test_a_cpu_that_cannot_pack_bf16_multiplies_bf16_plainly(monkeypatch):
    import gentron.packing as packing

    monkeypatch.setattr(packing, "packs", lambda dtype: dtype != torch.bfloat16)  # an AVX2-only CPU
    plain = _linear(torch.bfloat16)
    x = torch.randn(2, 10, 64).to(torch.bfloat16)
    packed = PackedLinear(plain, "gelu")
    with torch.no_grad():
        assert torch.equal(packed(x), F.gelu(plain(x))) and packed.packed_bytes() == 0
        packed.float()  # the same layer cast back to fp32 packs again
        assert torch.allclose(packed(x.float()), F.gelu(plain.float()(x.float())), atol=1e-5)
        assert packed.packed_bytes() > 0


def _video_model():
    torch.manual_seed(0)
    model = GenTronTransformer.from_preset("tiny", temporal=True)
    with torch.no_grad():
        for p in model.parameters():  # live weights in every zero-initialised branch
            p.add_(0.05 * torch.randn(p.shape))
    return model.eval()


def _inputs(frames: int):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, frames, 8, 8, generator=g)
    text = torch.randn(2, 5, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    return x, torch.tensor([10, 700]), text, mask, torch.tensor([True, False])


@pytest.mark.parametrize("frames", [1, 3])  # one frame: temporal attention's values-only path (a packed tail)
def test_packed_model_predicts_what_the_plain_one_does(frames):
    plain = _video_model()
    packed = pack_linears(copy.deepcopy(plain))
    assert is_packed(packed) and not is_packed(plain)
    assert isinstance(packed.blocks[0].mlp.act, nn.Identity) and packed.blocks[0].mlp.fc1.activation == "gelu"
    with torch.no_grad():
        want, got = plain(*_inputs(frames)), packed(*_inputs(frames))
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_packed_model_saves_loads_casts_copies_and_edits_as_a_plain_one(tmp_path):
    plain = _video_model()
    packed = pack_linears(copy.deepcopy(plain))
    state, packed_state = plain.state_dict(), packed.state_dict()
    assert state.keys() == packed_state.keys()
    assert all(torch.equal(state[k], packed_state[k]) for k in state)
    packed.save_pretrained(tmp_path)
    reloaded = GenTronTransformer.from_pretrained(tmp_path).eval()
    other = pack_linears(GenTronTransformer.from_preset("tiny", temporal=True).eval())
    other.load_state_dict(state)  # new weights in a packed model: its packed copies are remade
    with torch.no_grad():
        want = plain(*_inputs(3))
        for model in (reloaded, other, copy.deepcopy(packed), unpack_linears(copy.deepcopy(packed))):
            assert torch.allclose(model(*_inputs(3)), want, atol=1e-5)
        x, t, text, mask, motion = _inputs(3)
        bf16, cast = copy.deepcopy(packed).to(torch.bfloat16), copy.deepcopy(plain).to(torch.bfloat16)
        assert torch.allclose(bf16(x.bfloat16(), t, text.bfloat16(), mask, motion).float(),
                              cast(x.bfloat16(), t, text.bfloat16(), mask, motion).float(), atol=0.1)
        for model in (plain, packed):  # an in-place edit reaches the packed product too
            model.blocks[0].mlp.fc1.weight.mul_(3)
        assert torch.allclose(packed(*_inputs(3)), plain(*_inputs(3)), atol=1e-5)


def test_with_gradients_a_packed_layer_computes_as_the_plain_one():
    plain = _linear()
    plain.requires_grad_(True)
    packed = PackedLinear(plain, "gelu")
    x = torch.randn(3, 64, requires_grad=True)
    packed(x).sum().backward()
    grad = plain.weight.grad.clone()
    plain.weight.grad = None
    F.gelu(plain(x)).sum().backward()
    assert torch.equal(grad, plain.weight.grad)


def test_load_pipeline_packs_on_the_cpu_unless_told_not_to(tiny_pipeline_dir):
    from gentron.loading import load_pipeline

    assert is_packed(load_pipeline(str(tiny_pipeline_dir)).transformer)
    assert not is_packed(load_pipeline(str(tiny_pipeline_dir), pack=False).transformer)
    towers = load_pipeline(str(tiny_pipeline_dir))
    assert not any(is_packed(t) for t in (towers.text_encoder, towers.text_encoder_2))
    int8 = load_pipeline(str(tiny_pipeline_dir), quantize="int8").transformer
    assert type(int8.blocks[0].attn.qkv) is nn.Linear  # quantized layers stay as quantize left them


@pytest.mark.parametrize("mode", ["int8", "bnb8"])
def test_a_packed_model_quantizes_as_the_plain_one(mode):
    from gentron.quantization import quantize_module

    plain = _video_model()
    want = quantize_module(copy.deepcopy(plain), mode)
    got = quantize_module(pack_linears(copy.deepcopy(plain)), mode)
    assert not is_packed(got)
    with torch.no_grad():
        assert torch.allclose(got(*_inputs(3)), want(*_inputs(3)), atol=1e-5)
