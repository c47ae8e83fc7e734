"""GenTron: diffusion transformers for image and video generation (arXiv 2312.04557)."""
from .config import PRESETS, GenTronConfig, get_preset
from .model import GenTronTransformer
from .pipeline import GenTronOutput, GenTronPipeline, Interrupted

__all__ = ["PRESETS", "GenTronConfig", "GenTronOutput", "GenTronPipeline", "GenTronTransformer", "Interrupted",
           "get_preset"]
__version__ = "0.1.0"
