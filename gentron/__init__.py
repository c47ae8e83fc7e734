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
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'gentron' has no attribute {name!r}")
