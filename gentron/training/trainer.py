"""train(cfg): one GenTron training stage on accelerate, resumable bit for bit.

Read top to bottom: load the init pipeline, build the transformer (optionally ``.to_video()``),
freeze the VAE and text towers, shard or replicate with accelerate, then per step: data (clips, or
images on a video run's ``image_steps``) -> prepared batch (text dropout, motion-free; data.py) ->
latents and text -> the objective's loss (diffusion.py) -> AdamW -> EMA; log, checkpoint atomically, and finally write a
GenTronPipeline with the EMA weights.

Why a resumed run equals an uninterrupted one: every random draw of micro-batch ``draw`` on
process ``rank`` comes from a generator seeded by (seed, draw, rank), the data is addressed the
same way (data.py), the learning rate is a function of the step, and a checkpoint holds the
weights, AdamW's state, the EMA and the global generators. Nothing else carries over a step.

Outputs under ``output_dir``: ``config.yaml``, ``loss.jsonl``, ``loss.png``,
``checkpoints/step_N/`` (checkpoint.py) and ``final/`` (the EMA pipeline; ``train`` returns it).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType
from tqdm.auto import tqdm

from ..diffusion import NoiseSchedule, diffusion_loss, flow_loss, flow_scheduler, make_scheduler, objective_of
from ..model import GenTronTransformer
from ..pipeline import GenTronPipeline
from ..quantization import native_bf16
from .checkpoint import full_weights, latest_checkpoint, load_checkpoint, remove_partial, save_checkpoint
from .config import TrainConfig
from .data import (IMAGE_SALT, NOISE_SALT, Batch, Preparation, check_source, derive_seed, make_source, micro_batches,
                   step_batches)
from .ema import EMA
from .encode import FrozenEncoders
from .metrics import LossLog

logger = logging.getLogger(__name__)
# config fields that may change between a run and its resume without changing what is computed
RESUMABLE_CHANGES = {"steps", "output_dir", "checkpoint_every", "keep_checkpoints", "log_every", "init_from",
                     "stage", "cache_text", "text_cache_size", "data_workers", "time_limit"}


def train(cfg: TrainConfig, data: Any = None) -> Path:
    """Run (or resume) the stage described by ``cfg``; returns the folder of the final EMA pipeline.

    ``data`` overrides ``cfg.data``: a folder or latent cache (gentron.data.folders), a list/Dataset of
    ``{"pixels", "caption"}`` dicts, a function seed -> iterable of them, or any iterable (see data.py
    for which of these resume exactly).
    """
    cfg = cfg.validate()
    if cfg.deterministic:  # must precede the first CUDA matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    owns_state = not PartialState._shared_state  # a notebook calling train() twice must not inherit settings
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.accelerator.is_available())
    if cfg.mixed_precision == "bf16" and not native_bf16(str(accelerator.device)):
        warnings.warn("mixed_precision: bf16 on a CPU without AMX or AVX512-BF16 runs bf16 matmuls in software, "
                      "many times slower than fp32 (docs/benchmarks.md); set mixed_precision: \"no\" on this host",
                      stacklevel=2)
    try:
        return _train(cfg, data, accelerator)
    finally:
        if owns_state:
            accelerator.end_training()  # destroys the process group of a distributed run
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()


def _train(cfg: TrainConfig, data: Any, accelerator: Accelerator) -> Path:
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"

    # ---- models: frozen encoders, the trainable transformer, EMA --------------------------------
    pipe = load_init_pipeline(cfg)
    transformer = build_transformer(cfg, pipe)
    check_model(cfg, pipe, transformer)
    transformer_config = dict(transformer.config)
    encoders = FrozenEncoders(pipe, accelerator.device, cfg.cache_text, cfg.text_cache_size, cfg.text_batch_encode)
    source = make_source(cfg.data if data is None else data, cfg.seed, cfg.resolution, cfg.frames, cfg.p_motion_free)
    check_source(source, pipe)  # a latent cache: built by these encoders? a folder: captions the towers can read
    image_stream = image_source(cfg, data)  # (source, preparation) of image_steps, or None
    if image_stream is not None:
        check_source(image_stream[0], pipe)
    schedule = NoiseSchedule()
    model, optimizer = wrap(accelerator, transformer, cfg)
    ema = EMA(model.named_parameters(), cfg.ema_decay, cfg.ema_warmup)

    # ---- resume ---------------------------------------------------------------------------------
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for p in remove_partial(ckpt_root):
            logger.warning("removed incomplete checkpoint %s", p)
        (out / "config.yaml").write_text(cfg.to_yaml())
    accelerator.wait_for_everyone()
    start = 0
    window: list[torch.Tensor] = []  # this process's losses since the last log line
    last = latest_checkpoint(ckpt_root)
    if last is not None:
        state = load_checkpoint(last, model, optimizer, ema, accelerator)
        start = state["step"]
        window = [torch.tensor(v, device=accelerator.device) for v in state["rank_state"].get("loss_window", [])]
        _warn_if_changed(state, cfg, world)
        accelerator.print(f"resumed from {last} at step {start}")
    log = LossLog(out / "loss.jsonl", start) if main else None

    # ---- the loop ---------------------------------------------------------------------------------
    progress = tqdm(total=cfg.steps, initial=start, desc=cfg.stage, disable=not main, dynamic_ncols=True,
                    mininterval=0.5 if sys.stderr.isatty() else 30)  # a log file gets a line every 30 s, not 10/s
    started = time.perf_counter()
    clips, images = batch_streams(cfg, source, image_stream, rank, world, accelerator.device.type == "cuda")
    batches = WaitClock(step_batches(clips, images, start, cfg.steps, cfg.image_steps, cfg.grad_accum))
    for step in range(start, cfg.steps):
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        window.append(train_step(cfg, step, model, optimizer, encoders, schedule, batches, accelerator))
        ema.update(model.named_parameters(), step)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            loss = float(accelerator.reduce(torch.stack(window).mean(), "mean"))  # collective: all ranks log
            window = []
            if main:  # data_wait: the share of the interval spent waiting for batches (1 = the data bounds speed)
                log.append(step=done, loss=loss, lr=lr, ema_decay=ema.decay_at(step),
                           seconds=round(time.perf_counter() - started, 3), data_wait=batches.share())
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        progress.update(1)
        out_of_time = time_is_up(cfg, started, done, accelerator)
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps or out_of_time:
            save_checkpoint(ckpt_root, done, model, optimizer, ema, accelerator, cfg.to_dict(), cfg.keep_checkpoints,
                            rank_state={"loss_window": [x.item() for x in window]})  # so the log resumes exactly
            if main:
                log.plot(out / "loss.png", f"{cfg.stage}: {cfg.init_from}")
        if out_of_time:
            accelerator.print(f"time_limit {cfg.time_limit}s reached at step {done}: checkpointed, writing final/")
            break
    progress.close()

    # ---- the final pipeline: EMA weights, the init's VAE, text towers and scheduler ---------------
    return save_final_pipeline(out, pipe, transformer_config, model, ema, cfg, accelerator)


def image_source(cfg: TrainConfig, data: Any) -> tuple[Any, Preparation] | None:
    """The image stream that ``image_steps`` mixes into a video run, as (source, preparation): one-frame samples of
    the same data with their own seed (for Shapes World its image grammar, with the relations and counts that its
    clips lack), always still; None without image steps."""
    if not cfg.image_steps:
        return None
    seed = derive_seed(cfg.seed, IMAGE_SALT)
    source = make_source(cfg.data if data is None else data, seed, cfg.resolution, 1)
    return source, Preparation(1, cfg.resolution, cfg.text_dropout, 0.0, seed)


Stream = Callable[[int, int], Iterator[Batch]]  # (first, stop) -> prepared micro-batches first .. stop-1


def batch_streams(cfg: TrainConfig, source: Any, image_stream: tuple[Any, Preparation] | None, rank: int, world: int,
                  pin_memory: bool) -> tuple[Stream, Stream | None]:
    """(clips, images): the clip stream and the image stream (None without image steps) of this process."""
    def stream(src: Any, size: int, prepare: Preparation) -> Stream:
        return lambda first, stop: micro_batches(src, first, stop, rank, world, size, prepare, cfg.data_workers,
                                                 cfg.data_echo, pin_memory=pin_memory)
    p_still = 0.0 if getattr(source, "supplies_images", False) else cfg.p_motion_free  # images already are
    clips = stream(source, cfg.batch_size, Preparation(cfg.frames, cfg.resolution, cfg.text_dropout, p_still, cfg.seed))
    if image_stream is None:
        return clips, None
    return clips, stream(image_stream[0], cfg.image_batch_size or cfg.batch_size * cfg.frames, image_stream[1])


# ---- building -----------------------------------------------------------------------------------
def load_init_pipeline(cfg: TrainConfig) -> GenTronPipeline:
    """The pipeline that gives the starting transformer and the frozen VAE, text towers and scheduler."""
    if cfg.init_from.startswith("random:"):
        from ..factory import build_random_pipeline

        pipe = build_random_pipeline(cfg.init_from.split(":", 1)[1], temporal=False, seed=cfg.seed)
    else:
        try:
            pipe = GenTronPipeline.from_pretrained(cfg.init_from)
        except Exception as e:  # diffusers' errors don't say what to do about it here
            raise ValueError(f"cannot load init_from={cfg.init_from!r} ({type(e).__name__}: {e}); point it at a "
                             "GenTronPipeline folder (a previous stage's output_dir/final) or use random:PRESET") from e
    return keep_towers(pipe, cfg.text_encoders) if cfg.text_encoders else pipe


def keep_towers(pipe: GenTronPipeline, which: str) -> GenTronPipeline:
    """Drop the towers not named in ``which`` ("clip", "t5" or "clip+t5"); CLIP is text_encoder, T5 text_encoder_2."""
    kept = set(which.split("+"))
    slots = {"clip": ("text_encoder", "tokenizer"), "t5": ("text_encoder_2", "tokenizer_2")}
    for name, (encoder, tokenizer) in slots.items():
        if name in kept and getattr(pipe, encoder) is None:
            raise ValueError(f"text_encoders={which!r} asks for {name}, but init_from has no {name} tower; "
                             f"choose from the towers it has")
        if name not in kept:
            pipe.register_modules(**{encoder: None, tokenizer: None})
    return pipe


def build_transformer(cfg: TrainConfig, pipe: GenTronPipeline) -> GenTronTransformer:
    torch.manual_seed(cfg.seed)  # new layers (a fresh preset, temporal attention) start identical on every rank
    if cfg.transformer_preset is not None:
        text_dim = sum(t.dim for t in pipe.towers)
        overrides = {"text_conditioning": cfg.text_conditioning} if cfg.text_conditioning else {}
        if cfg.transformer_depth is not None:
            overrides["depth"] = cfg.transformer_depth
        transformer = GenTronTransformer.from_preset(cfg.transformer_preset, text_dim=text_dim,
                                                     in_channels=pipe.vae.config.latent_channels, rope=cfg.rope,
                                                     **overrides)
    else:
        transformer = pipe.transformer
        if cfg.rope and not transformer.config.rope:
            transformer = transformer.with_rope()
    if cfg.to_video:
        if transformer.config.temporal:
            raise ValueError("to_video is true but the init transformer already has temporal layers: "
                             "set to_video: false to continue training a T2V model")
        transformer = transformer.to_video(frame_embedding=cfg.frame_embedding)
    elif cfg.frame_embedding and not transformer.config.frame_embedding:
        if not transformer.config.temporal:
            raise ValueError("frame_embedding needs a video model: set to_video: true, or init_from a T2V pipeline")
        transformer = transformer.with_frame_embedding()
    if transformer.dtype != torch.float32:  # master weights are fp32; autocast gives bf16 compute
        transformer = transformer.float()
    transformer.train()
    for block in transformer.blocks:
        block.gradient_checkpointing = cfg.gradient_checkpointing
    return transformer


def check_model(cfg: TrainConfig, pipe: GenTronPipeline, transformer: GenTronTransformer) -> None:
    """The checks of ``cfg`` that need the model; errors say the fix."""
    m = pipe.vae_scale_factor * transformer.config.patch_size
    if cfg.resolution % m:
        nearest = max(m, round(cfg.resolution / m) * m)
        raise ValueError(f"resolution must be a multiple of {m} (VAE factor {pipe.vae_scale_factor} x patch size "
                         f"{transformer.config.patch_size}), got {cfg.resolution}; try {nearest}")
    if cfg.frames > 1 and not transformer.config.temporal:
        raise ValueError(f"frames={cfg.frames} needs temporal layers: set to_video: true to grow them from this "
                         "T2I model, or init_from a T2V pipeline")
    if transformer.config.text_dim != sum(t.dim for t in pipe.towers):
        raise ValueError(f"the transformer reads text of width {transformer.config.text_dim} but the text towers "
                         f"give {sum(t.dim for t in pipe.towers)}: use a transformer_preset or a matching pipeline")


def wrap(accelerator: Accelerator, transformer: GenTronTransformer,
         cfg: TrainConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """DDP or FSDP2 as ``accelerate launch`` asked, then AdamW over the (possibly sharded) parameters."""
    if fsdp_requested_on_cpu(accelerator):
        model = shard_on_cpu(transformer, accelerator)
    else:
        model = accelerator.prepare(transformer.to(accelerator.device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return model, accelerator.prepare(optimizer)


def fsdp_requested_on_cpu(accelerator: Accelerator) -> bool:
    """accelerate 1.15 turns FSDP on only for accelerator devices: on CPUs an FSDP config silently runs
    as DDP (MULTI_CPU). We notice that and shard with torch's FSDP2 ourselves."""
    return (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
            and accelerator.distributed_type == DistributedType.MULTI_CPU)


