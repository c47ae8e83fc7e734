"""``torch.compile`` for serving: the transformer compiled once per request shape, weights frozen.

Opt-in (``load_pipeline(..., compile=True)``, ``--compile``, ``GENTRON_COMPILE=1`` for the app) because
it trades a one-off cost for every later step. Measured on the 2-core CPU (docs/benchmarks.md, section 7):
the built-in model's 64 px image went from 0.92 to 0.71 s and its 8-frame video from 2.62 to 2.28 s in
bf16, after about 40 s of compilation for each new shape (resolution, frames, number of λM values).
So it pays for a server answering many requests, not for one CLI call.

Why these settings:
- ``freezing``: inductor treats the weights as constants, so on the CPU the linear layers get oneDNN's
  prepacked weights. This was the whole gain at B/2 (131 -> 85 ms for a 64 px image step; without it,
  109 -> 96 ms), and is only valid for inference, which is all the pipeline does.
- ``dynamic=False``: each shape gets kernels specialised to it. A served request has few shapes, and
  dynamic-shape kernels would give back part of the gain.
"""
from __future__ import annotations

import os

from torch import nn

COMPILE_ENV = "GENTRON_COMPILE"


def compile_requested(flag: bool | None = None) -> bool:
    """``flag`` if given, else whether $GENTRON_COMPILE is set to 1/true/yes."""
    if flag is not None:
        return flag
    return os.environ.get(COMPILE_ENV, "").strip().lower() in ("1", "true", "yes")


def compile_transformer(module: nn.Module) -> nn.Module:
    """Compile ``module``'s forward in place (it stays the same object, with the same weights and
    config); the first call of each new input shape compiles, later ones run the compiled kernels.
    Weights are frozen into the compiled graph: load new weights into a fresh module, not this one."""
    module.compile(dynamic=False, options={"freezing": True})
    return module


def compile_pipeline(pipe) -> None:
    """Compile a GenTronPipeline's transformer, the part every sampling step runs. The text towers run
    once per request and the VAE once per preview, so compiling them would not pay back."""
    compile_transformer(pipe.transformer)
