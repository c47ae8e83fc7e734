"""Rectified flow beside the paper's epsilon: the loss, the samplers, what a model folder says it predicts, and the
frame positions at the input."""
import copy

import numpy as np
import pytest
import torch

from gentron.diffusion import (ALL_SAMPLERS, FLOW_SAMPLERS, SAMPLERS, flow_loss, flow_scheduler, flow_sigmas,
                               make_scheduler, objective_of)
from gentron.guidance import guidance_weights, guided_noise
from gentron.model import GenTronTransformer
from gentron.pipeline import GenTronPipeline

from test_model import _inputs, _randomise

KW = dict(height=32, num_inference_steps=4)


class OnePoint(torch.nn.Module):
    """The exact velocity field of a data set holding the one point ``c``: v(x, σ) = (x − c) / σ."""

    def __init__(self, c: torch.Tensor, bias: float = 0.0):
        super().__init__()
        self.c, self.bias = c, bias

    def forward(self, x, t, text=None, mask=None, motion=None):
        sigma = (t.float() / 1000).clamp(min=1e-4).view(-1, *([1] * (x.dim() - 1)))
        return (x - self.c) / sigma + self.bias


def test_flow_loss_is_zero_at_the_true_velocity_and_grows_away_from_it():
    c = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x0 = c.expand(3, -1, -1, -1, -1)
    losses = [float(flow_loss(OnePoint(c, bias), x0, None, None, generator=torch.Generator().manual_seed(1),
                              shift=4.0)) for bias in (0.0, 0.1, -0.1, 0.3)]
    assert losses[0] < 1e-8
    assert losses[1] > losses[0] and losses[2] > losses[0] and losses[3] > losses[1]
    assert abs(losses[3] - 0.09) < 1e-4  # a constant error b costs b² per element


def test_shifted_sigmas_follow_sd3_and_move_toward_noise():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain, shifted = flow_sigmas(4096, g()), flow_sigmas(4096, g(), shift=8.0)
    assert torch.allclose(shifted, 8 * plain / (1 + 7 * plain))
    assert ((plain > 0) & (plain < 1)).all() and (shifted >= plain).all()
    assert (shifted > 0.9).float().mean() > 0.3 > (plain > 0.9).float().mean()


@pytest.mark.parametrize("sampler", sorted(FLOW_SAMPLERS))
def test_the_exact_velocity_of_one_point_samples_that_point_also_guided(sampler):
    c = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    scheduler = make_scheduler(sampler, dict(flow_scheduler(3.0).config))
    scheduler.set_timesteps(12)
    x = torch.randn(c.shape, generator=torch.Generator().manual_seed(1))
    branches, weights = guidance_weights(4.0, [1.5])  # every branch predicts the same field: guidance changes nothing
    for t in scheduler.timesteps:
        v = guided_noise(OnePoint(c), x, t.reshape(1), torch.zeros(3, 1, 1), None, branches, weights)
        x = scheduler.step(v, t, x).prev_sample
    assert torch.allclose(x, c, atol=1e-3)


def test_model_folders_say_what_they_predict():
    assert objective_of(flow_scheduler(8.0)) == "flow" and objective_of(dict(flow_scheduler(8.0).config)) == "flow"
    assert all(objective_of(make_scheduler(name)) == "epsilon" for name in SAMPLERS)
    assert all(objective_of(make_scheduler(name)) == "flow" for name in FLOW_SAMPLERS)
    assert set(ALL_SAMPLERS) == set(SAMPLERS) | set(FLOW_SAMPLERS)
    assert make_scheduler("flow-dpm++", dict(flow_scheduler(8.0).config)).config.flow_shift == 8.0


@pytest.fixture(scope="module")
def flow_pipeline(tiny_pipeline):
    transformer = _randomise(copy.deepcopy(tiny_pipeline.transformer))  # predicts something: previews differ
    return GenTronPipeline(**{**tiny_pipeline.components, "transformer": transformer, "scheduler": flow_scheduler(4.0)})


