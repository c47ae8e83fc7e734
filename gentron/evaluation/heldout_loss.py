"""Held-out denoising loss: how well a model predicts the noise on captions it never trained on.

CompBench counts finished pictures, which a short run may not draw yet; the loss moves from the first
steps, so small ablations can be compared on it (as DiT and scaling studies do). Every model sees the
same held-out Shapes World samples (``split="heldout"``: captions the trainer never draws), the same
noise and the same timesteps, spread evenly over the schedule, so two models' losses are paired
sample by sample and their difference has a small standard error.

- ``loss``: the objective's MSE (epsilon, or a flow model's velocity) with the caption; ``loss_empty``: with the empty text (what the model
  knows without the caption); ``text_gain``: 1 - loss / loss_empty, the share of the loss the caption
  removes, which is what the text conditioning is for. Also per third of the schedule (high noise
  decides layout and colour).

    python -m gentron eval --suite loss --model PATH --n-images 256 --out-dir runs/loss
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..data.shapes import sample
from ..diffusion import NoiseSchedule
from ..text import encode_text

BUCKETS = (("high noise", 667, 1000), ("mid noise", 333, 667), ("low noise", 0, 333))


def heldout_samples(n: int, frames: int, size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """n held-out Shapes World samples: pixels (n, F, 3, S, S) in [-1, 1] and their captions."""
    rng = np.random.default_rng(seed)
    pixels, captions = [], []
    for _ in range(n):
        frames_u8, caption, _ = sample(rng, size, frames, video=frames > 1, split="heldout")
        pixels.append(torch.from_numpy(frames_u8).permute(0, 3, 1, 2).float() / 127.5 - 1)
        captions.append(caption)
    return torch.stack(pixels), captions


@torch.no_grad()
def per_sample_losses(pipe, pixels: torch.Tensor, captions: list[str], seed: int, batch_size: int = 32
                      ) -> dict[str, torch.Tensor]:
    """The objective's MSE of every sample with its caption and with the empty text, on fixed noise and
    evenly spread timesteps; returns ``{"t", "loss", "loss_empty"}`` tensors of length n."""
    transformer, vae = pipe.transformer, pipe.vae
    device, dtype = transformer.device, transformer.dtype
    schedule, flow = NoiseSchedule(), pipe.objective == "flow"
    n, frames = pixels.shape[:2]
    if frames > 1 and not transformer.config.temporal:
        raise ValueError("video samples need a text-to-video model; use --n-videos 0 for an image model")
    g = torch.Generator().manual_seed(seed)
    t_all = (torch.arange(n) * schedule.num_train_timesteps // n)[torch.randperm(n, generator=g)]
    out = {"t": t_all, "loss": torch.empty(n), "loss_empty": torch.empty(n)}
    empty = encode_text(pipe.towers, [""])  # the same for every sample: encoded once
    cfg = vae.config
    for i in range(0, n, batch_size):
        px = pixels[i:i + batch_size]
        b = px.shape[0]
        z = vae.encode(px.flatten(0, 1).to(device, vae.dtype)).latent_dist.mean.float()  # the mean: no sampling noise
        z = (z - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor
        x0 = rearrange(z, "(b f) c h w -> b c f h w", b=b)
        noise = torch.randn(x0.shape, generator=g)
        t = t_all[i:i + b].to(device)
        if flow:  # x_σ = (1 − σ)·x0 + σ·ε at σ = t / 1000, target ε − x0
            sigma = (t.float() / schedule.num_train_timesteps).view(-1, 1, 1, 1, 1)
            xt, target = ((1 - sigma) * x0 + sigma * noise.to(device)).to(dtype), noise - x0.cpu()
        else:
            xt, target = schedule.q_sample(x0, noise.to(device), t).to(dtype), noise
        for key, (emb, mask) in (("loss", encode_text(pipe.towers, captions[i:i + b])),
                                 ("loss_empty", tuple(e.expand(b, *e.shape[1:]) for e in empty))):
            eps = transformer(xt, t, emb.to(device, dtype), mask.to(device))  # no motion mask: every clip moves
            out[key][i:i + b] = (eps.float().cpu() - target).square().flatten(1).mean(1)
    return out


def summarise_losses(losses: dict[str, torch.Tensor]) -> dict:
    """Means (with standard errors) overall and per third of the schedule, and the text gain."""
    def stats(mask: torch.Tensor) -> dict:
        a, e = losses["loss"][mask].double(), losses["loss_empty"][mask].double()
        k = int(mask.sum())
        return {"n": k, "loss": float(a.mean()), "loss_se": float(a.std() / math.sqrt(k)) if k > 1 else 0.0,
                "loss_empty": float(e.mean()), "text_gain": float(1 - a.mean() / e.mean())}

    everything = stats(torch.ones_like(losses["t"], dtype=torch.bool))
    everything["buckets"] = {name: stats((losses["t"] >= lo) & (losses["t"] < hi)) for name, lo, hi in BUCKETS}
    return everything


def run_heldout_loss(pipe, out_dir: Path, n_images: int, n_videos: int, seed: int = 0,
                     resolution: int | None = None) -> dict:
    """Write loss.json (summary and per-sample losses) for images and, for a T2V model, videos."""
    size = resolution or pipe.default_resolution
    result: dict = {"suite": "loss", "seed": seed, "resolution": size, "model": getattr(pipe, "name_or_path", None)}
    for kind, n, frames in (("images", n_images, 1), ("videos", n_videos, 8)):
        if n <= 0 or (frames > 1 and not pipe.transformer.config.temporal):
            continue
        pixels, captions = heldout_samples(n, frames, size, seed)
        losses = per_sample_losses(pipe, pixels, captions, seed)
        result[kind] = {**summarise_losses(losses), "per_sample": {k: v.tolist() for k, v in losses.items()}}
    if "images" not in result and "videos" not in result:
        raise ValueError("nothing to measure: give --n-images, or --n-videos with a text-to-video model")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "loss.json").write_text(json.dumps(result, indent=1))
    return result
