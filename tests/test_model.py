"""Contract tests of the transformer: shapes, zero-init, T2I -> T2V, masks, save/load."""
import torch
import pytest

from gentron.config import PRESETS, get_preset
from gentron.model import GenTronTransformer


def _inputs(b=2, f=3, text_dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, f, 8, 8, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    text = torch.randn(b, 5, text_dim, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]][:b], dtype=torch.bool)
    return x, t, text, mask


def _randomise(model, seed=1):
    """Perturb every parameter so zero-initialised branches are live (a trained-like model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_adaln_zero_init_predicts_zero():
    model = GenTronTransformer.from_preset("tiny", temporal=True)
    x, t, text, mask = _inputs()
    out = model(x, t, text, mask)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: blocks are identities, output layer is zero


def test_image_input_is_one_frame_video():
    model = _randomise(GenTronTransformer.from_preset("tiny"))
    x, t, text, mask = _inputs(f=1)
    assert torch.allclose(model(x[:, :, 0], t, text, mask), model(x, t, text, mask)[:, :, 0])


def test_one_frame_temporal_attention_is_the_full_computation():
    """The one-frame shortcut (proj of the values) equals scaled_dot_product_attention over that one key."""
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    layer = model.blocks[0].temporal
    x = torch.randn(6, 16, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    frame_pos = torch.randn(1, model.config.hidden_size)
    with torch.no_grad():
        full = layer.attn((layer.norm(x) + frame_pos).reshape(-1, 1, x.shape[-1])).reshape(x.shape)
        assert torch.allclose(layer(x, 1, frame_pos, None), full, atol=1e-6)
        assert torch.allclose(layer(x, 1, frame_pos, torch.zeros(6, dtype=torch.bool)), full, atol=1e-6)


@pytest.mark.parametrize("text_conditioning", ["cross_attention", "adaln_zero", "cross_attention_pooled"])
@pytest.mark.parametrize("modulation", ["adaln_zero", "adaln_single"])
def test_t2v_from_t2i_reproduces_every_frame(text_conditioning, modulation):
    image = _randomise(GenTronTransformer.from_preset("tiny", text_conditioning=text_conditioning,
                                                     timestep_modulation=modulation)).eval()
    video = image.to_video().eval()
    assert video.config.temporal and video.count_parameters() > image.count_parameters()
    x, t, text, mask = _inputs(f=4)
    with torch.no_grad():
        per_frame = torch.stack([image(x[:, :, i], t, text, mask) for i in range(4)], dim=2)
        for motion in (True, False):
            out = video(x, t, text, mask, torch.full((2,), motion))
            assert torch.equal(out, per_frame) or (out - per_frame).abs().max() < 1e-6


def test_identity_mask_makes_frames_independent():
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    x, t, text, mask = _inputs(f=4)
    x2 = x.clone()
    x2[:, :, 3] += 1.0  # change only the last frame
    off = torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        a, b = model(x, t, text, mask, off), model(x2, t, text, mask, off)
        assert torch.allclose(a[:, :, :3], b[:, :, :3], atol=1e-6)  # other frames unaffected
        on = torch.ones(2, dtype=torch.bool)
        a, b = model(x, t, text, mask, on), model(x2, t, text, mask, on)
        assert (a[:, :, :3] - b[:, :, :3]).abs().max() > 1e-4  # with motion, frames talk


def test_motion_switch_is_per_sample():
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    x, t, text, mask = _inputs(f=3)
    with torch.no_grad():
        mixed = model(x, t, text, mask, torch.tensor([True, False]))
        on = model(x, t, text, mask, torch.tensor([True, True]))
        off = model(x, t, text, mask, torch.tensor([False, False]))
    assert torch.allclose(mixed[0], on[0], atol=1e-6) and torch.allclose(mixed[1], off[1], atol=1e-6)


def test_pooled_text_beside_cross_attention_is_an_added_path():
    """cross_attention_pooled is cross-attention plus the pooled caption in adaLN: with the pooled path's output
    zeroed it computes exactly what the cross-attention model with the same weights does, and live, the caption
    moves every block's modulation too."""
    pooled = _randomise(GenTronTransformer.from_preset("tiny", temporal=True,
                                                        text_conditioning="cross_attention_pooled")).eval()
    plain = GenTronTransformer.from_preset("tiny", temporal=True).eval()
    missing, unexpected = plain.load_state_dict(pooled.state_dict(), strict=False)
    assert not missing and all(k.startswith("pooled_text_embedder.") for k in unexpected) and unexpected
    x, t, text, mask = _inputs(f=3)
    with torch.no_grad():
        live = pooled(x, t, text, mask)
        c_live = pooled.conditioning(t, pooled.prepare(text, mask), 3).blocks
        pooled.pooled_text_embedder[-1].weight.zero_()
        pooled.pooled_text_embedder[-1].bias.zero_()
        assert torch.allclose(pooled(x, t, text, mask), plain(x, t, text, mask), atol=1e-6)
        c_off = pooled.conditioning(t, pooled.prepare(text, mask), 3).blocks
    assert (live - plain(x, t, text, mask)).abs().max() > 1e-4 and (c_live - c_off).abs().max() > 1e-3


