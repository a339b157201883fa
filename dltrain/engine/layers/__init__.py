"""Layers in Keras's vocabulary; importing this package registers every type in LAYERS."""

from . import attention, conv, core, recurrent  # noqa: F401
from .base import LAYERS, BuildContext, Layer, RunContext, ShapeError

__all__ = ["LAYERS", "BuildContext", "Layer", "RunContext", "ShapeError"]
