"""Resumable checkpoints, written atomically, in safetensors and JSON only (nothing is pickled).

Layout of ``checkpoints/step_00001000/``::

    transformer.safetensors   full fp32 weights (gathered from shards under FSDP)
    ema.safetensors           the EMA shadow weights
    optimizer.safetensors     AdamW tensors, keyed "PARAM_NAME::exp_avg" and so on
    optimizer.json            param groups and any non-tensor optimizer state
    rank{R}.safetensors       torch (and CUDA) generator states of process R
    rank{R}.json              Python's and NumPy's generator states of process R, and its unlogged losses
    params_rank{R}.sha256     hash of process R's parameters (replicas must agree under DDP)
    trainer_state.json        step, world size, config and the size of every file: written last

Everything is written into ``.tmp-step_N`` and renamed to ``step_N`` in one ``os.replace``; a
directory counts only if its name matches and its ``trainer_state.json`` lists files that are all
there with their recorded sizes. A crash mid-write therefore leaves a ``.tmp-`` folder, which
resume ignores (and deletes). The data position needs no saving: batches are addressed by step
(see data.py), and the per-step generators are seeded from (seed, step, rank).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.tensor import DTensor

from .ema import EMA, clean_name

STATE_FILE = "trainer_state.json"
NAME = re.compile(r"^step_(\d+)$")
FORMAT = 1
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)  # full tensors, on rank 0 only when distributed
_SCATTER = StateDictOptions(full_state_dict=True)  # every rank passes the full dict; FSDP keeps its shard


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def is_complete(path: Path) -> bool:
    """True when ``path`` is a finished checkpoint: right name, state file last, every file its recorded size."""
    if not (path.is_dir() and NAME.match(path.name)):
        return False
    try:
        state = json.loads((path / STATE_FILE).read_text())
        return all((path / f).is_file() and (path / f).stat().st_size == size for f, size in state["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if is_complete(p)]
    return max(done, key=lambda p: int(NAME.match(p.name).group(1)), default=None)


def remove_partial(root: Path) -> list[Path]:
    """Delete what crashed writes left (``.tmp-*`` folders, step folders without a valid state file)."""
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and (p.name.startswith(".tmp-") or (NAME.match(p.name) and not is_complete(p))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


# ---- save ----------------------------------------------------------------------------------------
def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA,
                    accelerator: Accelerator, config: dict[str, Any], keep: int,
                    rank_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``step`` (a collective: every process calls it) and prune to the newest ``keep``.

    ``rank_state``: this process's own JSON-able values, handed back by ``load_checkpoint``."""
    final = checkpoint_dir(root, step)
    optimizer = _raw(optimizer)
    # gathering is collective: every rank takes part, rank 0 ends up holding the full tensors
    weights = full_weights(model)
    optim = get_optimizer_state_dict(model, optimizer, options=_GATHER)
    ema_state = ema.state_dict()
    main, rank = accelerator.is_main_process, accelerator.process_index

    tmp = root / f".tmp-{final.name}"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    _save_rank(tmp, rank, rank_state or {})
    (tmp / f"params_rank{rank}.sha256").write_text(parameter_hash(model) + "\n")
    accelerator.wait_for_everyone()
    if main:
        _save_tensors(weights, tmp / "transformer.safetensors")
        _save_tensors(ema_state, tmp / "ema.safetensors")
        tensors, rest = _split_optimizer_state(optim)
        _save_tensors(tensors, tmp / "optimizer.safetensors")
        _write_text(tmp / "optimizer.json", json.dumps(rest))
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        state = dict(format=FORMAT, step=step, world_size=accelerator.num_processes, config=config, files=files)
        _write_text(tmp / STATE_FILE, json.dumps(state, indent=1))  # last: its presence means "complete"
        _fsync(tmp)
        if final.exists():  # only ever an incomplete leftover: a complete one would have been resumed from
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
        done = sorted((p for p in root.iterdir() if is_complete(p)), key=lambda p: int(NAME.match(p.name).group(1)))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict on the CPU, unwrapped names (a collective; empty on ranks > 0 when distributed)."""
    return get_model_state_dict(model, options=_GATHER)


def parameter_hash(model: torch.nn.Module) -> str:
    """sha256 of this process's parameters (its shards under FSDP), in name order."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: clean_name(kv[0])):
        t = p.detach().to_local() if isinstance(p, DTensor) else p.detach()
        h.update(clean_name(name).encode())
        h.update(t.float().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---- load ----------------------------------------------------------------------------------------
def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA,
                    accelerator: Accelerator) -> dict[str, Any]:
    """Restore weights, optimizer, EMA and this process's generators from ``path``.

    Returns trainer_state.json's content with this process's ``rank_state`` under "rank_state"."""
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} has checkpoint format {state.get('format')}, this code reads {FORMAT}")
    set_model_state_dict(model, load_file(path / "transformer.safetensors"), options=_SCATTER)
    optim = _join_optimizer_state(load_file(path / "optimizer.safetensors"),
                                  json.loads((path / "optimizer.json").read_text()))
    set_optimizer_state_dict(model, _raw(optimizer), optim, options=_SCATTER)
    ema.load_state_dict(load_file(path / "ema.safetensors"))
    state["rank_state"] = _load_rank(path, accelerator.process_index)
    return state


# ---- pieces --------------------------------------------------------------------------------------
def _raw(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's AcceleratedOptimizer wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def _split_optimizer_state(osd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """{"state": {param: {key: value}}, "param_groups": [...]} -> (tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for param, entries in osd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}::{key}"] = value
            else:
                scalars.setdefault(param, {})[key] = value
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for name, value in tensors.items():
        param, key = name.rsplit("::", 1)
        state.setdefault(param, {})[key] = value
    for param, entries in rest["scalars"].items():
        state.setdefault(param, {}).update(entries)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def _save_rank(folder: Path, rank: int, rank_state: dict[str, Any]) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    _save_tensors(tensors, folder / f"rank{rank}.safetensors")
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    _write_text(folder / f"rank{rank}.json", json.dumps(dict(
        python=[version, list(mt), gauss], numpy=[kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        rank_state=rank_state)))


def _load_rank(folder: Path, rank: int) -> dict[str, Any]:
    """Restore this rank's generators and return its rank_state; a rank the checkpoint didn't have
    (more processes now) keeps its own generators and gets {}."""
    if not (folder / f"rank{rank}.json").is_file():
        return {}
    tensors = load_file(folder / f"rank{rank}.safetensors")
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    d = json.loads((folder / f"rank{rank}.json").read_text())
    version, mt, gauss = d["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = d["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return d.get("rank_state", {})


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    _fsync(path)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    """Flush a file or a directory entry to disk, so a rename never lands before the data it names."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
