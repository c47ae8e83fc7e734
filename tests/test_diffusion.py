"""The loss and the schedule: plain epsilon MSE, and Min-SNR weighting as a pure reweighting of it."""
import torch

from gentron.diffusion import NoiseSchedule, diffusion_loss
from gentron.model import GenTronTransformer

from test_model import _inputs, _randomise


def test_min_snr_is_a_reweighting_of_the_same_loss():
    model = _randomise(GenTronTransformer.from_preset("tiny")).eval()
    x, _, text, mask = _inputs(b=2, f=1)
    schedule = NoiseSchedule()
    with torch.no_grad():
        plain = diffusion_loss(model, schedule, x, text, mask, generator=torch.Generator().manual_seed(0))
        huge = diffusion_loss(model, schedule, x, text, mask, generator=torch.Generator().manual_seed(0),
                              min_snr_gamma=1e12)
        weighted = diffusion_loss(model, schedule, x, text, mask, generator=torch.Generator().manual_seed(0),
                                  min_snr_gamma=5.0)
    assert torch.allclose(plain, huge)  # gamma above every SNR: weight 1 everywhere
    assert weighted <= plain + 1e-7  # weights min(SNR, 5)/SNR are at most 1


def test_q_sample_follows_the_linear_schedule():
    schedule = NoiseSchedule()
    a = schedule.scheduler.alphas_cumprod
    assert abs(schedule.scheduler.betas[0] - 1e-4) < 1e-9 and abs(schedule.scheduler.betas[-1] - 0.02) < 1e-9
    x0, noise = torch.ones(1, 4, 1, 2, 2), torch.zeros(1, 4, 1, 2, 2)
    t = torch.tensor([500])
    assert torch.allclose(schedule.q_sample(x0, noise, t), a[500].sqrt() * x0)


def test_high_noise_power_raises_only_the_weights_of_steps_below_snr_one():
    model = _randomise(GenTronTransformer.from_preset("tiny")).eval()
    x, _, text, _ = _inputs(b=6, f=1)
    mask = torch.ones(6, 5, dtype=torch.bool)
    schedule = NoiseSchedule()

    def loss(**kw):
        return diffusion_loss(model, schedule, x, text, mask, generator=torch.Generator().manual_seed(1), **kw)

    with torch.no_grad():
        g = torch.Generator().manual_seed(1)  # the draws diffusion_loss makes, in its order
        noise = torch.randn(x.shape, generator=g)
        t = schedule.sample_timesteps(x.shape[0], g)
        per_sample = (model(schedule.q_sample(x, noise, t), t, text, mask) - noise).square().flatten(1).mean(1)
        a = schedule.scheduler.alphas_cumprod[t]
        snr = a / (1 - a)
        assert torch.allclose(loss(high_noise_power=0.0), per_sample.mean())
        # p = 1: x0 weighted by max(SNR, 1) (truncated SNR), i.e. epsilon weighted by max(1, 1/SNR)
        assert torch.allclose(loss(high_noise_power=1.0), (per_sample * (1 / snr).clamp(min=1)).mean(), rtol=1e-5)
        both = (per_sample * snr.clamp(max=5.0) / snr * (1 / snr).clamp(min=1) ** 0.5).mean()
        assert torch.allclose(loss(min_snr_gamma=5.0, high_noise_power=0.5), both, rtol=1e-5)
    assert (snr < 1).any() and (snr > 1).any()  # the draw covers both sides of SNR = 1