def test_text_padding_mask_polarity():
    """Tokens under a False mask must not matter; tokens under True must."""
    model = _randomise(GenTronTransformer.from_preset("tiny")).eval()
    x, t, text, mask = _inputs(b=1, f=1)
    changed_pad, changed_real = text.clone(), text.clone()
    changed_pad[:, 4] += 5.0  # masked out
    changed_real[:, 0] += 5.0  # attended
    with torch.no_grad():
        base = model(x, t, text, mask)
        assert torch.allclose(base, model(x, t, changed_pad, mask), atol=1e-6)
        assert (base - model(x, t, changed_real, mask)).abs().max() > 1e-4


@pytest.mark.parametrize("overrides", [dict(), dict(text_conditioning="adaln_zero"),
                                       dict(text_conditioning="cross_attention_pooled"),
                                       dict(timestep_modulation="adaln_single")])
def test_request_prepared_once_gives_the_same_noise(overrides):
    """A sampler prepares a request once: the caption projection, each block's keys and values, and the timestep
    table of all its steps. Every step's forward on it equals the forward on the raw text and timestep."""
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True, **overrides))
    x, t, text, mask = _inputs(f=3)
    steps = torch.tensor([999, 751, int(t[0]), 250, int(t[1]), 1])
    with torch.no_grad():
        prepared = model.prepare(text, mask, timesteps=steps)
        assert len(prepared.keys_values) == (0 if overrides.get("text_conditioning") == "adaln_zero" else 2)
        assert (prepared.timesteps.modulations is None) == bool(overrides)  # tabulated for GenTron's own blocks
        for step_t in (t, t.flip(0), steps[:2], steps[1:2].expand(2)):  # the last: one shared row, fused adaLN
            for motion in (torch.tensor([True, False]), None):
                assert torch.allclose(model(x, step_t, prepared, None, motion), model(x, step_t, text, mask, motion),
                                      atol=1e-6)
        text_only = model.prepare(text, mask)  # no timesteps: each step embeds its own
        assert torch.allclose(model(x, t, text_only), model(x, t, text, mask), atol=1e-6)
        with pytest.raises(ValueError, match="prepared for"):
            model(x, torch.tensor([500, 500]), prepared)
    with pytest.raises(ValueError, match="text_mask=None"):
        model(x, t, prepared, mask)


def test_shared_modulation_is_the_layer_norms_affine():
    """One (shift, scale) for every sample (a sampling step's branches share the timestep): norm_modulate folds them
    into the LayerNorm. The same in fp32; in bf16 it rounds once, so it is nearer the fp32 result than the two-pass
    form; per-sample parameters take the two-pass form."""
    from torch import nn
    from gentron.layers import modulate, norm_modulate

    g = torch.Generator().manual_seed(0)
    norm = nn.LayerNorm(64, elementwise_affine=False, eps=1e-6)
    x = torch.randn(6, 16, 64, generator=g) * 3 + 1
    shift, scale = torch.randn(2, 1, 1, 64, generator=g).unbind(0)
    exact = modulate(norm(x), shift, scale)
    assert torch.allclose(norm_modulate(norm, x, shift, scale), exact, atol=1e-5)
    xb, sb, cb = x.bfloat16(), shift.bfloat16(), scale.bfloat16()
    fused = (norm_modulate(norm, xb, sb, cb).float() - exact).abs().mean()
    apart = (modulate(norm(xb), sb, cb).float() - exact).abs().mean()
    assert fused < apart
    per_sample = torch.randn(2, 6, 1, 64, generator=g).unbind(0)
    assert torch.equal(norm_modulate(norm, x, *per_sample), modulate(norm(x), *per_sample))


def test_batched_equals_unbatched():
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    x, t, text, mask = _inputs(f=2)
    motion = torch.tensor([True, False])
    with torch.no_grad():
        both = model(x, t, text, mask, motion)
        for i in range(2):
            one = model(x[i:i + 1], t[i:i + 1], text[i:i + 1], mask[i:i + 1], motion[i:i + 1])
            assert torch.allclose(both[i:i + 1], one, atol=1e-5)


