"""Precision and weight quantization: one switch for the engine, the CLI and the app.

Modes (each applies to the transformer and the text towers, or to the parts you name; ``load_pipeline``'s
``quantize_text`` and the CLI's ``--quantize-text`` give the towers a mode of their own):
- ``none``: fp32 weights.
- ``bf16``: bf16 weights; on CPUs with AMX the bf16 matmul is about 3.5x the fp32 one.
- ``int8``: torchao int8 weight-only; ``int8-dynamic``: torchao int8 weights and activations.
- ``bnb8`` / ``bnb4``: bitsandbytes 8-bit (LLM.int8) and 4-bit NF4 weights. On CUDA, load through
  the diffusers / transformers ``BitsAndBytesConfig`` (``bnb_loading_config``); diffusers refuses
  that config without a GPU, so on the CPU we swap in bitsandbytes' layers directly.

The VAE and the patch/timestep embeddings stay in their precision: they are a small share of the
weights and the most sensitive to rounding. So do the layers a model class keeps in fp32
(``_keep_in_fp32_modules``: T5's feed-forward output ``wo``), as transformers' own bitsandbytes path
does: measured on the built-in T5 tower, 4-bit ``wo`` raised the held-out denoising loss at mid noise
by 29% (0.00661 -> 0.00851); with ``wo`` kept, 4-bit T5 costs nothing (0.00661;
research/quant_loss_by_part.py).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

MODES = ("none", "bf16", "int8", "int8-dynamic", "bnb8", "bnb4")
TEXT_PARTS = ("text_encoder", "text_encoder_2")
BACKENDS = {"int8": "torchao", "int8-dynamic": "torchao", "bnb8": "bitsandbytes", "bnb4": "bitsandbytes"}
# Who speaks while a back end imports: its own kernel probes (a CUDA .so on a CPU host, a hub kernel it may not
# fetch), torch's pytree deprecations for its enums, and diffusers' torchao quantizer probing moved classes.
BACKEND_IMPORT_LOGGERS = ("torchao", "bitsandbytes", "torch.utils._pytree", "diffusers.quantizers")


def installed(package: str) -> bool:
    """Whether ``package`` can be imported, decided without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent that fails, or a module held back (sys.modules[name] is None)
        return False


def available_modes(device: str = "cpu") -> list[str]:
    """The modes that run on ``device`` with the installed packages; imports none of them."""
    return [m for m in MODES if m not in BACKENDS or installed(BACKENDS[m])]


@contextmanager
def quiet_backend_import():
    """Import-time notices of the optional back ends kept below ERROR: they concern kernels this run does not use."""
    loggers = [logging.getLogger(name) for name in BACKEND_IMPORT_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def import_backend(mode: str):
    """The back end ``mode`` needs, imported quietly (None for none and bf16)."""
    package = BACKENDS.get(mode)
    if package is None:
        return None
    with quiet_backend_import():
        return importlib.import_module(package)


@contextmanager
def backends_held_back(modes, device: str = "cpu"):
    """Load a model with diffusers and transformers seeing only the back ends ``modes`` need.

    Both libraries import every installed quantization back end when their model classes load, which costs
    seconds and prints kernel-load failures. Held back here: torchao unless an int8 mode is asked for (gentron
    calls it directly, so it works when imported later), and on the CPU bitsandbytes unless a bnb mode is (on
    CUDA, bnb goes through diffusers' own config, which must see it). A back end already imported stays."""
    needed = {BACKENDS[m] for m in modes if m in BACKENDS}
    held = [pkg for pkg in ("torchao", "bitsandbytes") if pkg not in needed and pkg not in sys.modules
            and (pkg == "torchao" or not str(device).startswith("cuda"))]
    for pkg in held:
        sys.modules[pkg] = None  # find_spec answers None, an import raises ImportError
    try:
        with quiet_backend_import():
            yield
    finally:
        for pkg in held:
            if pkg in sys.modules and sys.modules[pkg] is None:
                del sys.modules[pkg]


def cpu_bf16_flags() -> list[str]:
    """The first CPU's AMX and AVX512-BF16 flags from /proc/cpuinfo (none where it cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
    flags = next((line.partition(":")[2].split() for line in lines if line.split(":")[0].strip() == "flags"), [])
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16")))


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` multiplies bf16 in hardware: CUDA, or a CPU with AMX or AVX512-BF16 (Linux flags)."""
    return str(device).startswith("cuda") or bool({"amx_bf16", "avx512_bf16"} & set(cpu_bf16_flags()))


def default_mode(device: str = "cpu") -> str:
    """The mode the CLI and the app start in: bf16 where the hardware multiplies bf16 natively (faster end to end on
    AMX and AVX512-BF16 CPUs, within CompBench's noise of fp32: docs/benchmarks.md, docs/evaluation.md); elsewhere
    fp32 ("none"), since emulated bf16 can be slower than fp32."""
    return "bf16" if native_bf16(device) else "none"


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"quantize must be one of {list(MODES)}, got {mode!r}")
    if mode in BACKENDS and not installed(BACKENDS[mode]):
        raise ValueError(f"quantize mode {mode!r} needs {BACKENDS[mode]}, which is not installed "
                         f"(pip install {BACKENDS[mode]})")


def _linears(module: nn.Module, min_features: int = 1):
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear) and child.in_features % min_features == 0:
            yield name, child


def _set(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, new)


