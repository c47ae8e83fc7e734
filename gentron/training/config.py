"""TrainConfig: one training stage (T2I pretraining, T2V from a T2I model, ...) as a typed YAML file.

Every field says why it exists. ``validate`` raises ValueError naming the field and the fix, so a
typo in ``configs/NAME.yaml`` fails before any model is loaded.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

MIXED_PRECISIONS = ("no", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train ------------------------------------------------------------------------
    stage: str = "t2i"  # a name for logs and the final folder's provenance; no behaviour hangs on it
    init_from: str = "random:tiny"  # pipeline folder (or hub id) whose transformer starts training and whose VAE
    #   and text towers stay frozen; "random:PRESET" builds random ones (gentron.factory) for tests and scratch runs
    transformer_preset: str | None = None  # set to train a fresh transformer of this preset on init_from's
    #   VAE and text towers (init_from is then only "a base pipeline folder for components")
    text_conditioning: str | None = None  # with transformer_preset: "cross_attention" (the paper's choice),
    #   "adaln_zero" (pooled text joins the timestep) or "cross_attention_pooled" (both); null keeps the preset's.
    #   The paper's first ablation
    transformer_depth: int | None = None  # with transformer_preset: its number of blocks (null keeps the preset's).
    #   The scale ablation's deeper arm
    text_encoders: str | None = None  # keep only these of init_from's towers: "clip", "t5" or "clip+t5" (null =
    #   all it has); with transformer_preset, the fresh transformer reads their width. The text-encoder ablation
    to_video: bool = False  # build the T2V model from the T2I init with .to_video(): zero-init temporal layers
    frame_embedding: bool = False  # frame positions at the input (GenTronConfig.frame_embedding), zero-initialised:
    #   grown with to_video, or added to a video init that lacks them, so the model computes the same at step 0
    rope: bool = False  # rotary positions in spatial attention (GenTronConfig.rope): a fresh transformer_preset gets
    #   them at rate 1; a trained init without them gets them at rate 0 (with_rope(): the same function at step 0)
    # --- where --------------------------------------------------------------------------------
    output_dir: str = "runs/t2i"  # checkpoints/, loss.jsonl, loss.png and final/ (the EMA pipeline) go here
    # --- data ---------------------------------------------------------------------------------
    data: str = "shapes"  # "shapes" (the built-in Shapes World stream) or a folder of images / clip folders
    resolution: int = 64  # training side in pixels; must be a multiple of the VAE factor x patch size
    frames: int = 1  # frames per sample: 1 trains images; >1 needs a temporal model (to_video or a T2V init)
    # --- optimisation -------------------------------------------------------------------------
    batch_size: int = 8  # samples per process per micro-batch; global batch = this x processes x grad_accum
    grad_accum: int = 1  # micro-batches per optimizer step: a larger batch when memory is short
    lr: float = 1e-4  # AdamW learning rate; the paper (and DiT/PixArt) use 1e-4 at batch 256+
    weight_decay: float = 0.0  # AdamW decoupled weight decay; DiT uses none
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moments; the defaults of DiT
    max_grad_norm: float = 1.0  # clip the global gradient norm (0 = off); keeps early adaLN steps sane
    steps: int = 1000  # optimizer steps in total; resuming continues up to this number
    time_limit: float = 0  # seconds of training after which the run checkpoints and writes final/ early (0 = none):
    #   a run that must fit a fixed budget of minutes; a resume continues toward steps
    warmup: int = 0  # linear LR warmup over this many steps (0 = none); needed for large batches
    cooldown: int = 0  # linear LR decay to zero over the last this-many of `steps` (0 = constant to the end): a
    #   short run ends at a low-noise point instead of wherever a constant rate leaves it (warmup-stable-decay);
    #   the decay follows `steps`, so raising steps on a resume moves it (and can raise the rate again)
    ema_decay: float = 0.9999  # EMA of weights; the final pipeline uses the EMA, as DiT does
    ema_warmup: bool = True  # decay = min(ema_decay, (1+step)/(10+step)) so a short run's EMA doesn't lag
    mixed_precision: str = "no"  # "no" or "bf16" (autocast; master weights, AdamW state and EMA stay fp32)
    gradient_checkpointing: bool = False  # recompute each block in backward: less memory, ~30% more time
    # --- objective ----------------------------------------------------------------------------
    objective: str = "epsilon"  # "epsilon" (the paper's DDPM noise prediction) or "flow" (rectified flow, velocity
    #   target, as SD3); the final folder ships the matching scheduler, so sampling follows the training
    flow_shift: float = 1.0  # flow: σ' = sσ / (1 + (s−1)σ) moves the drawn noise levels toward pure noise, where
    #   layout words (left/right, which way it moves) are decided; the sampler uses the same shift
    flow_logit_mean: float = 0.0  # flow: σ = sigmoid(mean + std·n), n ~ N(0, 1), before the shift (SD3's 0, 1)
    flow_logit_std: float = 1.0
    # --- conditioning -------------------------------------------------------------------------
    text_dropout: float = 0.1  # probability a caption is replaced by "" so the model learns p(x) for CFG
    min_snr_gamma: float | None = None  # Min-SNR loss weighting (5 is usual): high-noise steps, which set
    #   layout and colour, get their share of the gradient; measured to matter for short runs (null = plain MSE)
    high_noise_power: float = 0.0  # p > 0 raises the weight of steps with SNR < 1 by (1/SNR)^p (1 = truncated SNR,
    #   as v-prediction weights them): epsilon MSE gives the near-pure-noise steps, where a layout is chosen, ~1% of
    #   the gradient, and a word that only they need (left / right) went unread (docs/training.md)
    p_motion_free: float = 0.0  # probability a video sample becomes its first frame repeated with motion=False
    #   (identity temporal mask): the paper's joint image-video training, and what makes motion-free guidance work
    image_steps: float = 0.0  # with frames > 1: this share of the optimizer steps trains on images (one-frame clips)
    #   instead of clips, spread evenly over the run. A one-frame clip is the paper's still pseudo-video (an image
    #   repeated F times under the identity mask, every frame attending only to itself) without the F-fold compute,
    #   so such a step sees image_batch_size images where a motion-free sample is one image (docs/training.md)
    image_batch_size: int = 0  # images per micro-batch on image steps (0 = batch_size x frames: a clip step's tokens)
    # --- bookkeeping --------------------------------------------------------------------------
    checkpoint_every: int = 500  # steps between resumable checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk; older ones are deleted after a new one lands
    log_every: int = 10  # steps between loss.jsonl lines (loss averaged over the interval and processes)
    seed: int = 0  # seeds the init, the data order and every per-step random draw: a run is a function of it
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact resume on GPUs too (slower)
    # --- caches -------------------------------------------------------------------------------
    cache_text: bool = True  # keep caption embeddings in memory: towers are frozen and captions repeat
    text_cache_size: int = 4096  # most captions kept (least recently used are dropped); each is L x text_dim fp32
    text_batch_encode: bool = False  # encode a batch's uncached captions in one call: far faster on GPUs, but an
    #   embedding then depends on its batch-mates in the last bits, so a resume is close to, not bit-identical with,
    #   an uninterrupted run (one caption per call, the default, keeps resumes exact)
    data_workers: int = 0  # processes rendering / reading micro-batches ahead of the step (a DataLoader): the data,
    #   not the GPU, bounds a small model's speed; batches are addressed by step, so the run is the same for any value
    data_echo: int = 1  # use each made batch for this many micro-batches, with fresh noise and timesteps each (data
    #   echoing): when rendering bounds the step rate (the log's data_wait near 1), the GPU learns instead of waiting

    # ---- loading --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config fields {unknown}; known fields are {sorted(known)}")
        d = dict(d)
        if "betas" in d and isinstance(d["betas"], list):  # YAML has no tuples
            d["betas"] = tuple(d["betas"])
        return cls(**d).validate()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> "TrainConfig":
        """Read ``path`` and apply ``overrides`` (None values are ignored, so CLI defaults pass through)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {str(path)!r} not found; see configs/*.yaml for examples")
        d = yaml.safe_load(path.read_text()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{path} must be a YAML mapping of field: value, got {type(d).__name__}")
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes).validate()

    # ---- validation -----------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the field and the fix. Checks that need the model (resolution
        multiple, temporal layers) happen in ``train`` once the pipeline is loaded."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for name in ("resolution", "frames", "batch_size", "grad_accum", "steps", "log_every", "keep_checkpoints",
                     "text_cache_size", "data_echo"):
            v = getattr(self, name)
            need(is_int(v) and v >= 1, f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup", "cooldown", "checkpoint_every", "seed", "data_workers", "image_batch_size"):
            v = getattr(self, name)
            need(is_int(v) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
        need(is_num(self.time_limit) and self.time_limit >= 0,
             f"time_limit must be a number of seconds >= 0 (0 = no limit), got {self.time_limit!r}")
        need(not self.cooldown or self.cooldown + self.warmup <= self.steps,  # a warmup alone may outlast a short run
             f"warmup ({self.warmup}) + cooldown ({self.cooldown}) must fit in steps ({self.steps}): "
             "shorten either, or raise steps")
        need(is_num(self.lr) and 0 < self.lr < 1, f"lr must be a number in (0, 1), got {self.lr!r}; 1e-4 is usual")
        need(is_num(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        betas_ok = isinstance(self.betas, tuple) and len(self.betas) == 2
        need(betas_ok and all(is_num(b) and 0 <= b < 1 for b in self.betas),
             f"betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got {self.betas!r}")
        need(is_num(self.max_grad_norm) and self.max_grad_norm >= 0,
             f"max_grad_norm must be a number >= 0 (0 turns clipping off), got {self.max_grad_norm!r}")
        need(is_num(self.ema_decay) and 0 <= self.ema_decay < 1,
             f"ema_decay must be in [0, 1), got {self.ema_decay!r}; 0.9999 for long runs, 0.999 for short ones")
        need(is_num(self.text_dropout) and 0 <= self.text_dropout < 1,
             f"text_dropout must be in [0, 1), got {self.text_dropout!r}; 0.1 is usual (1 would never see captions)")
        need(self.min_snr_gamma is None or (is_num(self.min_snr_gamma) and self.min_snr_gamma > 0),
             f"min_snr_gamma must be a positive number (5 is usual) or null, got {self.min_snr_gamma!r}")
        need(is_num(self.high_noise_power) and 0 <= self.high_noise_power <= 1,
             f"high_noise_power must be a number in [0, 1] (0 = off, 1 = truncated SNR), got {self.high_noise_power!r}")
        need(is_num(self.p_motion_free) and 0 <= self.p_motion_free <= 1,
             f"p_motion_free must be a probability in [0, 1], got {self.p_motion_free!r}")
        need(is_num(self.image_steps) and 0 <= self.image_steps < 1,
             f"image_steps must be a share in [0, 1), got {self.image_steps!r}; frames: 1 trains on images only")
        need(not self.image_steps or self.frames > 1,
             f"image_steps={self.image_steps} mixes image steps into a video run, but frames is 1 (every step already "
             "trains images): set image_steps to 0, or frames > 1")
        from ..diffusion import OBJECTIVES
        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        need(is_num(self.flow_shift) and self.flow_shift > 0,
             f"flow_shift must be a number > 0 (1 = no shift; 8 reads layout words), got {self.flow_shift!r}")
        need(is_num(self.flow_logit_mean), f"flow_logit_mean must be a number, got {self.flow_logit_mean!r}")
        need(is_num(self.flow_logit_std) and self.flow_logit_std > 0,
             f"flow_logit_std must be a number > 0, got {self.flow_logit_std!r}")
        need(self.objective == "flow" or (self.flow_shift, self.flow_logit_mean, self.flow_logit_std) == (1.0, 0.0, 1.0),
             "flow_shift, flow_logit_mean and flow_logit_std apply to objective: flow only; set objective: flow")
        need(self.objective == "epsilon" or (self.min_snr_gamma is None and not self.high_noise_power),
             "min_snr_gamma and high_noise_power weight the epsilon loss; with objective: flow use flow_shift")
        need(self.mixed_precision in MIXED_PRECISIONS,
             f"mixed_precision must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}")
        for name in ("to_video", "rope", "frame_embedding", "ema_warmup", "gradient_checkpointing", "deterministic", "cache_text",
                     "text_batch_encode"):
            need(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("stage", "init_from", "output_dir", "data"):
            v = getattr(self, name)
            need(isinstance(v, str) and v.strip() != "", f"{name} must be a non-empty string, got {v!r}")
        need(self.transformer_preset is None or isinstance(self.transformer_preset, str),
             f"transformer_preset must be a preset name such as 'S/2' or null, got {self.transformer_preset!r}")
        if self.transformer_preset is not None:
            from ..config import PRESETS
            need(self.transformer_preset in PRESETS,
                 f"transformer_preset must be one of {sorted(PRESETS)}, got {self.transformer_preset!r}")
        from ..config import TEXT_CONDITIONINGS
        from ..text import TEXT_ENCODERS
        need(self.text_conditioning is None or self.text_conditioning in TEXT_CONDITIONINGS,
             f"text_conditioning must be one of {TEXT_CONDITIONINGS} or null, got {self.text_conditioning!r}")
        need(self.text_encoders is None or self.text_encoders in TEXT_ENCODERS,
             f"text_encoders must be one of {TEXT_ENCODERS} or null, got {self.text_encoders!r}")
        need(self.text_conditioning is None or self.transformer_preset is not None,
             "text_conditioning changes a fresh transformer only: set transformer_preset too (e.g. 'S/2')")
        need(self.transformer_depth is None or (isinstance(self.transformer_depth, int)
                                                and not isinstance(self.transformer_depth, bool)
                                                and self.transformer_depth > 0),
             f"transformer_depth must be a positive whole number or null, got {self.transformer_depth!r}")
        need(self.transformer_depth is None or self.transformer_preset is not None,
             "transformer_depth changes a fresh transformer only: set transformer_preset too (e.g. 'S/2')")
        if self.init_from.startswith("random:"):
            from ..config import PRESETS
            preset = self.init_from.split(":", 1)[1]
            need(preset in PRESETS, f"init_from 'random:PRESET' needs a preset in {sorted(PRESETS)}, got {preset!r}")
        if self.data != "shapes" and not Path(self.data).is_dir():
            raise ValueError(f"data must be 'shapes' or an existing folder of images/clips, got {self.data!r}; "
                             "check the path (relative paths are from the current directory)")
        return self
