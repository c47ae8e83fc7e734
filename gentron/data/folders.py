"""Data of one's own: a folder of captioned images and videos, and a latent + text-embedding cache of it.

Folder formats, mixed freely, in subfolders too (hidden files and folders are ignored):

- ``NAME.png|jpg|jpeg|webp|bmp`` + ``NAME.txt``: an image and its caption (read with PIL);
- ``NAME.mp4|webm|mov|gif`` + ``NAME.txt``: a video (imageio.v3: the ffmpeg plugin, pillow for GIFs);
- ``metadata.jsonl`` in any folder, one line ``{"file_name": "NAME.ext", "text": "..."}`` per file, as in
  Hugging Face's imagefolder/videofolder (``"caption"`` or ``"prompt"`` are read too; ``file_name`` is
  relative to the folder holding the metadata.jsonl). A metadata caption wins over a ``NAME.txt``;
- a subfolder holding frames (images, in file-name order) and a ``caption.txt``: a clip.

A sample is ``{"pixels": float (F, 3, S, S) in [-1, 1], "caption": str}``: images have F = 1 (in a
video run they become motion-free stills, see gentron.training.data.prepare_batch); videos and clips
give frames 0, s, 2s, ..., (F-1)s at their native frame rate (s = ``frame_stride``, default 1: the
first F frames). Every frame is resized, shorter side to S (PIL bicubic, antialiased), and centre-cropped.

Bad data never stops a run. The folder is scanned once on construction: a file without a caption, with
an empty caption, that does not open (images: header and PNG checksums via PIL ``verify``; videos: the
frames a sample needs are decoded), or a video with fewer frames than a sample needs is skipped and
counted in ``skipped[reason]``; a one-line summary is logged. Captions longer than the text towers
read are skipped once the model is known (``check_pipeline``). A file that only fails when read during
training is counted too, and the next readable sample (index + 1, + 2, ...) is returned in its place,
so a resumed run reads exactly what an uninterrupted one did.

The cache (``python -m gentron.data.folders cache ...`` or ``build_cache``) stores, per item, the VAE
posterior of every frame (mean and logvar, float32, unscaled: training still draws a fresh latent
sample each time, from the same generator as when encoding pixels) and the caption's text-tower
embedding (its real tokens only, so no mask is stored), in safetensors shards with a JSON index.
``LatentCache`` reads it back; passing the cache folder as ``data`` trains on it without running the
VAE encoder or the text towers (only "" is encoded, for text dropout).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".gif")
METADATA = "metadata.jsonl"
CLIP_CAPTION = "caption.txt"
CAPTION_KEYS = ("text", "caption", "prompt")  # metadata.jsonl keys read as the caption, in this order

# reasons an item is skipped (keys of ``skipped``)
NO_CAPTION = "no caption"
EMPTY_CAPTION = "empty caption"
UNREADABLE = "unreadable"
TOO_SHORT = "too short"
READ_ERROR = "unreadable at read time"
TOO_LONG = "caption too long"
BAD_METADATA = "bad metadata line"
UNMATCHED = "metadata names no media file"


@dataclass(frozen=True)
class Item:
    path: Path  # a file, or a clip folder
    kind: str  # "image", "video" or "clip"
    caption: str


class MediaFolder:
    """A folder of captioned images, videos and clips as a map-style dataset (see the module docstring)."""

    def __init__(self, root: str | Path, resolution: int, frames: int = 1, frame_stride: int = 1):
        self.root, self.resolution, self.frames, self.frame_stride = Path(root), resolution, frames, frame_stride
        if not self.root.is_dir():
            raise ValueError(f"data folder {str(root)!r} does not exist")
        if frames < 1 or frame_stride < 1:
            raise ValueError(f"frames and frame_stride must be >= 1, got {frames} and {frame_stride}")
        self.skipped: dict[str, list[str]] = {}  # reason -> paths relative to root
        self._metadata: dict[Path, str | None] = {}  # media path -> caption (None: the line had none)
        self.items: list[Item] = list(self._walk(self.root))
        for path in self._metadata:  # entries that matched no media file
            self._skip(UNMATCHED, path)
        self._failed: set[Path] = set()  # items that failed at read time
        if not self.items:
            raise ValueError(f"no training samples in {str(root)!r} ({self.summary()}): expected NAME.png/.mp4 + "
                             f"NAME.txt pairs, a {METADATA}, or clip folders holding frames and a {CLIP_CAPTION}")
        (logger.warning if self.skipped else logger.info)(self.summary())

    @property
    def frames_needed(self) -> int:
        """Frames a video must have: (frames - 1) * frame_stride + 1."""
        return (self.frames - 1) * self.frame_stride + 1

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index``, or if it cannot be read (counted in ``skipped``), the next one that can."""
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        for k in range(n):
            i = (index + k) % n
            if self.items[i].path in self._failed:
                continue
            try:
                return self.load(i)
            except Exception as e:  # a corrupt file must not end a week-long run
                self._failed.add(self.items[i].path)
                self._skip(READ_ERROR, self.items[i].path)
                logger.warning("skipping %s, which could not be read (%s: %s)", self.items[i].path,
                               type(e).__name__, e)
        raise RuntimeError(f"none of the {n} samples in {self.root} could be read: {self.summary()}")

    def load(self, index: int) -> dict[str, Any]:
        """Item ``index`` read as a sample; raises if its files cannot be read."""
        item = self.items[index]
        if item.kind == "image":
            frames = [_open_image(item.path)]
        elif item.kind == "video":
            frames = read_video_frames(item.path, self.frames_needed)[:: self.frame_stride]
        else:
            frames = [_open_image(p) for p in _clip_frames(item.path)[: self.frames_needed: self.frame_stride]]
        if item.kind != "image" and len(frames) < self.frames:
            raise ValueError(f"{item.path} has {len(frames)} frames at stride {self.frame_stride}, "
                             f"{self.frames} needed")
        return {"pixels": torch.stack([self._to_tensor(f) for f in frames]), "caption": item.caption}

    def check_pipeline(self, pipe: Any) -> None:
        """Skip (and count) the items whose caption has more tokens than one of ``pipe``'s text towers reads,
        which would otherwise stop training when drawn. The trainer calls this before the first batch."""
        captions = [item.caption for item in self.items]
        too_long = [False] * len(captions)
        for tower in pipe.towers:  # one batched call per tower: fast tokenizers take ~1 s per 100k captions
            for i, ids in enumerate(tower.tokenizer(captions)["input_ids"]):
                too_long[i] |= len(ids) > tower.max_length
        keep = []
        for item, skip in zip(self.items, too_long):
            if skip:
                self._skip(TOO_LONG, item.path)
            else:
                keep.append(item)
        if len(keep) < len(self.items):
            self.items = keep
            if not keep:
                raise ValueError(f"every caption is too long for the text towers: {self.summary()}")
            logger.warning(self.summary())

    @property
    def skip_counts(self) -> dict[str, int]:
        return {reason: len(paths) for reason, paths in self.skipped.items()}

    def summary(self) -> str:
        """One line: what was found and what was skipped, by reason."""
        kinds = [item.kind for item in self.items]
        found = ", ".join(f"{kinds.count(k)} {k}" + "s" * (kinds.count(k) > 1) for k in ("image", "video", "clip")
                          if k in kinds)
        line = f"{self.root}: {len(self.items)} samples" + (f" ({found})" if found else "")
        if self.skipped:
            counts = ", ".join(f"{reason} {n}" for reason, n in self.skip_counts.items())
            line += f"; skipped {sum(self.skip_counts.values())}: {counts}"
        return line

    # ---- the scan ---------------------------------------------------------------------------------
    def _walk(self, folder: Path) -> Iterator[Item]:
        self._read_metadata(folder)  # before the entries: a file_name may point into a subfolder
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                yield from (self._clip(path) if (path / CLIP_CAPTION).is_file() else self._walk(path))
                continue
            suffix = path.suffix.lower()
            if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                continue
            caption = self._metadata.pop(Path(os.path.normpath(path)), None)
            if caption is None:
                caption = _read_text(path.with_suffix(".txt"))
            kind = "image" if suffix in IMAGE_SUFFIXES else "video"
            if self._usable(path, kind, caption):
                yield Item(path, kind, caption.strip())

    def _clip(self, folder: Path) -> Iterator[Item]:
        caption = _read_text(folder / CLIP_CAPTION)
        if self._usable(folder, "clip", caption):
            yield Item(folder, "clip", caption.strip())

    def _usable(self, path: Path, kind: str, caption: str | None) -> bool:
        """Whether ``path`` has a caption and opens, with the frames a sample needs; if not, count why."""
        if caption is None:
            return self._skip(NO_CAPTION, path)
        if not caption.strip():
            return self._skip(EMPTY_CAPTION, path)
        try:
            if kind == "image":
                _verify_image(path)
            elif kind == "video":
                if len(read_video_frames(path, self.frames_needed)) < self.frames_needed:
                    return self._skip(TOO_SHORT, path)
            else:
                frames = _clip_frames(path)
                if len(frames) < self.frames_needed:
                    return self._skip(TOO_SHORT, path)
                for f in frames[: self.frames_needed: self.frame_stride]:
                    _verify_image(f)
        except Exception:  # whatever the decoders raise for a broken file
            return self._skip(UNREADABLE, path)
        return True

    def _read_metadata(self, folder: Path) -> None:
        path = folder / METADATA
        if not path.is_file():
            return
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                name = entry["file_name"]
                caption = next((entry[k] for k in CAPTION_KEYS if k in entry), None)
                if not isinstance(name, str) or not (caption is None or isinstance(caption, str)):
                    raise TypeError("file_name and the caption must be strings")
            except (ValueError, KeyError, TypeError):
                self._skip(BAD_METADATA, f"{path.relative_to(self.root)}:{number}")
                continue
            self._metadata[Path(os.path.normpath(folder / name))] = caption

    def _skip(self, reason: str, path: Path | str) -> bool:
        if isinstance(path, Path) and path.is_relative_to(self.root):
            path = path.relative_to(self.root)
        self.skipped.setdefault(reason, []).append(str(path))
        return False

    def _to_tensor(self, image: Any) -> torch.Tensor:
        """A PIL image or (H, W, 3) uint8 array -> (3, S, S) float in [-1, 1]: shorter side to S, centre crop."""
        from PIL import Image

        im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)[..., :3])
        im = im.convert("RGB")
        s = self.resolution
        scale = s / min(im.size)
        w, h = max(s, round(im.width * scale)), max(s, round(im.height * scale))
        im = im.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - s) // 2, (h - s) // 2
        arr = np.asarray(im.crop((left, top, left + s, top + s)), dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def _clip_frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _verify_image(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()


def _open_image(path: Path) -> Any:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")  # phones store rotation in EXIF


def read_video_frames(path: str | Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a video as (H, W, 3) uint8 (fewer if it is shorter), decoding no further."""
    import imageio.v3 as iio

    path = Path(path)
    plugin, kwargs = ("pillow", {"mode": "RGB"}) if path.suffix.lower() == ".gif" else ("FFMPEG", {})
    frames = []
    with iio.imopen(path, "r", plugin=plugin) as video:
        for frame in video.iter(**kwargs):
            frames.append(np.asarray(frame)[..., :3])
            if len(frames) == count:
                break
    return frames


# ---- the latent + text-embedding cache ------------------------------------------------------------
CACHE_INDEX = "gentron_cache.json"
CACHE_FORMAT = "gentron-latent-cache"
CACHE_VERSION = 1


def is_cache(path: str | Path) -> bool:
    return (Path(path) / CACHE_INDEX).is_file()


def encoder_fingerprint(pipe: Any) -> str:
    """A short hash of the frozen encoders' weights (64 evenly spaced values of every tensor of the VAE
    encoder and the text towers): a cache is valid only for the encoders that wrote it. The VAE decoder
    is left out, so a fine-tuned decoder keeps the cache valid."""
    modules = [pipe.vae.encoder, getattr(pipe.vae, "quant_conv", None), *(t.encoder for t in pipe.towers)]
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in ({} if module is None else module.state_dict()).items():
            flat = tensor.detach().flatten()
            picks = flat[torch.linspace(0, flat.numel() - 1, min(64, flat.numel())).long().to(flat.device)]
            h.update(name.encode())
            h.update(picks.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_encoder_pipeline(model: str, seed: int = 0) -> Any:
    """The pipeline whose VAE and text towers fill a cache: a folder (or hub id), or ``random:PRESET`` built
    exactly as the trainer builds ``init_from: random:PRESET`` with ``seed``."""
    if model.startswith("random:"):
        from ..factory import build_random_pipeline

        return build_random_pipeline(model.split(":", 1)[1], temporal=False, seed=seed)
    from ..loading import load_pipeline

    return load_pipeline(model)


@torch.no_grad()
def build_cache(data: str | Path | MediaFolder, model: str, out: str | Path, resolution: int = 64, frames: int = 1,
                frame_stride: int = 1, batch_size: int = 16, shard_size: int = 1024, device: str | None = None,
                seed: int = 0, overwrite: bool = False) -> "LatentCache":
    """Encode every readable item of ``data`` once into ``out``; returns the cache. Items that fail to
    read are skipped and counted (not replaced, unlike training reads)."""
    from safetensors.torch import save_file

    from ..training.encode import FrozenEncoders

    folder = data if isinstance(data, MediaFolder) else MediaFolder(data, resolution, frames, frame_stride)
    out = Path(out)
    if is_cache(out) and not overwrite:
        raise FileExistsError(f"{out} already holds a cache; pass overwrite=True (--overwrite) to rebuild it")
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_encoder_pipeline(model, seed)
    encoders = FrozenEncoders(pipe, torch.device(device), cache_text=False)
    folder.check_pipeline(pipe)

    entries: list[dict[str, Any]] = []
    shard: dict[str, torch.Tensor] = {}  # "KEY.mean", "KEY.logvar", "KEY.text" of the items not yet written

    def shard_name() -> str:
        return f"shard_{len(entries) // shard_size:05d}.safetensors"  # the shard the next item goes to

    def flush(name: str) -> None:
        save_file(shard, str(out / f".tmp-{name}"))
        os.replace(out / f".tmp-{name}", out / name)
        shard.clear()

    for start in range(0, len(folder), batch_size):
        samples, items = [], []
        for i in range(start, min(start + batch_size, len(folder))):
            try:
                samples.append(folder.load(i))
                items.append(folder.items[i])
            except Exception as e:
                folder._skip(READ_ERROR, folder.items[i].path)
                logger.warning("skipping %s, which could not be read (%s: %s)", folder.items[i].path,
                               type(e).__name__, e)
        if not samples:
            continue
        pixels = torch.cat([s["pixels"] for s in samples])  # every frame of every sample: one VAE batch
        moments = encoders.vae.encode(pixels.to(encoders.device, encoders.vae.dtype)).latent_dist.parameters
        per_sample = moments.float().cpu().split([s["pixels"].shape[0] for s in samples])
        for item, sample, posterior in zip(items, samples, per_sample):
            key, name = str(len(entries)), shard_name()
            mean, logvar = posterior.chunk(2, dim=1)  # diffusers' layout; logvar clamped as the posterior does
            shard[f"{key}.mean"], shard[f"{key}.logvar"] = mean.contiguous(), logvar.clamp(-30.0, 20.0).contiguous()
            shard[f"{key}.text"] = encoders.caption(sample["caption"]).float().contiguous()
            entries.append({"key": key, "file": str(item.path.relative_to(folder.root)), "caption": sample["caption"],
                            "frames": int(mean.shape[0]), "shard": name})
            if shard_name() != name:  # that item filled its shard
                flush(name)
    if shard:
        flush(entries[-1]["shard"])
    if not entries:
        raise ValueError(f"nothing to cache: {folder.summary()}")
    index = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "model": str(model), "seed": seed,
             "fingerprint": encoder_fingerprint(pipe), "resolution": resolution, "frames": frames,
             "frame_stride": frame_stride, "latent_channels": pipe.vae.config.latent_channels,
             "text_dim": sum(t.dim for t in pipe.towers), "items": entries, "skipped": folder.skipped}
    tmp = out / f".tmp-{CACHE_INDEX}"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / CACHE_INDEX)  # the index lands last: a cache with an index is complete
    logger.info("cached %d samples in %s (%s)", len(entries), out, folder.summary())
    return LatentCache(out, resolution, frames)


class LatentCache:
    """A cache written by ``build_cache``, as a map-style dataset of
    ``{"latent_mean": (F, C, h, w), "latent_logvar": (F, C, h, w), "text": (L, D), "caption": str}``
    samples (F = 1 for images). ``resolution`` and ``frames``, when given, must be those it was built with."""

    def __init__(self, root: str | Path, resolution: int | None = None, frames: int | None = None):
        self.root = Path(root)
        if not is_cache(self.root):
            raise ValueError(f"{self.root} holds no {CACHE_INDEX}: build the cache with "
                             "`python -m gentron.data.folders cache` (an interrupted build leaves none)")
        self.index = json.loads((self.root / CACHE_INDEX).read_text())
        if self.index.get("format") != CACHE_FORMAT or self.index.get("version") != CACHE_VERSION:
            raise ValueError(f"{self.root / CACHE_INDEX} is not a version-{CACHE_VERSION} {CACHE_FORMAT} index")
        for name, want in (("resolution", resolution), ("frames", frames)):
            if want is not None and self.index[name] != want:
                raise ValueError(f"the cache {self.root} was built with {name}={self.index[name]}, the run asks for "
                                 f"{want}: train with {name}={self.index[name]} or rebuild the cache")
        self.items: list[dict[str, Any]] = self.index["items"]
        self._shards: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        entry = self.items[index]
        shard = self._shard(entry["shard"])
        key = entry["key"]
        return {"latent_mean": shard.get_tensor(f"{key}.mean"), "latent_logvar": shard.get_tensor(f"{key}.logvar"),
                "text": shard.get_tensor(f"{key}.text"), "caption": entry["caption"]}

    def _shard(self, name: str) -> Any:
        if name not in self._shards:
            from safetensors import safe_open

            self._shards[name] = safe_open(str(self.root / name), framework="pt")
        return self._shards[name]

    def check_pipeline(self, pipe: Any) -> None:
        """Raise unless ``pipe``'s VAE encoder and text towers are the ones that wrote this cache."""
        if encoder_fingerprint(pipe) != self.index["fingerprint"]:
            raise ValueError(f"the cache {self.root} was built with other encoders (model {self.index['model']!r}, "
                             f"seed {self.index['seed']}) than this run's VAE and text towers: rebuild it with "
                             "--model set to init_from (and --seed to the run's seed for random:PRESET)")


# ---- command line ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gentron.data.folders",
                                     description="Check a data folder, or cache its VAE latents and text embeddings.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("scan", "count the usable samples and the skipped files, by reason"),
                       ("cache", "encode every sample once into safetensors shards + an index")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--data", required=True, help="the folder of images / videos / clips with captions")
        sub.add_argument("--resolution", type=int, default=64)
        sub.add_argument("--frames", type=int, default=1)
        sub.add_argument("--frame-stride", type=int, default=1, help="take every Nth frame of a video")
        sub.add_argument("-v", "--verbose", action="store_true", help="list the skipped files")
        if name == "cache":
            sub.add_argument("--model", required=True, help="the pipeline folder training will init_from, or "
                             "random:PRESET")
            sub.add_argument("--out", required=True, help="the cache folder to write (then train with data: OUT)")
            sub.add_argument("--seed", type=int, default=0, help="the run's seed, for random:PRESET only")
            sub.add_argument("--batch-size", type=int, default=16, help="samples per VAE call")
            sub.add_argument("--shard-size", type=int, default=1024, help="samples per safetensors shard")
            sub.add_argument("--device", help="default: cuda if available, else cpu")
            sub.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the scan's summary line, the cache's progress
    try:
        folder = MediaFolder(args.data, args.resolution, args.frames, args.frame_stride)
        if args.command == "cache":
            cache = build_cache(folder, args.model, args.out, args.resolution, args.frames, args.frame_stride,
                                args.batch_size, args.shard_size, args.device, args.seed, args.overwrite)
            print(f"{len(cache)} samples cached in {cache.root}")
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    if args.verbose:
        for reason, paths in folder.skipped.items():
            print("\n".join(f"{reason}: {p}" for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
