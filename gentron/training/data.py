"""Training data: batches addressed by (draw, rank), and their preparation into model inputs.

A sample is ``{"pixels": float (F, 3, S, S) in [-1, 1] (or (3, S, S) for an image), "caption": str}``,
or, from a latent cache (gentron.data.folders), ``{"latent_mean", "latent_logvar": (F, C, h, w),
"text": (L, D), "caption"}``: the VAE and the text towers have already run.

Exact resume needs the data at step N to be re-creatable without replaying steps 0..N-1, so a
source is asked for "micro-batch number ``draw`` of process ``rank``" rather than iterated:

- a sized dataset (list, map-style Dataset, a media folder or latent cache) is read in a per-epoch permutation
  seeded by (seed, epoch), each process taking its own slice of it;
- a stream factory ``seed -> iterable`` (Shapes World) is restarted with a seed derived from
  (seed, draw, rank) for every micro-batch;
- any other iterable is replayed from its start and skipped forward; that is exact only when
  iterating it again yields the same samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from ..data.folders import IMAGE_SUFFIXES, LatentCache, MediaFolder, is_cache  # noqa: F401 (re-exported)

DATA_SALT = 0  # separates the data stream's seeds from the noise generator's (see derive_seed)
NOISE_SALT = 1
PREP_SALT = 2  # prepare_batch's coin flips (text dropout, motion-free), drawn where the batch is prepared
IMAGE_SALT = 3  # the image stream of a video run with image steps: its own data and coin flips
ImageFolder = MediaFolder  # the earlier name: images, videos and clip folders with captions (gentron.data.folders)


def derive_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from integers (seed, salt, step, rank, ...): nearby inputs, unrelated streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class BatchSource(Protocol):
    def batch(self, draw: int, rank: int, world: int, size: int) -> list[dict[str, Any]]:
        """The ``size`` samples of micro-batch ``draw`` for process ``rank`` of ``world``."""


class IndexedSource:
    """A sized dataset read without replacement in a seeded permutation per epoch."""

    def __init__(self, dataset: Sequence[dict[str, Any]], seed: int):
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty: add samples or fix the data path")
        self.dataset, self.seed = dataset, seed
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def batch(self, draw: int, rank: int, world: int, size: int) -> list[dict[str, Any]]:
        start = (draw * world + rank) * size  # processes interleave by micro-batch: no sample seen twice per epoch
        return [self.dataset[self._index(start + i)] for i in range(size)]

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, DATA_SALT, epoch))
            self._epoch, self._order = epoch, torch.randperm(len(self.dataset), generator=g)
        return int(self._order[offset])


class StreamSource:
    """An endless stream built from a seed; every micro-batch opens a fresh one."""

    def __init__(self, make_stream: Callable[[int], Iterable[dict[str, Any]]], seed: int):
        self.make_stream, self.seed = make_stream, seed
        self.supplies_images = False  # True: the stream itself mixes in the motion-free image samples

    def batch(self, draw: int, rank: int, world: int, size: int) -> list[dict[str, Any]]:
        stream = self.make_stream(derive_seed(self.seed, DATA_SALT, draw, rank))
        samples = list(islice(iter(stream), size))
        if len(samples) < size:
            raise ValueError(f"the data stream gave {len(samples)} samples where {size} were needed")
        return samples


class ReplaySource:
    """Any iterable, cycled; a request behind the current position restarts it from the beginning."""

    def __init__(self, iterable: Iterable[dict[str, Any]]):
        self.iterable = iterable
        self._it: Iterator[dict[str, Any]] | None = None
        self._position = 0

    def batch(self, draw: int, rank: int, world: int, size: int) -> list[dict[str, Any]]:
        start = (draw * world + rank) * size
        if self._it is None or start < self._position:
            self._it, self._position = iter(self.iterable), 0
        for _ in range(start - self._position):
            self._next()
        return [self._next() for _ in range(size)]

    def _next(self) -> dict[str, Any]:
        self._position += 1
        try:
            return next(self._it)
        except StopIteration:  # a finite iterable: start the next epoch
            self._it = iter(self.iterable)
            try:
                return next(self._it)
            except StopIteration:
                raise ValueError("the training iterable is empty (or a one-shot generator that has been "
                                 "used up): pass a list, a Dataset, or a seed -> stream function") from None


@dataclass(frozen=True)
class ShapesWorld:
    """seed -> a Shapes World stream; a class rather than a closure so that loader workers can receive it."""

    resolution: int
    frames: int
    p_motion_free: float

    def __call__(self, stream_seed: int) -> Iterable[dict[str, Any]]:
        from ..data.shapes import ShapesWorldStream  # lazy: only Shapes World runs need it
        return ShapesWorldStream(size=self.resolution, frames=self.frames, video=self.frames > 1, seed=stream_seed,
                                 image_fraction=self.p_motion_free if self.frames > 1 else 0.0, per_worker=False)


def make_source(data: Any, seed: int, resolution: int, frames: int, p_motion_free: float = 0.0) -> BatchSource:
    """``data`` as a BatchSource: "shapes", a folder path, a sized dataset, a stream factory or an iterable.

    For Shapes World video runs the motion-free share comes as real image samples with their own
    captions (relations, counts), which ``prepare_batch`` turns into still pseudo-videos: the paper's
    joint image-video training. Such a source says so with ``supplies_images``.
    """
    if isinstance(data, (str, Path)):
        if str(data) == "shapes":
            source = StreamSource(ShapesWorld(resolution, frames, p_motion_free), seed)
            source.supplies_images = frames > 1 and p_motion_free > 0
            return source
        if is_cache(data):
            return IndexedSource(LatentCache(data, resolution, frames), seed)
        return IndexedSource(MediaFolder(data, resolution, frames), seed)
    if hasattr(data, "batch"):
        return data
    sized = hasattr(data, "__len__") and hasattr(data, "__getitem__")
    if sized and not isinstance(data, torch.utils.data.IterableDataset):
        return IndexedSource(data, seed)
    if isinstance(data, Iterable):
        return ReplaySource(data)
    if callable(data):
        return StreamSource(data, seed)
    raise TypeError(f"cannot train on {type(data).__name__}: pass 'shapes', a folder, a list/Dataset of "
                    "{'pixels', 'caption'} dicts, or a function seed -> iterable of them")


@dataclass(frozen=True)
class Preparation:
    """``prepare_batch``'s settings, and the seed of its coin flips: micro-batch ``draw`` of process ``rank``
    is prepared the same way wherever that happens (a loader worker, or the training process)."""

    frames: int
    resolution: int
    text_dropout: float
    p_motion_free: float
    seed: int

    def __call__(self, samples: list[dict[str, Any]], draw: int, rank: int) -> "Batch":
        generator = torch.Generator().manual_seed(derive_seed(self.seed, PREP_SALT, draw, rank))
        return prepare_batch(samples, self.frames, self.resolution, self.text_dropout, self.p_motion_free, generator)


class _Draws(torch.utils.data.Dataset):
    """Item ``draw``: micro-batch ``draw`` of one process, rendered (or read) and prepared. In loader workers
    this runs ahead of the step, and the stacking happens there too: one shared-memory tensor per field
    crosses the process boundary (measured: 256 separate tensors per batch capped a GPU run at ~1.4k
    samples/s, and stacking 1024 images in the training process took ~95 ms a step)."""

    def __init__(self, source: BatchSource, rank: int, world: int, size: int, prepare: Preparation):
        self.source, self.rank, self.world, self.size, self.prepare = source, rank, world, size, prepare

    def __getitem__(self, draw: int) -> "Batch":
        return self.prepare(self.source.batch(draw, self.rank, self.world, self.size), draw, self.rank)


def micro_batches(source: BatchSource, first: int, stop: int, rank: int, world: int, size: int,
                  prepare: Preparation, workers: int = 0, echo: int = 1,
                  pin_memory: bool = False) -> Iterator["Batch"]:
    """Prepared micro-batches ``first, ..., stop-1`` in order. With ``workers`` > 0 a DataLoader makes them in
    that many processes ahead of use; the same batches either way, since each is addressed by its number.

    ``echo`` > 1 uses each made batch for that many consecutive micro-batches (data echoing, Choi et al.
    2019): the trainer draws fresh noise and timesteps for each, so when rendering rather than the GPU
    bounds the step rate, the GPU does useful work instead of waiting. Made batch ``draw // echo``
    serves micro-batch ``draw``.
    """
    made = range(first // echo, (stop - 1) // echo + 1) if stop > first else range(0)
    draws = _Draws(source, rank, world, size, prepare)
    if workers == 0:
        batches: Iterable[Batch] = (draws[m] for m in made)
    else:
        batches = torch.utils.data.DataLoader(draws, batch_size=None, sampler=made, num_workers=workers,
                                              prefetch_factor=4, pin_memory=pin_memory)
    it, current, index = iter(batches), None, None
    for draw in range(first, stop):
        if draw // echo != index:
            current, index = next(it), draw // echo
        yield current


def image_step_count(steps: int, share: float) -> int:
    """How many of optimizer steps 0 .. steps-1 are image steps. Step s is one when this count rises at s + 1: the
    image steps are spread evenly (share 0.5: every other step), and each is known from its number alone."""
    return math.floor(steps * share + 1e-9)


def step_batches(clips: Callable[[int, int], Iterator["Batch"]], images: Callable[[int, int], Iterator["Batch"]] | None,
                 start: int, steps: int, share: float, grad_accum: int) -> Iterator["Batch"]:
    """The micro-batches of optimizer steps ``start .. steps-1`` in order, each step's ``grad_accum`` of them from
    the image stream on image steps and from the clip stream otherwise. ``clips(first, stop)`` and
    ``images(first, stop)`` give micro-batches ``first .. stop-1`` of their stream; each stream is numbered by
    its own steps, so a resumed run finds its place in both. ``images`` may be None when ``share`` is 0."""
    n = (lambda s: image_step_count(s, share))
    clip_it = clips((start - n(start)) * grad_accum, (steps - n(steps)) * grad_accum)
    image_it = images(n(start) * grad_accum, n(steps) * grad_accum) if share else iter(())
    for step in range(start, steps):
        it = image_it if n(step + 1) > n(step) else clip_it
        for _ in range(grad_accum):
            yield next(it)


def check_source(source: BatchSource, pipe: Any) -> None:
    """Let a dataset that depends on the model check it: a latent cache was built by this pipeline's encoders,
    a media folder skips captions too long for its text towers. Called before the first batch."""
    check = getattr(getattr(source, "dataset", None), "check_pipeline", None)
    if check is not None:
        check(pipe)


# ---- batch preparation -------------------------------------------------------------------------
@dataclass
class Batch:
    pixels: torch.Tensor | None  # (B, F, 3, S, S) in [-1, 1]; None when the samples come from a latent cache
    captions: list[str]  # "" where text dropout hit
    motion: torch.Tensor  # (B,) bool; False = identity temporal mask (a still, image-like sample)
    posterior: torch.Tensor | None = None  # (B, F, 2C, h, w) cached VAE mean and logvar, for FrozenEncoders.sample
    text: list[torch.Tensor | None] | None = None  # cached caption embeddings; None where text dropout hit

    def pin_memory(self) -> "Batch":
        """Page-locked copies of the tensors (the DataLoader calls this with pin_memory=True): the copy to the
        GPU can then overlap the step."""
        pin = (lambda t: t.pin_memory() if isinstance(t, torch.Tensor) else t)
        return replace(self, pixels=pin(self.pixels), posterior=pin(self.posterior))


def prepare_batch(samples: list[dict[str, Any]], frames: int, resolution: int, text_dropout: float,
                  p_motion_free: float, generator: torch.Generator) -> Batch:
    """Samples -> a Batch: text dropout, and motion-free samples as the first frame repeated ``frames`` times.

    A sample of one frame in a video run is an image, so it is always motion-free (joint image-video
    training). Both coin flips are drawn for every sample whatever the probabilities, so the random
    stream, and hence a resumed run, does not depend on them.
    """
    drop = torch.rand(len(samples), generator=generator) < text_dropout
    still = torch.rand(len(samples), generator=generator) < p_motion_free
    cached = [isinstance(s, dict) and "latent_mean" in s for s in samples]
    if any(cached) and not all(cached):
        raise ValueError("a batch mixes latent-cache samples with pixel samples: train on one kind")
    clips, motion, captions, texts = [], [], [], []
    for i, sample in enumerate(samples):
        clip = _as_posterior(sample, frames) if cached[i] else _as_clip(sample, frames, resolution)
        is_image = clip.shape[0] == 1
        if is_image or still[i]:
            clip = clip[:1].expand(frames, -1, -1, -1)
        clips.append(clip)
        motion.append(not (is_image or bool(still[i])))
        captions.append("" if drop[i] else sample["caption"])
        texts.append(None if drop[i] else sample.get("text"))
    stacked, motion = torch.stack(clips).contiguous(), torch.tensor(motion, dtype=torch.bool)
    if any(cached):  # the VAE's posterior rather than pixels: the latent is still sampled in the trainer
        return Batch(None, captions, motion, posterior=stacked, text=texts)
    return Batch(stacked, captions, motion)


def _as_clip(sample: dict[str, Any], frames: int, resolution: int) -> torch.Tensor:
    """A sample's pixels as (F', 3, S, S) with F' == 1 (an image) or F' == frames; errors say the fix."""
    if not isinstance(sample, dict) or "pixels" not in sample or "caption" not in sample:
        raise ValueError("each training sample must be a dict with 'pixels' and 'caption'")
    if not isinstance(sample["caption"], str):
        raise ValueError(f"caption must be a string, got {type(sample['caption']).__name__}")
    pixels = torch.as_tensor(sample["pixels"])
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(0)
    if pixels.dim() != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != (resolution, resolution):
        raise ValueError(f"pixels must be (F, 3, {resolution}, {resolution}) to match resolution={resolution}, "
                         f"got {tuple(pixels.shape)}: resize the data or change resolution")
    if not pixels.is_floating_point():
        raise ValueError(f"pixels must be floats in [-1, 1], got {pixels.dtype}: use x / 127.5 - 1 for uint8")
    if pixels.abs().max() > 1.0 + 1e-3:
        raise ValueError(f"pixels must be in [-1, 1], got values up to {float(pixels.abs().max()):.3g}: "
                         "use x / 127.5 - 1 for 0..255 data")
    if pixels.shape[0] == 1:
        return pixels.float()
    if pixels.shape[0] < frames:
        raise ValueError(f"a clip has {pixels.shape[0]} frames but frames={frames}: lower frames or drop short clips")
    return pixels[:frames].float()


def _as_posterior(sample: dict[str, Any], frames: int) -> torch.Tensor:
    """A cached sample's VAE posterior as (F', 2C, h, w), mean then logvar on channels; F' == 1 or frames."""
    if "latent_logvar" not in sample or "caption" not in sample:
        raise ValueError("a latent-cache sample must have 'latent_mean', 'latent_logvar', 'text' and 'caption'")
    posterior = torch.cat([torch.as_tensor(sample["latent_mean"]), torch.as_tensor(sample["latent_logvar"])], dim=1)
    if posterior.dim() != 4:
        raise ValueError(f"latent_mean must be (F, C, h, w), got {tuple(sample['latent_mean'].shape)}")
    if posterior.shape[0] == 1:
        return posterior.float()
    if posterior.shape[0] < frames:
        raise ValueError(f"a cached clip has {posterior.shape[0]} frames but frames={frames}: rebuild the cache")
    return posterior[:frames].float()
