"""Layers in Keras's vocabulary; importing this package registers every type in LAYERS."""

from ...spec.layer_base import LAYER_SPECS
from . import (  # noqa: F401
    attention,
    audio,
    conv,
    core,
    noise,
    normalization,
    preprocessing,
    recurrent,
    shaping,
)
from .base import LAYERS, BuildContext, Layer, RunContext, ShapeError, serve_spec_defined

serve_spec_defined(LAYER_SPECS)  # weightless layers written whole in their spec file

__all__ = ["LAYERS", "BuildContext", "Layer", "RunContext", "ShapeError"]