def test_a_flow_pipeline_samples_with_its_samplers_and_refuses_the_others(flow_pipeline, tiny_pipeline):
    assert flow_pipeline.objective == "flow" and flow_pipeline.default_sampler == "flow-euler"
    assert flow_pipeline.samplers == sorted(FLOW_SAMPLERS) and tiny_pipeline.samplers == sorted(SAMPLERS)
    for sampler in FLOW_SAMPLERS:
        a = flow_pipeline("a red circle moving left", frames=2, sampler=sampler, seed=3, **KW)
        b = flow_pipeline("a red circle moving left", frames=2, sampler=sampler, seed=3, **KW)
        assert a.frames.shape == (1, 2, 32, 32, 3) and np.array_equal(a.frames, b.frames)
    with pytest.raises(ValueError, match="flow-dpm\\+\\+, flow-euler for this flow model, got 'ddim'"):
        flow_pipeline("a red circle", sampler="ddim", **KW)
    with pytest.raises(ValueError, match="ddim, dpm\\+\\+, euler for this epsilon model, got 'flow-euler'"):
        tiny_pipeline("a red circle", sampler="flow-euler", **KW)


def test_flow_previews_are_the_clean_estimate(flow_pipeline, monkeypatch):
    """The preview of step i decodes x − σ_i·v, the prediction's clean latents."""
    seen, decoded = [], []
    decode = GenTronPipeline.decode
    monkeypatch.setattr(GenTronPipeline, "decode", lambda self, z: decoded.append(z.clone()) or decode(self, z))
    flow_pipeline("a red star", num_inference_steps=4, height=32, preview_every=2,
                  callback=lambda i, n, p: seen.append(p is not None))
    assert seen == [False, True, False, False] and len(decoded) == 2  # one preview, then the result
    assert decoded[0].shape == decoded[1].shape and not torch.equal(decoded[0], decoded[1])


def test_frame_embedding_starts_as_the_same_function_and_reads_frame_order():
    image = _randomise(GenTronTransformer.from_preset("tiny")).eval()
    plain = image.to_video()
    video = image.to_video(frame_embedding=True)
    x, t, text, mask = _inputs(b=2, f=3)
    with torch.no_grad():
        assert torch.equal(video(x, t, text, mask), plain(x, t, text, mask))  # zero-initialised at the input
        grown = plain.with_frame_embedding()
        assert torch.equal(grown(x, t, text, mask), plain(x, t, text, mask))
        torch.nn.init.normal_(video.frame_embedder.weight)
        still = torch.zeros_like(torch.ones(2, dtype=torch.bool))
        out = video(x, t, text, mask, still)  # motion-free: frames independent, but each knows its index
        repeated = video(x[:, :, :1].expand_as(x).contiguous(), t, text, mask, still)
    assert not torch.allclose(repeated[:, :, 0], repeated[:, :, 1])
    assert not torch.allclose(out, video(x, t, text, mask))
    with pytest.raises(ValueError, match="frame_embedding needs temporal layers"):
        GenTronTransformer.from_preset("tiny", frame_embedding=True)
    with pytest.raises(ValueError, match="with_frame_embedding needs a video model"):
        copy.deepcopy(image).with_frame_embedding()


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_epsilon_models_sample_exactly_as_the_paper_loop(tiny_pipeline, sampler):
    """An epsilon model's result is bit-identical to diffusers' loop written out: noise scaled by init_noise_sigma,
    scale_model_input, the batched MFG prediction, scheduler.step."""
    from gentron.guidance import stack_branches
    from gentron.text import encode_text

    pipe = GenTronPipeline(**{**tiny_pipeline.components,
                              "transformer": _randomise(copy.deepcopy(tiny_pipeline.transformer))})
    out = pipe("a red circle moving left", frames=2, sampler=sampler, seed=5, text_guidance=3.0, motion_guidance=1.5,
               **KW)
    with torch.no_grad():
        emb, mask = encode_text(pipe.towers, ["a red circle moving left", ""])
        branches, weights = guidance_weights(3.0, [1.5])
        text = pipe.transformer.prepare(*stack_branches((emb[:1], mask[:1]), (emb[1:], mask[1:]), branches))
        scheduler = make_scheduler(sampler, dict(pipe.scheduler.config))
        scheduler.set_timesteps(KW["num_inference_steps"])
        x = torch.randn((1, 4, 2, 16, 16), generator=torch.Generator().manual_seed(5)) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = guided_noise(pipe.transformer, scheduler.scale_model_input(x, t), t.reshape(1), text, None,
                               branches, weights)
            x = scheduler.step(eps, t, x).prev_sample
        reference = pipe.decode(x)
    assert np.array_equal(out.frames, reference)
