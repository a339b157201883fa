"""Layers in Keras's vocabulary; importing this package registers every type in LAYERS."""

from . import conv, core  # noqa: F401
from .base import LAYERS, BuildContext, Layer, RunContext, ShapeError

__all__ = ["LAYERS", "BuildContext", "Layer", "RunContext", "ShapeError"]
