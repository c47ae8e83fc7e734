"""Finding and loading a model: the built-in one, a local folder, a hub id, or an explicit random one.

Weights load only through safetensors. Every failure names the path and what to do; nothing falls
back to random weights unless ``random:PRESET`` was asked for by name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

_CHECKOUT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "gentron-shapes"  # a clone, or pip install -e
_INSTALLED_MODEL = Path(__file__).resolve().parent / "builtin" / "gentron-shapes"  # pip install . (pyproject.toml)
BUILTIN_MODEL = next((p for p in (_CHECKOUT_MODEL, _INSTALLED_MODEL) if (p / "model_index.json").is_file()),
                     _CHECKOUT_MODEL)
MODEL_ENV = "GENTRON_MODEL"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ModelLoadError(ValueError):
    """The model could not be loaded; the message says why and what to do."""


def resolve_model(model: str | None) -> str:
    """The model to load: the argument, else $GENTRON_MODEL, else the built-in model."""
    return model or os.environ.get(MODEL_ENV) or str(BUILTIN_MODEL)


def model_label(name: str) -> str:
    """What to call a model in front of users: a local folder by its name (never the server's path to it), a hub id
    or ``random:PRESET`` as given."""
    root = Path(name).expanduser()
    return root.name if name.startswith(("/", ".", "~")) or root.is_dir() else name


def folder_configs(model: str | None) -> dict[str, dict] | None:
    """A local pipeline folder's JSON configs (``model_index`` and those of ``scheduler``, ``transformer``,
    ``vae``, each {} when absent), read without loading any weights, so what a run asks for can be checked
    first; None for a hub id or ``random:PRESET`` (nothing local to read)."""
    root = Path(resolve_model(model)).expanduser()
    if not (root / "model_index.json").is_file():
        return None
    configs = {}
    for key, path in (("model_index", root / "model_index.json"),
                      ("scheduler", root / "scheduler" / "scheduler_config.json"),
                      ("transformer", root / "transformer" / "config.json"), ("vae", root / "vae" / "config.json")):
        try:
            configs[key] = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{path} is not valid JSON: {e}") from None
    return configs


def _check_folder(root: Path) -> None:
    index = root / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"{root} is not a GenTron pipeline folder (no model_index.json); "
                             "point --model at a folder written by save_pretrained or `gentron train`")
    try:
        components = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{index} is not valid JSON: {e}") from None
    for name, spec in components.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        folder = root / name
        if not folder.is_dir():
            raise ModelLoadError(f"component folder {folder} is missing")
        pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        weights = list(folder.glob("*.safetensors"))
        if pickles and not weights:
            raise ModelLoadError(f"{folder} holds only pickled weights {pickles}; GenTron loads safetensors only "
                                 "(convert them with safetensors.torch.save_file from a trusted environment)")
        for w in weights:
            _check_safetensors(w)


def _check_safetensors(path: Path) -> None:
    """Read the header and check the file is as long as it says (catches truncated downloads)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{path} is truncated or not a safetensors file ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > size - 8:
            raise ModelLoadError(f"{path} is corrupt: header length {n} does not fit in {size} bytes")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelLoadError(f"{path} is corrupt: its header is not valid JSON") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ModelLoadError(f"{path} is truncated: its tensors need {8 + n + end} bytes, the file has {size}")


def _from_source(name: str, modes: dict[str, str]):
    """(pipeline, the parts it was loaded in bf16): a bf16 part is loaded in bf16 (``dtype``, which keeps the
    layers a class holds in fp32 there) rather than cast after loading; a random pipeline is built in fp32."""
    import torch

    from .pipeline import GenTronPipeline

    if name.startswith("random:"):
        from .factory import build_random_pipeline

        return build_random_pipeline(name.split(":", 1)[1]), set()
    root = Path(name).expanduser()
    if root.exists():
        _check_folder(root)
    elif name == str(BUILTIN_MODEL) or name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelLoadError(f"model folder {name} does not exist" + (
            "; the built-in model ships in assets/ — is this a full checkout?" if name == str(BUILTIN_MODEL) else ""))
    cast = {part for part, mode in modes.items() if mode == "bf16"}
    dtype = {"default": torch.float32, **{part: torch.bfloat16 for part in cast}}
    try:
        pipe = GenTronPipeline.from_pretrained(str(root) if root.exists() else name, use_safetensors=True, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as e:  # the loaders' own messages, with the model named
        raise ModelLoadError(f"could not load model {name}: {type(e).__name__}: {e}") from e
    return pipe, cast


def load_pipeline(model: str | None = None, device: str = "cpu", quantize: str = "none", compile: bool = False,
                  quantize_text: str | None = None, pack: bool = True):
    """Load a GenTronPipeline. ``model``: a folder, a hub id, ``random:PRESET``, or None (built-in).
    ``quantize``: the mode of the transformer, and of the text towers unless ``quantize_text`` names
    another (T5-XXL is the part full-size users most need to shrink; 4-bit towers cost the built-in
    model counts). ``compile``: torch.compile the transformer after quantizing (gentron.compilation).
    ``pack``: on the CPU, uncompiled, the transformer's float linear layers run on weights packed once
    (gentron.packing; the same products, faster); quantized layers are left as they are."""
    from .quantization import backends_held_back

    name = resolve_model(model)
    text_mode = quantize if quantize_text is None else quantize_text
    if quantize != "none" or text_mode != "none":
        from .quantization import check_mode

        check_mode(quantize)
        try:
            check_mode(text_mode)  # both checked before either is applied
        except ValueError as e:
            raise ValueError(f"quantize_text: {e}") from None
    modes = {"transformer": quantize, "text_encoder": text_mode, "text_encoder_2": text_mode}
    with backends_held_back(set(modes.values()), device):
        pipe, cast = _from_source(name, modes)
        pipe = pipe.to(device)
    for part, mode in modes.items():
        if mode != "none" and part not in cast:
            from .quantization import quantize_pipeline

            quantize_pipeline(pipe, mode, (part,))
    if compile:  # inductor packs the weights it freezes itself
        from .compilation import compile_pipeline

        compile_pipeline(pipe)
    elif pack and pipe.device.type == "cpu":
        from .packing import pack_linears

        pack_linears(pipe.transformer)
    return pipe
