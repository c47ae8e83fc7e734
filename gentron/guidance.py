"""Classifier-free and motion-free guidance as one weighted sum of batched branches.

Both rules are linear in the branch predictions. Motion-free guidance (the paper's Eq.) is

    eps = e(x,∅,∅) + λT·(e(x,cT,cM) − e(x,∅,cM)) + λM·(e(x,∅,cM) − e(x,∅,∅))
        = λT·e(cT, motion) + (λM − λT)·e(∅, motion) + (1 − λM)·e(∅, no motion)

and classifier-free guidance is its one-frame case, λT·e(cT) + (1 − λT)·e(∅). So guidance is a
list of (text, motion, weight) branches; the branches with non-zero weight run as one batched
forward, and a zero weight (λM = 1, λT = 1, …) costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any, torch.Tensor | None, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Branch:
    conditional: bool  # True: the prompt's text; False: the empty (or negative) text
    motion: bool  # False: the temporal mask is the identity (motion-free)


def guidance_weights(text_scale: float, motion_scales: list[float] | None) -> tuple[list[Branch], torch.Tensor]:
    """The branches of CFG (``motion_scales=None``: images) or MFG (videos) and their weights.

    ``motion_scales`` holds one λM per sample, so one batch can compare several motion strengths.
    Returns (branches, weights (n_branches, B)); a branch whose weight is zero for every sample
    is dropped.
    """
    if motion_scales is None:
        branches = [Branch(True, True), Branch(False, True)]
        weights = torch.tensor([[text_scale], [1.0 - text_scale]], dtype=torch.float64)
    else:
        m = torch.tensor(motion_scales, dtype=torch.float64)
        branches = [Branch(True, True), Branch(False, True), Branch(False, False)]
        weights = torch.stack([torch.full_like(m, text_scale), m - text_scale, 1.0 - m])
    keep = [i for i in range(len(branches)) if weights[i].abs().sum() > 0]
    return [branches[i] for i in keep], weights[keep]


def stack_branches(cond: tuple[torch.Tensor, torch.Tensor], uncond: tuple[torch.Tensor, torch.Tensor],
                   branches: list[Branch]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text of every branch stacked in branch order, as ``guided_noise``'s batched forward takes it.

    cond/uncond: (embeddings (B, L, D), mask (B, L)) padded to the same L -> ((n·B, L, D), (n·B, L)).
    The same at every step: a sampler stacks (and may prepare) it once per request."""
    text = torch.cat([(cond if br.conditional else uncond)[0] for br in branches])
    mask = torch.cat([(cond if br.conditional else uncond)[1] for br in branches])
    return text, mask


def guided_noise(model: Denoiser, x: torch.Tensor, t: torch.Tensor, text: Any, mask: torch.Tensor | None,
                 branches: list[Branch], weights: torch.Tensor) -> torch.Tensor:
    """Run every branch in one forward over a stacked batch and combine them by their weights.

    x: (B, C, F, H, W); text, mask: from ``stack_branches`` (or text in any form the model takes, such as
    GenTronTransformer's Prepared request, with mask None); weights: (n_branches, B) or (n_branches, 1).
    """
    b, n = x.shape[0], len(branches)
    motion = torch.tensor([br.motion for br in branches], device=x.device).repeat_interleave(b)
    eps = model(x.repeat(n, *([1] * (x.dim() - 1))), t.expand(b).repeat(n), text, mask, motion)
    eps = eps.float().view(n, b, *eps.shape[1:])
    w = weights.to(eps.device, torch.float32).expand(n, b).reshape(n, b, *([1] * (eps.dim() - 2)))
    return (w * eps).sum(0)
