"""The paper's diffusion: epsilon-prediction on a linear beta schedule of 1000 steps.

Noising and the loss live here, outside the network; sampling uses diffusers' schedulers built
from the same schedule, so training and sampling agree by construction.
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                prediction_type="epsilon")
SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict]] = {  # name -> (scheduler class, its settings)
    "ddim": (DDIMScheduler, dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                 timestep_spacing="trailing")),
    "dpm++": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                timestep_spacing="trailing")),
    "euler": (EulerDiscreteScheduler, dict(timestep_spacing="trailing")),
}


def sampler_name(scheduler: SchedulerMixin) -> str:
    """The name of the sampler a pipeline folder ships (its scheduler's class): what that model samples with
    when no sampler is asked for. A class this engine does not offer falls back to 'dpm++' on its schedule."""
    return next((name for name, (cls, _) in SAMPLERS.items() if type(scheduler) is cls), "dpm++")


def make_scheduler(name: str, config: dict | None = None) -> SchedulerMixin:
    """A sampler by name ('ddim', 'dpm++', 'euler'), on the training schedule (or ``config``'s)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    cls, settings = SAMPLERS[name]
    scheduler = cls(**SCHEDULE, **settings)
    if config is not None:  # keep a loaded pipeline's schedule, switch only the solver
        keep = {k: config[k] for k in SCHEDULE if k in config}
        scheduler = type(scheduler).from_config({**scheduler.config, **keep})
    return scheduler


class NoiseSchedule:
    """q(x_t | x_0) for the linear-beta schedule."""

    def __init__(self, num_train_timesteps: int = 1000):
        self.scheduler = DDPMScheduler(**{**SCHEDULE, "num_train_timesteps": num_train_timesteps})
        self.num_train_timesteps = num_train_timesteps

    def q_sample(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator).to(device)


def diffusion_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, text: torch.Tensor,
                   text_mask: torch.Tensor, motion: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, min_snr_gamma: float | None = None,
                   high_noise_power: float = 0.0) -> torch.Tensor:
    """The epsilon-prediction MSE of DDPM, averaged over the batch.

    x0: clean latents (B, C, F, H, W); the noise and timesteps are drawn from ``generator``.
    ``min_snr_gamma`` weights each sample by min(SNR, γ)/SNR (Min-SNR, Hang et al. 2023): the
    low-noise steps, whose tiny noise is hard to fit and says little about the picture, stop
    dominating the gradient, and the high-noise steps that decide layout and colour get their share.
    ``high_noise_power`` p multiplies that by max(1, 1/SNR)^p: in x0 terms the weight of a step with
    SNR < 1 goes from SNR (epsilon MSE) to SNR^(1-p), and p = 1 is the truncated-SNR weighting max(SNR, 1)
    of Salimans & Ho (2022), which v-prediction implies. Where the picture is almost all noise (t > 800 here)
    the epsilon MSE is 100x smaller than at t = 200, so what is decided only there (which way an object
    travels, which object is on the left) gets almost no gradient under it.
    The network still predicts epsilon; only the weighting of the loss changes.
    """
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    t = schedule.sample_timesteps(x0.shape[0], generator, x0.device)
    eps = model(schedule.q_sample(x0, noise, t), t, text, text_mask, motion)
    per_sample = (eps.float() - noise.float()).square().flatten(1).mean(1)
    if min_snr_gamma is None and not high_noise_power:
        return per_sample.mean()
    alpha_bar = schedule.scheduler.alphas_cumprod.to(x0.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    weight = torch.ones_like(snr) if min_snr_gamma is None else snr.clamp(max=min_snr_gamma) / snr
    if high_noise_power:
        weight = weight * snr.reciprocal().clamp(min=1) ** high_noise_power
    return (per_sample * weight).mean()