def shard_on_cpu(transformer: GenTronTransformer, accelerator: Accelerator) -> torch.nn.Module:
    """FSDP2 (``fully_shard``) per block and at the root, over a gloo CPU mesh, as accelerate does on GPUs."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if os.environ.get("FSDP_VERSION", "1") != "2":
        warnings.warn("on CPUs this trainer shards with FSDP2 whatever fsdp_version says")
    for p in transformer.parameters():  # every rank must shard the same full tensors
        dist.broadcast(p.data, src=0)
    if os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true":
        for block in transformer.blocks:  # the model's own flag: no wrapper, so parameter names don't change
            block.gradient_checkpointing = True
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true"
    mesh = init_device_mesh("cpu", (accelerator.num_processes,))
    for block in transformer.blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(transformer, mesh=mesh, reshard_after_forward=reshard)
    accelerator.print(f"FSDP2 on CPU: {len(transformer.blocks)} blocks sharded over "
                      f"{accelerator.num_processes} processes")
    return transformer


# ---- one step -------------------------------------------------------------------------------------
def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then constant (the paper's schedule), then with ``cooldown`` a linear decay that reaches zero
    after the last of ``steps``. A function of the step, so nothing to checkpoint."""
    scale = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.cooldown:
        scale = min(scale, (cfg.steps - step) / cfg.cooldown)
    return cfg.lr * scale


