"""GenTronPipeline: text -> latents -> guided sampler loop (with previews) -> decoded frames.

A diffusers ``DiffusionPipeline``: ``save_pretrained`` writes the usual component folders and
``from_pretrained`` reads them back from a local folder or a hub id.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .compilation import is_compiled
from .diffusion import make_scheduler, objective_of, sampler_name, samplers_for
from .guidance import guidance_weights, guided_noise, stack_branches
from .model import GenTronTransformer
from .text import TextTower, count_tokens, encode_text

MAX_SEED = 2**32 - 1
MAX_FRAMES = 64
MAX_STEPS = 500
MAX_GUIDANCE = 50.0
MAX_PROMPT_CHARS = 2000

# Callback(step, total_steps, preview) — preview is (B, F, H, W, 3) uint8 on preview steps, else None.
StepCallback = Callable[[int, int, "np.ndarray | None"], None]


class Interrupted(RuntimeError):
    """Raised when ``should_stop`` returned True: sampling stopped between two steps."""


@dataclass
class GenTronOutput:
    frames: np.ndarray  # (B, F, H, W, 3) uint8, one entry per sample
    settings: list[dict[str, Any]] = field(default_factory=list)  # what made each sample, for export
    seconds: float = 0.0


class GenTronPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->text_encoder_2->transformer->vae"
    _optional_components = ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"]

    def __init__(self, transformer: GenTronTransformer, vae: AutoencoderKL, scheduler: SchedulerMixin,
                 text_encoder: PreTrainedModel | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
                 text_encoder_2: PreTrainedModel | None = None, tokenizer_2: PreTrainedTokenizerBase | None = None,
                 guidance_interval: list[float] | None = None, text_guidance: float | None = None,
                 steps: int | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
        # the model's own default, kept in its folder's model_index.json (as diffusers keeps requires_safety_checker)
        self.register_to_config(guidance_interval=None if guidance_interval is None else list(guidance_interval),
                                text_guidance=None if text_guidance is None else float(text_guidance),
                                steps=None if steps is None else int(steps))

    # ---- properties of the loaded model -------------------------------------------------------
    @property
    def towers(self) -> list[TextTower]:
        """CLIP (text_encoder) then T5 (text_encoder_2), whichever the model has."""
        out = []
        for enc, tok in ((self.text_encoder, self.tokenizer), (self.text_encoder_2, self.tokenizer_2)):
            if enc is not None:
                limit = getattr(enc.config, "max_position_embeddings", None) or tok.model_max_length
                out.append(TextTower(tok, enc, min(limit, tok.model_max_length)))
        return out

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: VAE downsampling times the patch size."""
        return self.vae_scale_factor * self.transformer.config.patch_size

    @property
    def default_resolution(self) -> int:
        """The VAE's native sample size (64 for the built-in model, 512 for SD's VAE)."""
        size = self.vae.config.sample_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def objective(self) -> str:
        """What the transformer predicts: 'epsilon' (the paper's) or 'flow' (a rectified-flow velocity), read from
        the scheduler its folder ships."""
        return objective_of(self.scheduler)

    @property
    def samplers(self) -> list[str]:
        """The samplers this model takes: those of its objective."""
        return sorted(samplers_for(self.objective))

    @property
    def default_sampler(self) -> str:
        """The sampler this model's folder ships (its scheduler): 'ddim' for the built-in model, where 25 DDIM steps
        beat 25 DPM-Solver++ steps on CompBench (docs/evaluation.md); 'dpm++' for a converted PixArt."""
        return sampler_name(self.scheduler)

    @property
    def default_guidance_interval(self) -> tuple[float, float]:
        """The timesteps at which this model's sampling guides by default (``guidance_interval`` in its folder's
        model_index.json); every timestep, (0, num_train_timesteps), where the folder names none, as the built-in
        model's does not: on it, intervals that leave the noisiest steps unguided gained nothing beyond noise on
        CompBench (docs/evaluation.md)."""
        interval = self.config.get("guidance_interval")
        return (0.0, float(self.scheduler.config.num_train_timesteps)) if interval is None else tuple(interval)

    @property
    def default_text_guidance(self) -> float:
        """λT when a request names none: ``text_guidance`` in the folder's model_index.json, else 7.5 (the paper's
        and PixArt's). A flow model binds best at a lower λT than an epsilon model (docs/evaluation.md)."""
        value = self.config.get("text_guidance")
        return 7.5 if value is None else float(value)

    @property
    def default_steps(self) -> int:
        """Sampling steps when a request names none: ``steps`` in the folder's model_index.json, the fewest steps
        that keep the model's CompBench score (``python -m gentron eval --suite sweep-steps``), else 25."""
        value = self.config.get("steps")
        return 25 if value is None else int(value)

    # ---- validation: one place, used by the CLI and the app too -------------------------------
    def check_inputs(self, prompt: str, negative_prompt: str, frames: int, height: int, width: int, steps: int,
                     text_guidance: float, motion_guidances: list[float], seed: int | None, sampler: str,
                     guidance_interval: tuple[float, float] | None = None, eta: float = 0.0) -> None:
        """Raise ValueError naming the parameter and its allowed range."""
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if not isinstance(text, str):
                raise ValueError(f"{name} must be a string, got {type(text).__name__}")
            if len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"{name} is {len(text)} characters; at most {MAX_PROMPT_CHARS} are allowed")
            if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
                raise ValueError(f"{name} contains control characters; remove them")
        if not prompt.strip():
            raise ValueError("prompt is empty: describe what to draw, e.g. 'a red circle'")
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            n, limit = count_tokens(self.towers, text), min(t.max_length for t in self.towers)
            if n > limit:
                raise ValueError(f"{name} is {n} tokens; this model reads at most {limit}: shorten it")
        _check_int("frames", frames, 1, MAX_FRAMES)
        if frames > 1 and not self.transformer.config.temporal:
            raise ValueError("frames must be 1: this is a text-to-image model (no temporal layers)")
        m = self.size_multiple
        for name, side in (("height", height), ("width", width)):
            _check_int(name, side, m, 2048)
            if side % m:
                raise ValueError(f"{name} must be a multiple of {m} between {m} and 2048, got {side}")
        _check_int("steps", steps, 1, MAX_STEPS)
        for name, value in [("text_guidance", text_guidance)] + [("motion_guidance", v) for v in motion_guidances]:
            if not _is_real(value) or not 0 <= value <= MAX_GUIDANCE:
                raise ValueError(f"{name} must be a finite number from 0 to {MAX_GUIDANCE}, got {value!r}")
        if seed is not None:
            _check_int("seed", seed, 0, MAX_SEED)
        if sampler not in self.samplers:
            raise ValueError(f"sampler must be one of {', '.join(self.samplers)} for this {self.objective} model, "
                             f"got {sampler!r}")
        if not _is_real(eta) or not 0 <= eta <= 1:
            raise ValueError(f"eta must be a number from 0 (deterministic DDIM) to 1 (as stochastic as DDPM), "
                             f"got {eta!r}")
        if eta and sampler != "ddim":
            raise ValueError(f"eta applies to the ddim sampler only (got sampler {sampler!r}): pass sampler='ddim' "
                             "or eta=0")
        if guidance_interval is not None:
            top = self.scheduler.config.num_train_timesteps
            ok = isinstance(guidance_interval, (list, tuple)) and len(guidance_interval) == 2 and all(
                _is_real(v) for v in guidance_interval)
            if not ok or not 0 <= guidance_interval[0] <= guidance_interval[1] <= top:
                raise ValueError(f"guidance_interval must be two timesteps (low, high) with 0 <= low <= high <= {top}, "
                                 f"e.g. (0, {top}) to guide at every step; got {guidance_interval!r}")

    # ---- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        negative_prompt: str = "",
        frames: int = 1,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        text_guidance: float | None = None,
        motion_guidance: float | list[float] = 1.0,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        callback: StepCallback | None = None,
        preview_every: int = 5,
        should_stop: Callable[[], bool] | None = None,
        guidance_interval: tuple[float, float] | None = None,
        eta: float = 0.0,
    ) -> GenTronOutput:
        """Generate one sample, or one per λM when ``motion_guidance`` is a list (same noise, same text).

        ``seed`` makes the result reproducible (bit-identical on the CPU); a ``generator`` overrides it.
        ``sampler`` None samples with the model's own (``default_sampler``); ``text_guidance`` None guides with
        the model's own λT (``default_text_guidance``); ``num_inference_steps`` None takes its own step count
        (``default_steps``).
        ``guidance_interval`` (low, high): guide (λT, λM) only at the steps whose timestep lies in it, inclusive;
        the others take the prompt's plain prediction, one branch, as λT = λM = 1 would (Kynkäänniemi et al. 2024,
        "Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in Diffusion Models").
        None: the model's own (``default_guidance_interval``).
        ``eta``: DDIM's η (Song et al. 2021), fresh noise mixed in at every step from 0 (deterministic, the default)
        to 1 (DDPM's amount); drawn from the same generator as the starting noise, so a seed still reproduces.
        """
        started = time.perf_counter()
        sampler = sampler or self.default_sampler
        text_guidance = self.default_text_guidance if text_guidance is None else text_guidance
        num_inference_steps = self.default_steps if num_inference_steps is None else num_inference_steps
        height = height or self.default_resolution
        width = width or height
        lm = [float(v) for v in motion_guidance] if isinstance(motion_guidance, (list, tuple)) else [motion_guidance]
        self.check_inputs(prompt, negative_prompt, frames, height, width, num_inference_steps, text_guidance, lm,
                          seed, sampler, guidance_interval, eta)
        guidance_interval = tuple(float(v) for v in guidance_interval or self.default_guidance_interval)
        batch = len(lm)
        device = self.transformer.device

        # text once per request, shared by every λM of a comparison
        compiled = is_compiled(self.transformer)  # static shapes: the text padded to a fixed length, no timestep table
        emb, mask = encode_text(self.towers, [prompt, negative_prompt], pad_to_max=compiled)
        emb, mask = emb.to(device), mask.to(device)
        cond = (emb[:1].expand(batch, -1, -1), mask[:1].expand(batch, -1))
        uncond = (emb[1:].expand(batch, -1, -1), mask[1:].expand(batch, -1))
        # (branches, weights) of a step in the guidance interval and of one outside it: the prompt's branch alone
        plans = {True: guidance_weights(float(text_guidance), lm if frames > 1 else None),
                 False: guidance_weights(1.0, [1.0] * batch if frames > 1 else None)}

        scheduler = make_scheduler(sampler, dict(self.scheduler.config))
        scheduler.set_timesteps(num_inference_steps, device=device)
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(0 if seed is None else seed)
        shape = (1, self.transformer.config.in_channels, frames, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)

        def shared_noise() -> torch.Tensor:  # one noise for every λM, so a comparison differs only by the guidance
            return torch.randn(shape, generator=generator).expand(batch, -1, -1, -1, -1).to(device)

        flow = self.objective == "flow"
        latents = shared_noise() * (1.0 if flow else scheduler.init_noise_sigma)
        # once per request, not once per step: the caption projection, every block's text keys/values, and every
        # step's timestep embedding and adaLN modulation. Not the timesteps when compiled: the table's length
        # would be one more static shape, and a new step count would compile anew. A step outside the guidance
        # interval runs the prompt's branch alone, on a text prepared for that branch.
        low, high = guidance_interval
        in_interval = [low <= float(t) <= high for t in scheduler.timesteps]
        texts = {inside: self.transformer.prepare(*stack_branches(cond, uncond, plans[inside][0]),
                                                  timesteps=None if compiled else scheduler.timesteps)
                 for inside in set(in_interval)}

        total = len(scheduler.timesteps)
        for i, t in enumerate(scheduler.timesteps):
            if should_stop is not None and should_stop():
                raise Interrupted(f"stopped at step {i} of {total}")
            x_in = latents if flow else scheduler.scale_model_input(latents, t)
            branches, weights = plans[in_interval[i]]
            eps = guided_noise(self.transformer, x_in, t.reshape(1).to(device), texts[in_interval[i]], None,
                               branches, weights)
            extra = {}
            if eta:
                extra = dict(eta=float(eta), variance_noise=shared_noise())
            latents = scheduler.step(eps, t, latents, **extra).prev_sample
            if callback is not None:
                preview = None
                if (i + 1) % preview_every == 0 and i + 1 < total:
                    preview = self.decode(clean_estimate(scheduler, flow, i, t, x_in, eps))
                callback(i + 1, total, preview)

        frames_out = self.decode(latents)
        seconds = time.perf_counter() - started
        settings = [dict(prompt=prompt, negative_prompt=negative_prompt, frames=frames, height=height, width=width,
                         steps=num_inference_steps, text_guidance=float(text_guidance), motion_guidance=m,
                         seed=seed, sampler=sampler, guidance_interval=list(guidance_interval), eta=float(eta),
                         model=self.name_or_path) for m in lm]
        return GenTronOutput(frames_out, settings, seconds)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, C, F, h, w) latents -> (B, F, H, W, 3) uint8; all frames go through the VAE as one batch."""
        b, _, f = latents.shape[:3]
        z = latents.permute(0, 2, 1, 3, 4).reshape(b * f, *latents.shape[1:2], *latents.shape[3:])
        cfg = self.vae.config
        z = z / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
        img = self.vae.decode(z.to(self.vae.dtype)).sample.float()
        img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return img.permute(0, 2, 3, 1).reshape(b, f, *img.shape[2:], 3).cpu().numpy()

    @property
    def name_or_path(self) -> str:
        return str(getattr(self.config, "_name_or_path", "") or "")


def clean_estimate(scheduler: SchedulerMixin, flow: bool, i: int, t: torch.Tensor, x: torch.Tensor,
                   prediction: torch.Tensor) -> torch.Tensor:
    """The clean latents that step ``i``'s prediction implies: x0 = x − σ·v for a flow model, the DDPM inversion
    (x − √(1−ᾱ)·ε) / √ᾱ for an epsilon one."""
    if flow:
        return x - float(scheduler.sigmas[i]) * prediction
    a = scheduler.alphas_cumprod.to(x.device)[int(round(float(t)))]
    return (x - (1 - a).sqrt() * prediction) / a.sqrt()


def _is_real(value: Any) -> bool:
    """A finite int or float (not a bool, which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
