"""Every layer type is one unit: a spec class and one engine class registered against it,
which exports to ONNX or says why it cannot."""

from dltrain.engine.layers import LAYERS
from dltrain.engine.layers.base import Layer
from dltrain.spec.layer_base import LAYER_SPECS, type_name


def test_every_spec_type_has_an_engine_unit_and_back():
    spec_types = {type_name(c) for c in LAYER_SPECS}
    assert spec_types == set(LAYERS), spec_types ^ set(LAYERS)
    for name, cls in LAYERS.items():
        assert type_name(cls.spec_class) == name


def test_every_unit_exports_to_onnx_or_states_why_not():
    for name, cls in LAYERS.items():
        exports = cls.to_onnx is not Layer.to_onnx
        assert exports != bool(cls.onnx_refusal), name
