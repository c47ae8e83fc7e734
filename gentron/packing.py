"""Serving on the CPU with linear weights packed ahead in oneDNN's blocked layout, GELU fused into the MLP.

``nn.Linear`` passes oneDNN a plain row-major weight on every call; a weight packed once ahead in oneDNN's own
layout (what inductor's freezing pass does for a compiled graph) is multiplied faster, and the exact GELU can run in
the same call (the gains by product and by whole step: docs/benchmarks.md, "Packed weights"). The products are the
same up to summation order and one rounding fewer in the fused GELU, so this is a serving switch like ``quantize``,
not a different model: bf16 packed scores within noise of bf16 unpacked on CompBench (docs/evaluation.md).

Packing works from outside the model: ``pack_linears`` swaps ``PackedLinear`` in for a model's plain float CPU
``nn.Linear`` layers, and ``PackedLinear.forward_rows`` serves ``gentron.layers.linear_rows`` (self-attention's
values alone). It applies in inference on the CPU; with gradients wanted, or on CUDA, a packed layer computes as the
plain one does. The weight stays an ordinary parameter, so a packed model saves, loads, casts, copies and takes
in-place edits like any other; the packed copy, remade when the weight changes, costs a second copy in memory.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

_ops = torch.ops.mkldnn


def packing_available() -> bool:
    """Whether this torch build has oneDNN (mkldnn) on the CPU, which packing needs."""
    return torch.backends.mkldnn.is_available() and hasattr(_ops, "_linear_pointwise")


@functools.cache
def _bf16_packs() -> bool:
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def packs(dtype: torch.dtype) -> bool:
    """Whether oneDNN packs weights of ``dtype`` on this CPU: bf16 needs AVX512 (BW, VL, DQ) or AVX-NE-CONVERT; an
    AVX2-only CPU multiplies such a layer plainly. Asked on every forward, so the CPU's answer is kept."""
    return dtype != torch.bfloat16 or _bf16_packs()


# oneDNN lays a packed weight out for a batch size; the one-row layout was as fast as the default one for whole steps
# at every size measured and faster below 1024 rows (docs/benchmarks.md, "Packed weights"), so one copy, in that one.
def _pack(weight: torch.Tensor) -> torch.Tensor:
    return _ops._reorder_linear_weight(weight.detach().contiguous(), 1)


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that, in inference on the CPU, multiplies by a copy of its weight packed in oneDNN's layout;
    ``activation="gelu"`` applies the exact GELU in the same oneDNN call.

    The weight stays an ordinary parameter (so state_dict, load_state_dict, ``.to()``, deepcopy and in-place edits
    work as on ``nn.Linear``); the packed copy is remade when the weight changes (its storage, version or dtype).
    With gradients wanted, or off the CPU, it computes as the plain layer does: the packed product has no backward.
    The price is a second copy of these weights in memory (``gentron.quantization.weight_bytes`` counts it)."""

    def __init__(self, linear: nn.Linear, activation: str = "none"):
        nn.Module.__init__(self)
        if activation not in ("none", "gelu"):
            raise ValueError(f"activation must be 'none' or 'gelu' (exact), got {activation!r}")
        self.in_features, self.out_features, self.activation = linear.in_features, linear.out_features, activation
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters, shared
        self._packed: dict[int, tuple[tuple, torch.Tensor]] = {}  # first row -> (weight's key, packed rows)
        if self.weight.device.type == "cpu" and self.weight.is_floating_point() and packs(self.weight.dtype):
            self.packed_rows(0)

    def _key(self) -> tuple:
        w = self.weight
        return w.data_ptr(), w._version, w.dtype, w.device

    def packed_rows(self, start: int = 0) -> torch.Tensor:
        """The packed copy of the weight's rows ``start:``, made now if the weight changed since."""
        key = self._key()
        if start not in self._packed or self._packed[start][0] != key:
            with torch.no_grad():
                self._packed[start] = key, _pack(self.weight[start:])
        return self._packed[start][1]

    def _plain(self) -> bool:
        w = self.weight
        return (w.device.type != "cpu" or not w.is_floating_point() or type(w.data) is not torch.Tensor
                or not packs(w.dtype)
                or torch.is_grad_enabled())  # gradients may be wanted: only the plain product has a backward

    def forward_rows(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The layer restricted to its output rows ``start:`` (self-attention's values alone when start = 2 width)."""
        bias = None if self.bias is None else self.bias[start:]
        if self._plain():
            y = F.linear(x, self.weight[start:], bias)
            return F.gelu(y) if self.activation == "gelu" else y
        algorithm = "none" if self.activation == "gelu" else ""  # "none": the exact GELU, not the tanh one
        return _ops._linear_pointwise(x.contiguous(), self.packed_rows(start), bias, self.activation, [], algorithm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_rows(x, 0)

    def packed_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for _, p in self._packed.values())

    def __getstate__(self):  # deepcopy and pickle: oneDNN tensors have no storage to copy; remade on first use
        return {**self.__dict__, "_packed": {}}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", packed for oneDNN, activation={self.activation}"


def _packable(linear: nn.Module) -> bool:
    """A plain float nn.Linear on the CPU (not a quantized one: torchao keeps nn.Linear with a tensor subclass)."""
    w = getattr(linear, "weight", None)
    return (type(linear) is nn.Linear and w is not None and type(w.data) is torch.Tensor
            and w.is_floating_point() and w.device.type == "cpu")


def pack_linears(module: nn.Module) -> nn.Module:
    """Pack ``module``'s plain float CPU linear layers in place (returns it). A child ``fc1`` followed by an exact
    ``nn.GELU`` named ``act`` (gentron.layers.Mlp) gets the GELU fused, and its ``act`` becomes an identity.
    Quantized layers, and everything on CUDA, stay as they are."""
    if not packing_available():
        return module
    for child in list(module.modules()):
        act = getattr(child, "act", None)
        fuse = isinstance(act, nn.GELU) and act.approximate == "none" and _packable(getattr(child, "fc1", None))
        if fuse:
            child.fc1, child.act = PackedLinear(child.fc1, "gelu"), nn.Identity()
        for leaf, sub in list(child.named_children()):
            if _packable(sub):
                setattr(child, leaf, PackedLinear(sub))
    return module


def unpack_linears(module: nn.Module) -> nn.Module:
    """Undo ``pack_linears`` in place (returns it): plain ``nn.Linear`` layers on the same parameters, fused GELUs
    split out again."""
    for child in list(module.modules()):
        for leaf, sub in list(child.named_children()):
            if isinstance(sub, PackedLinear):
                plain = nn.Linear(sub.in_features, sub.out_features, bias=sub.bias is not None, device="meta")
                plain.weight, plain.bias = sub.weight, sub.bias
                setattr(child, leaf, plain)
                if sub.activation == "gelu":
                    child.act = nn.GELU()
    return module


def is_packed(module: nn.Module) -> bool:
    return any(isinstance(m, PackedLinear) for m in module.modules())
