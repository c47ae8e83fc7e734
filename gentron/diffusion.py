"""The objectives: the paper's epsilon-prediction on a linear beta schedule of 1000 steps, and rectified flow.

Noising and the losses live here, outside the network; sampling uses diffusers' schedulers built from the same
schedule, so training and sampling agree by construction. Which objective a model was trained with is read from
the scheduler its folder ships (``objective_of``): a flow model ships ``FlowMatchEulerDiscreteScheduler``.

Rectified flow (Liu et al. 2022; SD3, Esser et al. 2024): x_σ = (1 − σ)·x0 + σ·ε, and the network predicts the
velocity v = ε − x0 at timestep 1000·σ. σ is drawn logit-normal and shifted toward noise, σ' = sσ / (1 + (s − 1)σ),
the same shift the sampler's ``shift`` applies: what is decided only near pure noise (which side an object is on,
which way it travels) then gets its share of the gradient (``python -m gentron toy``, docs/training.md).
"""
from __future__ import annotations

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       FlowMatchEulerDiscreteScheduler)
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
# the flow objective's samplers; the shift comes from the model's folder (``shift``, ``flow_shift`` in diffusers)
FLOW_SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "flow-euler": (FlowMatchEulerDiscreteScheduler, {}),
    "flow-dpm++": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                     use_flow_sigmas=True, prediction_type="flow_prediction")),
}
OBJECTIVES = ("epsilon", "flow")
ALL_SAMPLERS = {**SAMPLERS, **FLOW_SAMPLERS}


def objective_of(scheduler: SchedulerMixin | dict) -> str:
    """'flow' for a flow-matching scheduler (or its config, as a pipeline folder saves it), else 'epsilon'."""
    config = scheduler if isinstance(scheduler, dict) else dict(scheduler.config)
    flow_euler = "shift" in config and "beta_schedule" not in config  # FlowMatchEulerDiscreteScheduler's config
    return "flow" if flow_euler or config.get("prediction_type") == "flow_prediction" else "epsilon"


def samplers_for(objective: str) -> dict[str, tuple[type[SchedulerMixin], dict]]:
    """The samplers a model of ``objective`` takes."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return FLOW_SAMPLERS if objective == "flow" else SAMPLERS


def flow_scheduler(shift: float) -> FlowMatchEulerDiscreteScheduler:
    """The scheduler a flow model's folder ships: Euler on the shifted sigmas it was trained on."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=SCHEDULE["num_train_timesteps"], shift=float(shift))


def flow_shift_of(config: dict) -> float:
    return float(config.get("shift") if "shift" in config else config.get("flow_shift", 1.0))


def sampler_name(scheduler: SchedulerMixin) -> str:
    """The name of the sampler a pipeline folder ships (its scheduler's class): what that model samples with
    when no sampler is asked for. A class this engine does not offer falls back to its objective's DPM-Solver++."""
    objective = objective_of(scheduler)
    offered = samplers_for(objective)
    return next((name for name, (cls, _) in offered.items() if type(scheduler) is cls),
                "flow-dpm++" if objective == "flow" else "dpm++")


def make_scheduler(name: str, config: dict | None = None) -> SchedulerMixin:
    """A sampler by name (``ALL_SAMPLERS``), on the training schedule (or ``config``'s: a loaded pipeline's schedule,
    its flow shift included, with only the solver switched). A sampler of the other objective is an error that names
    the samplers the model takes."""
    if name not in ALL_SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(ALL_SAMPLERS)}")
    objective = "flow" if name in FLOW_SAMPLERS else "epsilon"
    if config is not None and objective_of(config) != objective:
        takes = ", ".join(sorted(samplers_for(objective_of(config))))
        raise ValueError(f"sampler {name!r} is for {objective} models; this model is trained for "
                         f"{objective_of(config)} and takes {takes}")
    cls, settings = ALL_SAMPLERS[name]
    if objective == "flow":
        shift = 1.0 if config is None else flow_shift_of(config)
        key = "shift" if cls is FlowMatchEulerDiscreteScheduler else "flow_shift"
        return cls(num_train_timesteps=SCHEDULE["num_train_timesteps"], **settings, **{key: shift})
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


def flow_sigmas(batch: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0,
                shift: float = 1.0) -> torch.Tensor:
    """(batch,) noise levels σ in (0, 1): logit-normal(mean, std) (SD3), then shifted toward noise by ``shift``."""
    sigma = torch.sigmoid(mean + std * torch.randn(batch, generator=generator))
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_loss(model: torch.nn.Module, x0: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
              motion: torch.Tensor | None = None, generator: torch.Generator | None = None, mean: float = 0.0,
              std: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """The rectified-flow velocity MSE, averaged over the batch: x_σ = (1 − σ)·x0 + σ·ε, target v = ε − x0,
    the network called at timestep 1000·σ (the units of diffusers' flow schedulers)."""
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    sigma = flow_sigmas(x0.shape[0], generator, mean, std, shift).to(x0.device)
    s = sigma.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    v = model((1 - s) * x0 + s * noise, sigma * SCHEDULE["num_train_timesteps"], text, text_mask, motion)
    return (v.float() - (noise - x0).float()).square().flatten(1).mean(1).mean()
