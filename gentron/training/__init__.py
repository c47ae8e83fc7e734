"""Training GenTron: ``train(TrainConfig)`` on accelerate, and ``python -m gentron.training``.

``train`` is imported lazily, so ``python -m gentron.training.OTHER`` modules (the VAE and text
tower trainers) don't pay for accelerate and the transformer trainer.
"""
from typing import Any

from .config import TrainConfig

__all__ = ["TrainConfig", "main", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from .trainer import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    """The command line (see gentron/training/__main__.py)."""
    from .__main__ import main as _main

    return _main(argv)
