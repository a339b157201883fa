"""Layers in Keras's vocabulary; importing this package registers every type in LAYERS."""

from ...spec.layer_base import LAYER_SPECS
from . import attention, audio, conv, core, preprocessing, recurrent  # noqa: F401
from .base import LAYERS, BuildContext, Layer, RunContext, ShapeError, serve_spec_defined

serve_spec_defined(LAYER_SPECS)  # weightless layers written whole in their spec file

__all__ = ["LAYERS", "BuildContext", "Layer", "RunContext", "ShapeError"]
