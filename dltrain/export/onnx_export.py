"""ONNX export: walk the compiled layer graph and emit one ONNX node group per layer.

The exported model takes the raw inputs `dltrain predict` takes (channels-last, unscaled):
the stored preprocessing (rescale, standard/minmax scaling, the NHWC -> NCHW transpose) is
folded in at the front, so ONNX Runtime returns the same probabilities. Opset 17 (the first
with LayerNormalization); the batch dimension is dynamic.
"""

from __future__ import annotations

import numpy as np

from ..engine.layers.base import keras_shape
from ..errors import ExportError
from ..run.inference import Loaded
from .onnx_graph import Graph

__all__ = ["OPSET", "ExportError", "to_onnx"]

OPSET = 17


def _preprocess(g: Graph, loaded: Loaded, x: str) -> str:
    pre = loaded.pre
    if pre.input_dtype == "int64":
        return x
    shape = tuple(pre.input_shape)
    if pre.rescale is not None:
        x = g.op("Mul", [x, g.const("rescale", np.float32(pre.rescale))], "pre")
    if pre.shift:
        x = g.op("Add", [x, g.const("shift", np.float32(pre.shift))], "pre")
    if pre.offset is not None and pre.scale is not None:
        off = np.asarray(pre.offset, np.float32).reshape((1,) + shape)
        sc = np.asarray(pre.scale, np.float32).reshape((1,) + shape)
        x = g.op(
            "Mul", [g.op("Sub", [x, g.const("offset", off)], "pre"), g.const("scale", sc)], "pre"
        )
    return g.to_first(x, len(shape) + 1, "pre")


def to_onnx(loaded: Loaded) -> bytes:
    """The model with its preprocessing as serialized ONNX (checked by onnx.checker)."""
    import onnx
    from onnx import TensorProto, helper

    g = Graph()
    model = loaded.model
    shape: list[str | int] = ["batch", *loaded.pre.input_shape]
    in_type = TensorProto.INT64 if loaded.pre.input_dtype == "int64" else TensorProto.FLOAT
    values = [_preprocess(g, loaded, "input")]
    for node in model.nodes:
        L = node.layer
        if getattr(L.spec, "mask_zero", False):
            raise ExportError(
                f"layer '{L.name}' has mask_zero: true; padding masks cannot be exported to "
                "ONNX yet (the safetensors bundle keeps them)"
            )
        rank = len(L.input_shapes[0]) + 1
        values.append(L.to_onnx(g, [values[j] for j in node.inputs], rank))
    out_shape: list[str | int] = ["batch", *keras_shape(model.output_shape)]
    final = g.to_last(values[-1], len(model.output_shape) + 1, "out")
    g.nodes.append(helper.make_node("Identity", [final], ["output"], name="output"))
    graph = helper.make_graph(
        g.nodes,
        "dltrain",
        [helper.make_tensor_value_info("input", in_type, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        g.inits,
    )
    m = helper.make_model(
        graph, producer_name="dltrain", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()
