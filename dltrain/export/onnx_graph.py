"""The ONNX graph builder the layers' exporters write into (`Layer.to_onnx`).

Names are made unique by a counter; constants become initializers; `activation` emits a
Keras activation by name. Layouts: the graph runs channels-first like the engine, so
`to_last`/`to_first` wrap ops that want the features last (MatMul, LayerNormalization).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ExportError


class Graph:
    def __init__(self) -> None:
        from onnx import helper

        self.h = helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base: str, value: Any) -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.array(value, order="C"), name))  # 0-d stays
        return name

    def op(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        return self.node(op, inputs, base, 1, **attrs)[0]

    def node(self, op: str, inputs: list[str], base: str, outputs: int, **attrs: Any) -> list[str]:
        """An op with several outputs (RNN operators: Y and Y_h)."""
        outs = [self.name(base) for _ in range(outputs)]
        self.nodes.append(self.h.make_node(op, inputs, outs, name=outs[0], **attrs))
        return outs

    def to_last(self, x: str, rank: int, base: str) -> str:
        """(N, C, ...) -> (N, ..., C) for rank (with batch) >= 3."""
        if rank < 3:
            return x
        return self.op("Transpose", [x], base, perm=[0] + list(range(2, rank)) + [1])

    def to_first(self, x: str, rank: int, base: str) -> str:
        if rank < 3:
            return x
        return self.op("Transpose", [x], base, perm=[0, rank - 1] + list(range(1, rank - 1)))

    def weight(self, layer: Any, key: str) -> Any:
        """A layer's parameter as float32 numpy, or None when it has none of that name."""
        p = layer.params.get(key)
        return p.data.detach().cpu().numpy().astype(np.float32) if p is not None else None

    def activation(self, name: str | None, x: str, base: str) -> str:
        """A Keras activation by name; softmax over the channels (dim 1)."""
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
            return self.op(simple[name], [x], base)
        if name == "leaky_relu":
            return self.op("LeakyRelu", [x], base, alpha=0.2)  # Keras's activation default
        if name in ("softmax", "log_softmax"):
            return self.op("Softmax" if name == "softmax" else "LogSoftmax", [x], base, axis=1)
        if name in ("silu", "swish"):
            return self.op("Mul", [x, self.op("Sigmoid", [x], base)], base)
        if name == "gelu":  # x * 0.5 * (1 + erf(x / sqrt 2))
            scaled = self.op("Mul", [x, self.const("c", np.float32(1 / math.sqrt(2)))], base)
            one_plus = self.op(
                "Add", [self.op("Erf", [scaled], base), self.const("one", np.float32(1))], base
            )
            half = self.op("Mul", [one_plus, self.const("half", np.float32(0.5))], base)
            return self.op("Mul", [x, half], base)
        raise ExportError(f"activation '{name}' cannot be exported to ONNX yet")