def test_any_resolution_and_bf16_autocast():
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    _, t, text, mask = _inputs()
    for h, w in ((8, 8), (12, 16)):
        x = torch.randn(2, 4, 2, h, w)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, text, mask)
        assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="multiples of patch_size"):
        model(torch.randn(1, 4, 1, 7, 8), t[:1], text[:1], mask[:1])


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True))
    x, t, text, mask = _inputs()
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        for block in model.blocks:
            block.gradient_checkpointing = ckpt
        model(x, t, text, mask).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("rope", [False, True])
def test_save_load_round_trip(tmp_path, rope):
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True, rope=rope)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = GenTronTransformer.from_pretrained(tmp_path).eval()
    x, t, text, mask = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, text, mask), loaded(x, t, text, mask))


def test_presets_and_validation():
    with torch.device("meta"):
        g2 = GenTronTransformer.from_preset("G/2")
    # the paper's G/2 text-to-image model has 3.08B parameters
    assert abs(g2.count_parameters() / 3.08e9 - 1) < 0.05
    assert PRESETS["XL/2"].depth == 28 and PRESETS["XL/2"].hidden_size == 1152 and PRESETS["XL/2"].mlp_hidden_size == 4608
    with pytest.raises(ValueError, match="divisible by num_heads"):
        get_preset("tiny", num_heads=3)
    with pytest.raises(ValueError, match="text_conditioning must be one of"):
        get_preset("tiny", text_conditioning="film")
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="multiple of 4"):
        get_preset("tiny", hidden_size=36, num_heads=2, rope=True)  # head size 18: no whole pairs per axis


def test_with_rope_computes_the_same_until_its_rates_grow():
    """Rotary positions join a trained model at rate 0: the same output exactly, and a gradient to grow them."""
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    rope = model.with_rope().eval()
    assert rope.config.rope and rope.count_parameters() == model.count_parameters() + 2 * 2  # depth x heads rates
    x, t, text, mask = _inputs(f=3)
    motion = torch.tensor([True, False])
    with torch.no_grad():
        assert torch.equal(rope(x, t, text, mask, motion), model(x, t, text, mask, motion))
    rope(x, t, text, mask, motion).square().mean().backward()
    assert all(b.rope_rate.grad.abs().min() > 0 for b in rope.blocks)
    with torch.no_grad():
        for b in rope.blocks:
            b.rope_rate.fill_(1.0)
        assert not torch.allclose(rope(x, t, text, mask, motion), model(x, t, text, mask, motion), atol=1e-4)
    with pytest.raises(ValueError, match="already has rotary"):
        rope.with_rope()


def test_rotary_scores_depend_on_the_offset_alone():
    """A query at p and a key at r score the same as at p + s and r + s, for any shift s of the grid."""
    from gentron.layers import rope_angles, rotate

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, 16, generator=g, dtype=torch.float64)
    angles = rope_angles(16, 6, 6).double()  # (36, 8), row-major over a 6 x 6 grid

    def score(p, r):  # p, r: (row, col)
        cq, sq = angles[p[0] * 6 + p[1]].cos(), angles[p[0] * 6 + p[1]].sin()
        ck, sk = angles[r[0] * 6 + r[1]].cos(), angles[r[0] * 6 + r[1]].sin()
        return float((rotate(q, cq, sq) * rotate(k, ck, sk)).sum())

    base = score((1, 0), (0, 2))
    for shift in ((0, 1), (2, 0), (3, 2)):
        assert score((1 + shift[0], shift[1]), (shift[0], 2 + shift[1])) == pytest.approx(base, rel=1e-6)  # angles are float32
    assert score((1, 0), (0, 2)) != pytest.approx(score((1, 2), (0, 0)), abs=1e-3)  # left and right differ


def test_temporal_attention_sees_frame_order(monkeypatch):
    """With motion on, reversing the frames must not just reverse the output: the frame positions reach temporal
    attention. Without them attention is blind to order (a permutation of the frames permutes the output), which
    the second half shows, so the first half can fail."""
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    x, t, text, mask = _inputs(f=4)
    on = torch.ones(2, dtype=torch.bool)

    def gap() -> float:
        with torch.no_grad():
            return (model(x.flip(2), t, text, mask, on) - model(x, t, text, mask, on).flip(2)).abs().max().item()

    assert gap() > 1e-3
    embed = model.embed
    monkeypatch.setattr(model, "embed", lambda latents: (lambda x, grid, pos: (x, grid, torch.zeros_like(pos)))(
        *embed(latents)))
    assert gap() < 1e-5  # positions dropped: reversed in, exactly reversed out