def train_step(cfg: TrainConfig, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               encoders: FrozenEncoders, schedule: NoiseSchedule, batches: Iterator[Batch],
               accelerator: Accelerator) -> torch.Tensor:
    """One optimizer step over the next ``grad_accum`` micro-batches of ``batches`` (those of this step);
    returns this process's mean loss (detached)."""
    rank, device = accelerator.process_index, accelerator.device
    total = torch.zeros((), device=device)
    for micro in range(cfg.grad_accum):
        draw = step * cfg.grad_accum + micro
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, NOISE_SALT, draw, rank))
        batch = next(batches)
        with accelerator.autocast():  # the frozen VAE encodes in bf16 too when training in bf16
            if batch.posterior is None:
                latents = encoders.latents(batch.pixels, generator)
            else:  # a latent cache: the VAE already ran, only the posterior sample is drawn
                latents = encoders.sample(batch.posterior, generator)
        text, mask = encoders.text(batch.captions, batch.text)
        with gradient_sync(accelerator, model, micro == cfg.grad_accum - 1):
            with accelerator.autocast():
                if cfg.objective == "flow":
                    loss = flow_loss(model, latents, text, mask, batch.motion.to(device), generator,
                                     cfg.flow_logit_mean, cfg.flow_logit_std, cfg.flow_shift)
                else:
                    loss = diffusion_loss(model, schedule, latents, text, mask, batch.motion.to(device), generator,
                                          cfg.min_snr_gamma, cfg.high_noise_power)
            accelerator.backward(loss / cfg.grad_accum)
        total += loss.detach() / cfg.grad_accum
    if cfg.max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def time_is_up(cfg: TrainConfig, started: float, done: int, accelerator: Accelerator) -> bool:
    """Whether ``time_limit`` has passed, decided at log steps only and agreed over ranks (one small
    collective: any rank's clock), so every rank stops after the same step."""
    if not cfg.time_limit or (done % cfg.log_every and done != cfg.steps):
        return False
    up = torch.tensor(float(time.perf_counter() - started > cfg.time_limit), device=accelerator.device)
    return bool(accelerator.reduce(up, "max") > 0)