def _bnb_linear(linear: nn.Linear, bits: int, compute_dtype: torch.dtype) -> nn.Module:
    bnb = import_backend("bnb8")

    w = linear.weight.data.float()
    if bits == 8:
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                has_fp16_weights=False, threshold=6.0)
        q.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
    else:
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, quant_type="nf4")
        q.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.data.float(), requires_grad=False)
    return q.to(linear.weight.device)  # bitsandbytes quantizes on the move to a device


def quantize_module(module: nn.Module, mode: str) -> nn.Module:
    """Quantize ``module``'s linear layers (or cast it, for bf16) in place; returns it."""
    check_mode(mode)
    if mode == "none":
        return module
    if mode != "bf16":  # quantizers take plain nn.Linear weights; packed ones (gentron.packing) go back to plain
        from .packing import unpack_linears

        unpack_linears(module)
    if mode == "bf16":
        return module.to(torch.bfloat16)
    if mode in ("int8", "int8-dynamic"):
        import_backend(mode)
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        config = Int8WeightOnlyConfig() if mode == "int8" else Int8DynamicActivationInt8WeightConfig()
        quantize_(module, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and _quantizable(fqn, module))
        return module
    bits = 8 if mode == "bnb8" else 4
    for name, linear in list(_linears(module, 64 if bits == 4 else 1)):  # 4-bit needs in_features % 64 == 0
        if _quantizable(name, module):
            _set(module, name, _bnb_linear(linear, bits, torch.float32))
    return module


SKIPPED_PREFIXES = ("t_embedder", "proj_out", "final_modulation")  # small, sensitive entry and exit layers


def _quantizable(name: str, model: nn.Module | None = None) -> bool:
    """Skip the small, sensitive entry and exit layers of the transformer, and what ``model``'s class keeps
    in fp32 (matched on a whole name part, as transformers matches them)."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    return not name.startswith(SKIPPED_PREFIXES) and not any(k in name.split(".") for k in keep)


def quantize_pipeline(pipe, mode: str, parts: tuple[str, ...] = ("transformer", *TEXT_PARTS)) -> None:
    """Quantize the named components of a GenTronPipeline (in place, or reloaded: ``quantize_for``)."""
    check_mode(mode)
    on_cuda = _on_cuda(pipe)
    for part in parts:
        module = getattr(pipe, part, None)
        if module is not None:
            quantized = quantize_for(module, mode, on_cuda)
            if quantized is not module:
                pipe.register_modules(**{part: quantized})


def quantize_for(module: nn.Module, mode: str, on_cuda: bool) -> nn.Module:
    """``module`` in ``mode`` the way its device is served: bnb8/bnb4 on CUDA reload through the diffusers /
    transformers ``BitsAndBytesConfig`` (``quantize_on_load``, a new module), the libraries' own path there;
    everything else, bitsandbytes on the CPU included, is done in place by ``quantize_module``."""
    if on_cuda and mode in ("bnb8", "bnb4"):
        return quantize_on_load(module, mode)
    return quantize_module(module, mode)


def _on_cuda(pipe) -> bool:
    return pipe.device.type == "cuda"


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by parameters and buffers (quantized tensors count their packed storage), and by the packed copies
    of weights that gentron.packing serves from."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        inner = getattr(t, "qdata", None)  # torchao tensors keep the int8 data and a scale
        if inner is not None:
            total += inner.numel() * inner.element_size() + sum(
                s.numel() * s.element_size() for s in (getattr(t, "scale", None),) if torch.is_tensor(s))
        else:
            total += t.numel() * t.element_size()
        quant_state = getattr(t, "quant_state", None)
        if quant_state is not None and torch.is_tensor(getattr(quant_state, "absmax", None)):
            total += quant_state.absmax.numel() * quant_state.absmax.element_size()
    return total + sum(m.packed_bytes() for m in module.modules() if hasattr(m, "packed_bytes"))  # gentron.packing


def bnb_loading_config(mode: str, library: str = "diffusers", skip: list[str] | None = None):
    """The bitsandbytes config to pass as ``quantization_config=`` when loading on CUDA; ``skip`` names
    modules to leave unquantized."""
    if mode not in ("bnb8", "bnb4"):
        raise ValueError(f"bnb_loading_config is for bnb8/bnb4, got {mode!r}")
    if library == "diffusers":
        from diffusers import BitsAndBytesConfig
    else:
        from transformers import BitsAndBytesConfig
    if mode == "bnb8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                              llm_int8_skip_modules=skip)


def quantize_on_load(module: nn.Module, mode: str) -> nn.Module:
    """A bnb8/bnb4 copy of ``module`` made the way CUDA users get one: saved, then reloaded with
    ``from_pretrained(quantization_config=...)``, diffusers' config for a ModelMixin (the transformer) and
    transformers' for a text tower. Layers outside the quantized set stay fp32, as ``quantize_module`` leaves
    them. Diffusers' config refuses to run without a GPU; transformers' runs on the CPU too."""
    import tempfile

    from diffusers import ModelMixin

    import_backend(mode)

    library = "diffusers" if isinstance(module, ModelMixin) else "transformers"
    config = bnb_loading_config(mode, library, skip=list(SKIPPED_PREFIXES) if library == "diffusers" else None)
    with tempfile.TemporaryDirectory() as tmp:
        module.save_pretrained(tmp)
        return type(module).from_pretrained(tmp, quantization_config=config, torch_dtype=torch.float32)
