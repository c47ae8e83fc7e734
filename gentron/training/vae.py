"""Train the built-in model's small AutoencoderKL on Shapes World, and measure its PSNR.

64 px renders -> 16x16x4 latents (downsampling 4). The VAE is fully convolutional, so it trains on
random 32 px crops (four times cheaper) and is evaluated on whole held-out 64 px renders.

    python -m gentron.training.vae --out runs/builtin/vae --steps 3000
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..data.shapes import sample
from ..factory import build_vae

VAE_CHANNELS = (16, 32, 64)  # downsampling 4; measured 0.5 s/step at batch 32 of 64 px, so train on crops


def batch_of_frames(rng: np.random.Generator, n: int, size: int = 64) -> torch.Tensor:
    """n frames in [-1, 1], (n, 3, S, S): images and single frames of videos (rotated, scaled shapes)."""
    frames = []
    for i in range(n):
        video = i % 2 == 1
        clip, _, _ = sample(rng, size, 8 if video else 1, video)
        frames.append(clip[rng.integers(len(clip))])
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


def random_crops(x: torch.Tensor, crop: int, rng: np.random.Generator) -> torch.Tensor:
    out = []
    for img in x:
        i, j = rng.integers(0, x.shape[-1] - crop + 1, size=2)
        out.append(img[:, i:i + crop, j:j + crop])
    return torch.stack(out)


@torch.no_grad()
def psnr(vae, n: int = 256, seed: int = 12345, size: int = 64) -> float:
    """Mean PSNR (dB) of posterior-mode reconstructions of held-out renders, on 0..255 pixels."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n // 32):
        x = batch_of_frames(rng, 32, size)
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        a, b = ((x + 1) * 127.5).round(), ((rec + 1) * 127.5).round()
        mse = ((a - b) ** 2).flatten(1).mean(1).clamp(min=1e-3)
        values.append(10 * torch.log10(255.0**2 / mse))
    return float(torch.cat(values).mean())


@torch.no_grad()
def latent_scale(vae, seed: int = 7) -> float:
    """1/std of latents, the scaling factor that gives the diffusion model unit-variance inputs."""
    x = batch_of_frames(np.random.default_rng(seed), 64)
    return float(1.0 / vae.encode(x).latent_dist.mode().std())


def train_vae(out: Path, steps: int = 3000, batch: int = 32, crop: int = 32, lr: float = 1e-3, seed: int = 0,
              kl_weight: float = 1e-6, checkpoint_every: int = 500) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vae = build_vae(VAE_CHANNELS, latent_channels=4, sample_size=64, layers_per_block=1, norm_num_groups=8)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    step, log, started = 0, [], time.perf_counter()
    ckpt = out / "checkpoint"
    if (ckpt / "state.json").exists():  # resume: weights, optimiser moments and step
        vae.load_state_dict(load_file(ckpt / "vae.safetensors"))
        state = json.loads((ckpt / "state.json").read_text())
        opt_tensors = load_file(ckpt / "optimizer.safetensors")
        opt.load_state_dict(_unflatten_optimizer(opt, opt_tensors, state["optimizer"]))
        step = state["step"]
        sched.last_epoch = step - 1
        sched.step()
    while step < steps:
        rng = np.random.default_rng([seed, step])  # data is a function of the step: resumable
        x = random_crops(batch_of_frames(rng, batch), crop, rng)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(generator=torch.Generator().manual_seed(step))).sample.float()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 50 == 0:
            log.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - started})
            print(json.dumps(log[-1]), flush=True)
        if step % checkpoint_every == 0 or step == steps:
            _save_checkpoint(ckpt, vae, opt, step)
    vae.eval()
    vae.register_to_config(scaling_factor=latent_scale(vae))
    result = {"psnr_db": psnr(vae), "steps": steps, "seconds": time.perf_counter() - started,
              "scaling_factor": vae.config.scaling_factor, "parameters": sum(p.numel() for p in vae.parameters())}
    vae.save_pretrained(out / "vae")
    (out / "vae_metrics.json").write_text(json.dumps(result, indent=1))
    return result


def _save_checkpoint(ckpt: Path, vae, opt, step: int) -> None:
    """Atomic: write into a temporary folder, then rename over the old checkpoint."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, tmp / "vae.safetensors")
    tensors, meta = _flatten_optimizer(opt)
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": meta}))
    old = ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    if old.exists():
        import shutil

        shutil.rmtree(old)


def _flatten_optimizer(opt) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    return tensors, {"param_groups": sd["param_groups"], "keys": sorted(tensors)}


def _unflatten_optimizer(opt, tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key in meta["keys"]:
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = tensors[key]
    return {"state": state, "param_groups": meta["param_groups"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/builtin"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(train_vae(args.out, args.steps, args.batch, seed=args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