class WaitClock:
    """An iterator that times how long its user waits for it: the log's data_wait."""

    def __init__(self, it: Iterator[Batch]):
        self.it, self.waited, self.since = it, 0.0, time.perf_counter()

    def __iter__(self) -> "WaitClock":
        return self

    def __next__(self) -> Batch:
        t = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.waited += time.perf_counter() - t

    def share(self) -> float:
        """The share of the time since the last call spent waiting, and start a new interval."""
        now = time.perf_counter()
        share, self.waited, self.since = self.waited / max(now - self.since, 1e-9), 0.0, now
        return round(share, 3)


@contextlib.contextmanager
def gradient_sync(accelerator: Accelerator, model: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if sync:
        yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2, also when we sharded it ourselves
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(model):
            yield


# ---- the end ----------------------------------------------------------------------------------------
def save_final_pipeline(out: Path, pipe: GenTronPipeline, transformer_config: dict[str, Any], model: torch.nn.Module,
                        ema: EMA, cfg: TrainConfig, accelerator: Accelerator) -> Path:
    """``out/final``: a GenTronPipeline folder whose transformer holds the EMA weights, swapped in atomically."""
    weights = full_weights(model)  # collective; buffers (if any) come from here
    averaged = ema.state_dict()  # collective
    final = out / "final"
    if accelerator.is_main_process:
        transformer = GenTronTransformer.from_config(transformer_config)
        transformer.load_state_dict({**weights, **averaged})
        components = {**pipe.components, "transformer": transformer}
        if cfg.objective == "flow":  # the folder's scheduler tells samplers what the model predicts
            components["scheduler"] = flow_scheduler(cfg.flow_shift)
        elif objective_of(pipe.scheduler) != "epsilon":
            components["scheduler"] = make_scheduler("dpm++")
        pipeline = GenTronPipeline(**components)
        tmp, old = out / ".tmp-final", out / ".old-final"
        shutil.rmtree(tmp, ignore_errors=True)
        pipeline.save_pretrained(tmp)
        (tmp / "train_config.yaml").write_text(cfg.to_yaml())
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _warn_if_changed(state: dict[str, Any], cfg: TrainConfig, world: int) -> None:
    saved = state.get("config", {})
    changed = sorted(k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k, v) != v)
    if changed:
        warnings.warn(f"resuming with changed settings {changed}: the run will differ from an uninterrupted one")
    if state.get("world_size", world) != world:
        warnings.warn(f"resuming on {world} processes, saved with {state['world_size']}: data order and "
                      "random draws follow the process count, so the run continues differently")
