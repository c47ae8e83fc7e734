"""``torch.compile`` for serving: the transformer compiled once per request shape, weights frozen.

Opt-in (``load_pipeline(..., compile=True)``, ``--compile``, ``GENTRON_COMPILE=1`` for the app) because
it trades a one-off cost for every later step: the first call of each new shape (resolution, frames, number of λM
values) compiles for tens of seconds, every later one runs faster (docs/benchmarks.md, section 7). So it pays for a
server answering many requests, not for one CLI call. The eager pipeline's packing is left off a compiled one:
inductor packs the weights it freezes.

Why these settings:
- ``freezing``: inductor treats the weights as constants, so on the CPU the linear layers get oneDNN's
  prepacked weights. This is most of the gain at B/2 (docs/benchmarks.md, section 7), and is only valid for
  inference, which is all the pipeline does. It is a process-wide
  inductor flag, so any other torch.compile in the same process freezes its weights too.
- ``dynamic=False``: each shape gets kernels specialised to it. A served request has few shapes, and
  dynamic-shape kernels would give back part of the gain. The text is one of those shapes: a compiled
  pipeline pads every prompt to its towers' ``max_length`` (masked, so the same noise), or each new prompt
  length would compile anew; and it leaves the timestep table out of ``prepare`` (its length, the step
  count, would be one more). The recompile limit is raised so that an app
  serving many shapes (and a benchmark compiling many models) keeps compiling instead of silently
  falling back to eager after the eighth.
"""
from __future__ import annotations

import os

import torch
from torch import nn

COMPILE_ENV = "GENTRON_COMPILE"
RECOMPILE_LIMIT = 64  # shapes per forward before dynamo silently falls back to eager (its default is 8)


def compile_requested(flag: bool | None = None) -> bool:
    """``flag`` if given, else whether $GENTRON_COMPILE is set to 1/true/yes."""
    if flag is not None:
        return flag
    return os.environ.get(COMPILE_ENV, "").strip().lower() in ("1", "true", "yes")


def compile_transformer(module: nn.Module) -> nn.Module:
    """Compile ``module``'s forward in place (it stays the same object, with the same weights and
    config); the first call of each new input shape compiles, later ones run the compiled kernels.
    Weights are frozen into the compiled graph: load new weights into a fresh module, not this one."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # Process-wide, not options={"freezing": True}: this torch ignores that option (it runs as unfrozen). Inductor
    # reads the flag when a shape compiles, i.e. at call time, so a scoped patch here would not reach it.
    torch._inductor.config.freezing = True
    module.compile(dynamic=False)
    return module


def is_compiled(module: nn.Module) -> bool:
    """Whether ``compile_transformer`` (``nn.Module.compile``) compiled this module."""
    return getattr(module, "_compiled_call_impl", None) is not None


def compile_pipeline(pipe) -> None:
    """Compile a GenTronPipeline's transformer, the part every sampling step runs. The text towers run
    once per request and the VAE once per preview, so compiling them would not pay back."""
    compile_transformer(pipe.transformer)
