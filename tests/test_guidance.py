"""Guidance is the paper's formula, batched, and reduces correctly at its edge values."""
import pytest
import torch

from gentron.guidance import Branch, guidance_weights, guided_noise, stack_branches
from gentron.model import GenTronTransformer

from test_model import _inputs, _randomise


@pytest.fixture(scope="module")
def setup():
    model = _randomise(GenTronTransformer.from_preset("tiny", temporal=True)).eval()
    x, t, text, mask = _inputs(b=2, f=3)
    g = torch.Generator().manual_seed(3)
    uncond = (torch.randn(2, 5, 32, generator=g), torch.ones(2, 5, dtype=torch.bool))
    return model, x, t, (text, mask), uncond


def _branch(model, x, t, text, motion):
    with torch.no_grad():
        return model(x, t, text[0], text[1], torch.full((x.shape[0],), motion))


def _guided(model, x, t, cond, uncond, branches, weights):
    """guided_noise on the stacked raw text, checked against the same step on the text prepared once (as the
    pipeline samples): the prepared keys and values are the ones each block would compute."""
    text, mask = stack_branches(cond, uncond, branches)
    raw = guided_noise(model, x, t, text, mask, branches, weights)
    prepared = guided_noise(model, x, t, model.prepare(text, mask, timesteps=t), None, branches, weights)
    assert torch.allclose(prepared, raw, atol=1e-6)
    return raw


@pytest.mark.parametrize("lt,lm", [(7.5, 1.0), (7.5, 1.3), (3.0, 0.0), (1.0, 2.0), (0.0, 0.5)])
def test_mfg_matches_paper_formula_one_branch_at_a_time(setup, lt, lm):
    model, x, t, cond, uncond = setup
    e_c_m = _branch(model, x, t, cond, True)
    e_u_m = _branch(model, x, t, uncond, True)
    e_u_u = _branch(model, x, t, uncond, False)
    expected = e_u_u + lt * (e_c_m - e_u_m) + lm * (e_u_m - e_u_u)
    branches, weights = guidance_weights(lt, [lm, lm])
    with torch.no_grad():
        got = _guided(model, x, t, cond, uncond, branches, weights)
    assert torch.allclose(got, expected, atol=1e-5)


def test_edge_values_reduce(setup):
    model, x, t, cond, uncond = setup
    e_c_m = _branch(model, x, t, cond, True)
    e_u_m = _branch(model, x, t, uncond, True)
    e_u_u = _branch(model, x, t, uncond, False)
    cases = {(1.0, 1.0): e_c_m,  # no guidance at all: the conditional prediction
             (0.0, 0.0): e_u_u,  # all off: unconditional, motion-free
             (0.0, 1.0): e_u_m}  # text off, motion on
    for (lt, lm), expected in cases.items():
        branches, weights = guidance_weights(lt, [lm, lm])
        with torch.no_grad():
            assert torch.allclose(_guided(model, x, t, cond, uncond, branches, weights), expected, atol=1e-5)
    # λM = 1 is plain CFG with motion, and its motion-free branch is not even run
    branches, weights = guidance_weights(7.5, [1.0])
    assert Branch(False, False) not in branches and len(branches) == 2
    with torch.no_grad():
        got = _guided(model, x, t, cond, uncond, branches, weights)
    assert torch.allclose(got, e_u_m + 7.5 * (e_c_m - e_u_m), atol=1e-5)


def test_cfg_for_images(setup):
    model, x, t, cond, uncond = setup
    x1 = x[:, :, :1]
    e_c, e_u = _branch(model, x1, t, cond, True), _branch(model, x1, t, uncond, True)
    branches, weights = guidance_weights(4.0, None)
    with torch.no_grad():
        got = _guided(model, x1, t, cond, uncond, branches, weights)
    assert torch.allclose(got, e_u + 4.0 * (e_c - e_u), atol=1e-5)


def test_per_sample_motion_scales(setup):
    """One batch compares several λM: each sample equals its own single-λM run."""
    model, x, t, cond, uncond = setup
    branches, weights = guidance_weights(7.5, [0.0, 2.0])
    with torch.no_grad():
        both = _guided(model, x, t, cond, uncond, branches, weights)
        for i, lm in enumerate((0.0, 2.0)):
            b1, w1 = guidance_weights(7.5, [lm])
            one = _guided(model, x[i:i + 1], t[i:i + 1], (cond[0][i:i + 1], cond[1][i:i + 1]),
                          (uncond[0][i:i + 1], uncond[1][i:i + 1]), b1, w1)
            assert torch.allclose(both[i:i + 1], one, atol=1e-5)


def test_branches_run_as_one_forward(setup):
    model, x, t, cond, uncond = setup
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    branches, weights = guidance_weights(7.5, [1.3, 1.3])
    with torch.no_grad():
        guided_noise(model, x, t, *stack_branches(cond, uncond, branches), branches, weights)
    handle.remove()
    assert calls == [3 * x.shape[0]]
