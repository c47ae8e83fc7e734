"""CLIP score and FID through torchmetrics, for full-size models whose judges the user has locally.

The Shapes World checker (checker.py) needs no weights; these two metrics need a CLIP model, which
nothing here downloads. Point ``--clip`` at a local folder (or a hub id already in the cache) holding a
transformers ``CLIPModel`` and its processor, e.g. ``openai/clip-vit-large-patch14``.

- CLIP score (torchmetrics ``CLIPScore``): 100 x cosine of image and prompt embeddings, floored at 0,
  averaged over the generated images.
- FID (torchmetrics ``FrechetInceptionDistance``): between the generated images and real ones, in the
  feature space of the same CLIP's image tower ("FID-CLIP", as clean-fid's ``clip_vit_b_32`` mode), or of
  Inception-v3 when torch-fidelity and its weights file are installed (``--fid-features inception``).
  The real images are a folder of the user's (``--real-dir``) or, by default, Shapes World renders of
  the same captions, which is the built-in model's training distribution.

With a tiny random CLIP (the tests) the numbers are plumbing only: they check the wiring, not quality.

    python -m gentron eval --suite quality --clip PATH [--real-dir DIR] --n-images 200 --out-dir runs/q
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..jobs import GenerationSettings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def load_clip(path: str) -> tuple[nn.Module, object]:
    """A local (or cached) ``CLIPModel`` and ``CLIPProcessor``; a clear error if the folder lacks either."""
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(path).eval().requires_grad_(False)
        processor = CLIPProcessor.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"--clip {path!r} is not a CLIPModel folder with its processor ({type(e).__name__}: {e}); "
                         "save one with model.save_pretrained(DIR) and processor.save_pretrained(DIR)") from e
    return model, processor


def _embedding(out: object) -> torch.Tensor:
    return getattr(out, "pooler_output", out)  # transformers 5 wraps the projected embedding in an output object


class TensorCLIP(nn.Module):
    """A CLIPModel whose ``get_*_features`` return tensors: torchmetrics 1.9 expects transformers 4's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _embedding(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _embedding(self.model.get_text_features(*args, **kwargs))


class ClipImageFeatures(nn.Module):
    """uint8 images (N, 3, H, W) -> CLIP image embeddings (N, D): the feature map torchmetrics' FID calls."""

    def __init__(self, model: nn.Module, processor: object):
        super().__init__()
        self.model, self.processor = model, processor
        self.num_features = int(model.config.projection_dim)  # torchmetrics reads this instead of probing

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.processor(images=list(images.cpu()), return_tensors="pt")["pixel_values"]
        out = _embedding(self.model.get_image_features(pixel_values=pixels.to(self.model.device)))
        return out.double()  # FID's covariance in float64, as torchmetrics does with Inception


def to_uint8_nchw(images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays, all of one size -> one (N, 3, H, W) uint8 tensor."""
    if not images:
        raise ValueError("no images to score")
    sizes = {im.shape for im in images}
    if len(sizes) != 1:
        raise ValueError(f"images must share one size to be batched, got {sorted(sizes)}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def clip_score(images: list[np.ndarray], prompts: list[str], model: nn.Module, processor: object,
               batch_size: int = 32) -> float:
    """torchmetrics' CLIPScore of images against their prompts (higher is better, 0-100)."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts: give one prompt per image")
    metric = CLIPScore(model_name_or_path=lambda: (TensorCLIP(model), processor))
    x = to_uint8_nchw(images)
    for i in range(0, len(prompts), batch_size):
        metric.update(list(x[i:i + batch_size]), prompts[i:i + batch_size])
    return float(metric.compute())


@torch.no_grad()
def fid(real: list[np.ndarray], fake: list[np.ndarray], features: nn.Module | int, batch_size: int = 32,
        inception_weights: str | None = None) -> float:
    """torchmetrics' FID between two sets of uint8 (H, W, 3) images; ``features`` is a feature module
    (``ClipImageFeatures``) or an Inception feature width (64, 192, 768 or 2048, needs torch-fidelity)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if min(len(real), len(fake)) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(real)} real and {len(fake)} generated")
    if isinstance(features, int):
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        if not _TORCH_FIDELITY_AVAILABLE:
            raise ValueError("--fid-features inception needs torch-fidelity (pip install torch-fidelity, which "
                             "needs torchvision) and its weights; --fid-features clip needs only --clip")
        metric = FrechetInceptionDistance(feature=features, feature_extractor_weights_path=inception_weights)
    else:
        metric = FrechetInceptionDistance(feature=features)
    for images, is_real in ((real, True), (fake, False)):
        x = to_uint8_nchw(images)
        for i in range(0, len(x), batch_size):
            metric.update(x[i:i + batch_size], real=is_real)
    return float(metric.compute())


def read_images(folder: Path, size: int) -> list[np.ndarray]:
    """Every image in ``folder``, RGB, resized to ``size`` x ``size`` (unreadable files are skipped)."""
    from PIL import Image

    if not folder.is_dir():
        raise ValueError(f"--real-dir {str(folder)!r} is not a folder of images")
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as im:
                out.append(np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)))
        except OSError:
            continue
    if len(out) < 2:
        raise ValueError(f"--real-dir {str(folder)!r} holds {len(out)} readable images; FID needs at least 2")
    return out


def shapes_references(prompts: list[str], size: int, seed: int) -> list[np.ndarray]:
    """Shapes World renders of the captions: the real distribution for a Shapes World model."""
    from ..data.shapes import parse_caption, render

    rng = np.random.default_rng(seed)
    return [render(parse_caption(p), size=size, frames=1, rng=rng)[0] for p in prompts]


def run_quality(pipe, out_dir: Path, gen_args: GenerationSettings, clip: str, n_images: int, seed: int = 0,
                real_dir: str | None = None, fid_features: str = "clip",
                inception_weights: str | None = None) -> dict:
    """Generate CompBench image prompts, then write quality.json with the CLIP score and FID."""
    from ..jobs import run_jobs
    from ..export import read_video
    from .compbench import draw_prompts

    if fid_features not in ("clip", "inception"):
        raise ValueError(f"--fid-features must be clip or inception, got {fid_features!r}")
    model, processor = load_clip(clip)  # fail before generating anything
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = draw_prompts(n_images, 0, seed)
    for job in jobs:
        job["out"] = str(out_dir / f"{job['id']}.png")
    fake = [read_video(line["path"])[0] for line in run_jobs(pipe, jobs, gen_args)]
    prompts = [job["prompt"] for job in jobs]
    size = fake[0].shape[0]
    real = read_images(Path(real_dir), size) if real_dir else shapes_references(prompts, size, seed)
    features = ClipImageFeatures(model, processor) if fid_features == "clip" else 2048
    result = {"suite": "quality", "seed": seed, "n_images": n_images, "clip": clip,
              "real": real_dir or "shapes-world renders of the same captions", "fid_features": fid_features,
              "clip_score": clip_score(fake, prompts, model, processor),
              "clip_score_real": None if real_dir else clip_score(real, prompts, model, processor),
              "fid": fid(real, fake, features, inception_weights=inception_weights)}
    (out_dir / "quality.json").write_text(json.dumps(result, indent=1))
    return result
