"""ONNX export: walk the compiled layer graph and emit one ONNX node group per layer.

The exported model takes the raw inputs `dltrain predict` takes (channels-last, unscaled):
the stored preprocessing (rescale, standard/minmax scaling, the NHWC -> NCHW transpose) is
folded in at the front, so ONNX Runtime returns the same probabilities. Opset 17 (the first
with LayerNormalization); the batch dimension is dynamic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.layers.base import Layer, keras_shape
from ..errors import DltrainError
from ..run.inference import Loaded

OPSET = 17


class ExportError(DltrainError):
    exit_code = 2


class _Graph:
    def __init__(self) -> None:
        from onnx import helper

        self.h = helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.inits.append(
            numpy_helper.from_array(np.array(value, order="C"), name)
        )  # 0-d stays 0-d
        return name

    def op(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = self.name(base)
        self.nodes.append(self.h.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def to_last(self, x: str, rank: int, base: str) -> str:
        """(N, C, ...) -> (N, ..., C) for rank (with batch) >= 3."""
        if rank < 3:
            return x
        return self.op("Transpose", [x], base, perm=[0] + list(range(2, rank)) + [1])

    def to_first(self, x: str, rank: int, base: str) -> str:
        if rank < 3:
            return x
        return self.op("Transpose", [x], base, perm=[0, rank - 1] + list(range(1, rank - 1)))


def _w(layer: Layer, key: str) -> np.ndarray | None:
    p = layer.params.get(key)
    return p.data.detach().cpu().numpy().astype(np.float32) if p is not None else None


def _activation(g: _Graph, name: str | None, x: str, base: str) -> str:
    if name is None or name == "linear":
        return x
    simple = {
        "relu": "Relu",
        "sigmoid": "Sigmoid",
        "tanh": "Tanh",
        "softplus": "Softplus",
        "elu": "Elu",
    }
    if name in simple:
        return g.op(simple[name], [x], base)
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], base, alpha=0.01)
    if name in ("softmax", "log_softmax"):
        return g.op("Softmax" if name == "softmax" else "LogSoftmax", [x], base, axis=1)
    if name in ("silu", "swish"):
        return g.op("Mul", [x, g.op("Sigmoid", [x], base)], base)
    if name == "gelu":  # x * 0.5 * (1 + erf(x / sqrt 2))
        e = g.op("Erf", [g.op("Mul", [x, g.const("c", np.float32(1 / math.sqrt(2)))], base)], base)
        half = g.op(
            "Mul",
            [
                g.op("Add", [e, g.const("one", np.float32(1))], base),
                g.const("half", np.float32(0.5)),
            ],
            base,
        )
        return g.op("Mul", [x, half], base)
    raise ExportError(f"activation '{name}' cannot be exported to ONNX yet")


def _dense(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    W, b = _w(L, "kernel"), _w(L, "bias")
    x = g.to_last(xs[0], rank, L.name)
    y = g.op("MatMul", [x, g.const(f"{L.name}.kernelT", W.T.copy())], L.name)
    if b is not None:
        y = g.op("Add", [y, g.const(f"{L.name}.bias", b)], L.name)
    return g.to_first(y, rank, L.name)


def _conv(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    nd = L.nd
    begin, end = list(L.pad), list(L.pad)
    if L.extra:  # torch's F.pad list runs last dim first: [w0, w1, h0, h1]
        for i in range(nd):
            begin[i] += L.extra[2 * (nd - 1 - i)]
            end[i] += L.extra[2 * (nd - 1 - i) + 1]
    ins = [xs[0], g.const(f"{L.name}.kernel", _w(L, "kernel"))]
    if "bias" in L.params:
        ins.append(g.const(f"{L.name}.bias", _w(L, "bias")))
    return g.op(
        "Conv",
        ins,
        L.name,
        strides=list(L.s),
        dilations=list(L.d),
        group=L.groups,
        pads=begin + end,
        kernel_shape=list(L.k),
    )


def _conv_t(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    ins = [xs[0], g.const(f"{L.name}.kernel", _w(L, "kernel"))]
    if "bias" in L.params:
        ins.append(g.const(f"{L.name}.bias", _w(L, "bias")))
    return g.op(
        "ConvTranspose",
        ins,
        L.name,
        strides=list(L.s),
        pads=L.pad + L.pad,
        output_padding=list(L.opad),
    )


def _pool(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    lft, r, t, b = L.pads
    kind = "MaxPool" if L.spec.type == "MaxPooling2D" else "AveragePool"
    extra = {"count_include_pad": 0} if kind == "AveragePool" else {}
    return g.op(
        kind,
        [xs[0]],
        L.name,
        kernel_shape=list(L.k),
        strides=list(L.s),
        pads=[t, lft, b, r],
        **extra,
    )


def _gap(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    y = g.op("GlobalAveragePool", [xs[0]], L.name)
    return y if L.spec.keepdims else g.op("Flatten", [y], L.name, axis=1)


def _bn(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    c = L.buffers["moving_mean"].numel()
    gamma = _w(L, "gamma") if "gamma" in L.params else np.ones(c, np.float32)
    beta = _w(L, "beta") if "beta" in L.params else np.zeros(c, np.float32)
    stats = [
        L.buffers[k].detach().cpu().numpy().astype(np.float32)
        for k in ("moving_mean", "moving_variance")
    ]
    ins = [xs[0]] + [
        g.const(f"{L.name}.{k}", v)
        for k, v in zip(("gamma", "beta", "mean", "var"), [gamma, beta] + stats)
    ]
    return g.op("BatchNormalization", ins, L.name, epsilon=float(L.spec.epsilon))


def _ln(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    c = L.output_shape[0]
    gamma = _w(L, "gamma") if "gamma" in L.params else np.ones(c, np.float32)
    beta = _w(L, "beta") if "beta" in L.params else np.zeros(c, np.float32)
    x = g.to_last(xs[0], rank, L.name)
    y = g.op(
        "LayerNormalization",
        [x, g.const(f"{L.name}.gamma", gamma), g.const(f"{L.name}.beta", beta)],
        L.name,
        axis=-1,
        epsilon=float(L.spec.epsilon),
    )
    return g.to_first(y, rank, L.name)


def _flatten(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    return g.op("Flatten", [g.to_last(xs[0], rank, L.name)], L.name, axis=1)


def _reshape(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    x = g.to_last(xs[0], rank, L.name)
    shape = np.asarray((0,) + tuple(L.keras_target), dtype=np.int64)
    y = g.op("Reshape", [x, g.const(f"{L.name}.shape", shape)], L.name)
    return g.to_first(y, len(L.keras_target) + 1, L.name)


def _relu(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    s = L.spec
    y = (
        g.op("LeakyRelu", [xs[0]], L.name, alpha=float(s.negative_slope))
        if s.negative_slope
        else g.op("Relu", [xs[0]], L.name)
    )
    if s.max_value is not None:
        y = g.op("Min", [y, g.const("max", np.float32(s.max_value))], L.name)
    return y


def _embedding(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    y = g.op("Gather", [g.const(f"{L.name}.embeddings", _w(L, "embeddings")), xs[0]], L.name)
    return g.to_first(y, len(L.output_shape) + 1, L.name)


def _upsample(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    scales = np.asarray([1, 1, *L.size], dtype=np.float32)
    return g.op(
        "Resize",
        [xs[0], "", g.const("scales", scales)],
        L.name,
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )


def _zeropad(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    lft, r, t, b = L.pads
    return g.op(
        "Pad", [xs[0], g.const("pads", np.asarray([0, 0, t, lft, 0, 0, b, r], np.int64))], L.name
    )


EXPORTERS: dict[str, Callable[[_Graph, Layer, list[str], int], str]] = {
    "Dense": _dense,
    "Conv1D": _conv,
    "Conv2D": _conv,
    "Conv2DTranspose": _conv_t,
    "MaxPooling2D": _pool,
    "AveragePooling2D": _pool,
    "GlobalAveragePooling2D": _gap,
    "BatchNormalization": _bn,
    "LayerNormalization": _ln,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "ReLU": _relu,
    "Embedding": _embedding,
    "UpSampling2D": _upsample,
    "ZeroPadding2D": _zeropad,
    "Dropout": lambda g, L, xs, r: xs[0],
    "Activation": lambda g, L, xs, r: xs[0],
    "Softmax": lambda g, L, xs, r: xs[0],
    "LeakyReLU": lambda g, L, xs, r: g.op(
        "LeakyRelu", xs, L.name, alpha=float(L.spec.negative_slope)
    ),
    "ELU": lambda g, L, xs, r: g.op("Elu", xs, L.name, alpha=float(L.spec.alpha)),
    "Add": lambda g, L, xs, r: g.op("Sum", xs, L.name),
    "Concatenate": lambda g, L, xs, r: g.op("Concat", xs, L.name, axis=L.dim),
}
from .onnx_sequence import SEQUENCE_EXPORTERS  # noqa: E402  (it builds on the above)

EXPORTERS.update(SEQUENCE_EXPORTERS)
WITH_ACTIVATION = ("Dense", "Conv1D", "Conv2D", "Conv2DTranspose", "Activation", "Softmax")


def _preprocess(g: _Graph, loaded: Loaded, x: str) -> str:
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

    g = _Graph()
    model = loaded.model
    shape = ["batch", *loaded.pre.input_shape]
    in_type = TensorProto.INT64 if loaded.pre.input_dtype == "int64" else TensorProto.FLOAT
    values = [_preprocess(g, loaded, "input")]
    for node in model.nodes:
        L = node.layer
        if getattr(L.spec, "mask_zero", False):
            raise ExportError(
                f"layer '{L.name}' has mask_zero: true; padding masks cannot be exported to "
                "ONNX yet (the safetensors bundle keeps them)"
            )
        fn = EXPORTERS.get(L.spec.type)
        if fn is None:
            raise ExportError(f"layer '{L.name}' ({L.spec.type}) cannot be exported to ONNX yet")
        rank = len(L.input_shapes[0]) + 1
        y = fn(g, L, [values[j] for j in node.inputs], rank)
        if L.spec.type in WITH_ACTIVATION:
            y = _activation(g, L.activation, y, L.name)
        values.append(y)
    out_shape = ["batch", *keras_shape(model.output_shape)]
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
