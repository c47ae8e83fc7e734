"""Exponential moving average of a model's parameters, saved and loaded as a plain state dict.

Works on ordinary tensors and on FSDP2's sharded DTensors: the shadow copy is sharded like the
parameter it follows, and ``state_dict`` gathers full tensors (a collective: every rank calls it).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def clean_name(name: str) -> str:
    """A parameter name as the unwrapped model's state dict spells it (wrappers add prefixes)."""
    for wrapper in ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module."):
        name = name.replace(wrapper, "")
    return name[len("module."):] if name.startswith("module.") else name


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param, after every optimizer step."""

    def __init__(self, named_parameters: Iterable[tuple[str, torch.Tensor]], decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        # fp32 whatever the model's dtype: the average of many tiny updates must not round away
        self.shadow = {clean_name(n): p.detach().clone().float() for n, p in named_parameters if p.requires_grad}

    def decay_at(self, step: int) -> float:
        """The decay used after optimizer step ``step`` (0-based); warmup keeps early EMAs close to the weights."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, named_parameters: Iterable[tuple[str, torch.Tensor]], step: int) -> None:
        weight = 1.0 - self.decay_at(step)
        shadows, params = [], []
        for name, p in named_parameters:
            name = clean_name(name)
            if name in self.shadow:
                shadows.append(_local(self.shadow[name]))
                params.append(_local(p.detach()).float())
        torch._foreach_lerp_(shadows, params, weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) fp32 tensors on the CPU, keyed like the model's state dict."""
        return {n: (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu() for n, t in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = set(self.shadow) - set(state), set(state) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(f"EMA state does not match the model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        for name, target in self.shadow.items():
            full = state[name].to(torch.float32)
            if isinstance(target, DTensor):  # every rank holds the full tensor: take our shard, no communication
                full = distribute_tensor(full.to(target.device), target.device_mesh, target.placements,
                                         src_data_rank=None)
            _local(target).copy_(_local(full))


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t
