"""GenTron: diffusion transformers for image and video generation (arXiv 2312.04557).

Names are imported lazily so that ``import gentron.export`` (or the app) stays light.
"""
from importlib import import_module

__version__ = "0.1.0"
_EXPORTS = {
    "PRESETS": "config", "GenTronConfig": "config", "get_preset": "config",
    "GenTronTransformer": "model",
    "GenTronPipeline": "pipeline", "GenTronOutput": "pipeline", "Interrupted": "pipeline",
    "load_pipeline": "loading",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = _EXPORTS[name]
        if module not in ("config", "loading"):  # these load diffusers: keep the back ends no mode asked for out
            import torch

            from .quantization import backends_held_back

            with backends_held_back((), "cuda" if torch.cuda.is_available() else "cpu"):
                return getattr(import_module(f".{module}", __name__), name)
        return getattr(import_module(f".{module}", __name__), name)
    raise AttributeError(f"module 'gentron' has no attribute {name!r}")
