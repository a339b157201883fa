"""Layer base class, registry and shape conventions.

Shapes here are per sample (no batch dim). Inside the engine a tensor of rank >= 2 per
sample is stored channels-first, (C, H, W) or (C, L), as torch wants it; specs and
summaries speak Keras's channels-last (H, W, C). `keras_shape` / `engine_shape` convert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch

from ...errors import ExportError
from ...spec.layer_base import LayerBase, type_name
from ..distributed import RowsGenerator, World
from ..functional import ACTIVATIONS
from ..tensor import Tensor

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """A layer cannot take the shape it is given; compile adds the layer's place in the file."""


def keras_shape(shape: Shape) -> Shape:
    return shape[1:] + shape[:1] if len(shape) >= 2 else shape


def engine_shape(shape: Shape) -> Shape:
    return shape[-1:] + shape[:-1] if len(shape) >= 2 else shape


def to_channels_last(x: Tensor) -> Tensor:
    """(N, C, ...) -> (N, ..., C)."""
    return x.permute(0, *range(2, x.ndim), 1) if x.ndim >= 3 else x


def to_channels_first(x: Tensor) -> Tensor:
    """(N, ..., C) -> (N, C, ...)."""
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1)) if x.ndim >= 3 else x


@dataclass
class BuildContext:
    """What a layer needs to create its weights."""

    generator: torch.Generator
    dtype: torch.dtype = torch.float32
    device: torch.device | str = "cpu"


@dataclass
class RunContext:
    """Per-call state: training mode and the dropout generator."""

    training: bool = False
    generator: torch.Generator | RowsGenerator | None = None
    # the data-parallel world when BatchNormalization syncs its statistics across processes
    sync: World | None = None
    global_rows: int = 0  # with `sync`: the global batch's rows (this process has a slice)
    # the padding mask of the layer's (first) input, (N, steps), True on real steps; the
    # model sets it before each layer runs
    mask: torch.Tensor | None = None
    input_masks: list[torch.Tensor | None] | None = None  # every input's, in order


def apply_activation(name: str | None, x: Tensor, inplace: bool = False) -> Tensor:
    """inplace: x is a fresh result nobody else reads (a layer's own pre-activation)."""
    if name is None or name == "linear":
        return x
    if inplace and name == "relu":
        return ACTIVATIONS["relu"](x, inplace=True)
    fn = ACTIVATIONS[name]
    if name in ("softmax", "log_softmax"):
        return fn(x, dim=1)  # channels: the last Keras axis is dim 1 inside
    return fn(x)


class OnnxGraph(Protocol):
    """What a layer's exporter writes into (dltrain.export.onnx_graph.Graph)."""

    def name(self, base: str) -> str: ...
    def const(self, base: str, value: Any) -> str: ...
    def op(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str: ...
    def node(
        self, op: str, inputs: list[str], base: str, outputs: int, **attrs: Any
    ) -> list[str]: ...
    def to_last(self, x: str, rank: int, base: str) -> str: ...
    def to_first(self, x: str, rank: int, base: str) -> str: ...
    def weight(self, layer: Any, key: str) -> Any: ...
    def activation(self, name: str | None, x: str, base: str) -> str: ...


class Layer:
    """One node of a compiled model, made from its spec: one unit per layer type, holding
    its weights (`build`), its math (`forward`), its ONNX exporter (`to_onnx`, or a stated
    `onnx_refusal`) and the facts the planner needs. `register(SpecClass)` ties it to its
    spec class, the only place the type's name is written.
    """

    spec_class: ClassVar[type[LayerBase]]
    # the reason this layer type cannot be exported to ONNX, where it cannot
    onnx_refusal: ClassVar[str | None] = None
    # an elementwise layer that may overwrite its input when the planner allows it
    may_run_inplace: ClassVar[bool] = False
    # normalises with statistics of the batch in training (synchronised across
    # data-parallel processes with train.sync_batch_norm)
    batch_statistics: ClassVar[bool] = False
    # False: a fixed front end (MelSpectrogram) whose backward gives its input nothing
    passes_gradient: ClassVar[bool] = True

    def __init__(self, spec: Any, name: str) -> None:
        self.spec = spec
        self.name = name
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.input_shapes: list[Shape] = []
        self.output_shape: Shape = ()

    n_inputs = 1  # 0 = any number >= 2; -1 = one to three

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        """Create weights for these input shapes; return the output shape."""
        raise NotImplementedError

    # set by the model planner: this layer may overwrite its input (nobody else reads it)
    inplace = False

    @property
    def output_unsaved(self) -> bool:
        """Whether this layer's backward never reads its own output, so a consumer may
        overwrite it."""
        return False

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        # the pre-activation is a fresh tensor only this layer sees: relu may reuse it
        return apply_activation(self.activation, self.pre_activation(xs, run), inplace=True)

    def pre_activation(self, xs: list[Tensor], run: RunContext) -> Tensor:
        """The output before the layer's activation (layers that have one)."""
        raise NotImplementedError

    @property
    def activation(self) -> str | None:
        return getattr(self.spec, "activation", None)

    def output_mask(self, xs: list[Tensor], mask: torch.Tensor | None) -> torch.Tensor | None:
        """The padding mask of the output: the input's, while the output keeps its steps."""
        if mask is None or len(self.output_shape) != 2 or self.output_shape[1] != mask.shape[1]:
            return None
        return mask

    def add_param(
        self, name: str, shape: Shape, init: str, fan_in: int, fan_out: int, ctx: BuildContext
    ) -> Tensor:
        from ..init import INITIALIZERS

        if str(ctx.device) == "meta":  # shapes and counts only (summary): no memory, no init
            data = torch.empty(shape, dtype=ctx.dtype, device="meta")
        else:
            data = INITIALIZERS[init](shape, fan_in, fan_out, ctx.generator, ctx.dtype, ctx.device)
        t = Tensor(data, requires_grad=bool(self.spec.trainable), name=f"{self.name}.{name}")
        self.params[name] = t
        return t

    def param_count(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        """Emit this layer's ONNX nodes reading `xs` (engine layout, batch first; `rank` is
        the first input's rank with the batch); return the output's name."""
        raise ExportError(
            f"layer '{self.name}' ({self.spec.type}) cannot be exported to ONNX"
            + (f": {self.onnx_refusal}" if self.onnx_refusal else " yet")
        )

    # -- Keras weights -------------------------------------------------------------------
    # the reason this layer's Keras weights cannot be converted, where they cannot
    keras_refusal: ClassVar[str | None] = None

    def keras_keys(self) -> list[str]:
        """This layer's weights in the order of Keras's `get_weights()` (the layouts agree
        unless `from_keras` says otherwise)."""
        return list(self.params) + list(self.buffers)

    def from_keras(self, ws: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Keras's variables of this layer (get_weights() order and layouts) as this layer's
        weights by key, in dltrain's layouts. ValueError names what does not fit."""
        if self.keras_refusal:
            raise ValueError(f"{self.spec.type} '{self.name}': {self.keras_refusal}")
        keys = self.keras_keys()
        if len(ws) != len(keys):
            raise ValueError(
                f"{self.spec.type} '{self.name}' has {len(keys)} Keras variable(s) "
                f"({', '.join(keys) or 'none'}), the file holds {len(ws)}"
            )
        return {k: self.keras_layout(k, np.asarray(w)) for k, w in zip(keys, ws)}

    def keras_layout(self, key: str, w: np.ndarray) -> np.ndarray:
        """One Keras variable in dltrain's layout (Dense-style kernels transposed)."""
        return w.T if key.endswith("kernel") and w.ndim == 2 else w

    def onnx_weight(self, g: OnnxGraph, key: str) -> str:
        """The parameter `key` as an ONNX initializer named after it."""
        return g.const(f"{self.name}.{key}", g.weight(self, key))


# engine class per layer type name (the spec class's `type` literal)
LAYERS: dict[str, type[Layer]] = {}

_L = TypeVar("_L", bound=type[Layer])


def register(spec_class: type[LayerBase]) -> Callable[[_L], _L]:
    """Make the decorated class the engine unit of `spec_class`'s layer type."""

    def deco(cls: _L) -> _L:
        cls.spec_class = spec_class
        LAYERS[type_name(spec_class)] = cls
        return cls

    return deco


class SpecDefined(Layer):
    """The engine unit of a spec class that holds its own math, as a Keras layer does: a
    weightless layer written whole in its spec file with `call(x)` (channels-last tensors,
    batch first, through Tensor's methods, which bring their gradients),
    `compute_output_shape(shape)` (per sample, channels-last; ValueError for a shape it
    cannot take) and `to_onnx(g, x, base, shape)` (ONNX nodes on the channels-last input)
    or an `onnx_refusal`. Served by `serve_spec_defined`, so such a layer is one file."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        try:
            out = tuple(self.spec.compute_output_shape(keras_shape(shape)))
        except ValueError as e:
            raise ShapeError(str(e)) from None
        return engine_shape(out)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return to_channels_first(self.spec.call(to_channels_last(xs[0])))

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        if not hasattr(self.spec, "to_onnx"):
            return super().to_onnx(g, xs, rank)
        x = g.to_last(xs[0], rank, self.name)
        y = self.spec.to_onnx(g, x, self.name, keras_shape(self.input_shapes[0]))
        return g.to_first(y, len(self.output_shape) + 1, self.name)


def serve_spec_defined(spec_classes: list[type[LayerBase]]) -> None:
    """A SpecDefined unit for every spec class that has a `call` and no engine unit."""
    for cls in spec_classes:
        name = type_name(cls)
        if name not in LAYERS and callable(getattr(cls, "call", None)):
            refusal = None if hasattr(cls, "to_onnx") else getattr(cls, "onnx_refusal", None)
            unit = type(f"{cls.__name__}Unit", (SpecDefined,), {"onnx_refusal": refusal})
            register(cls)(unit)


def pair(v: int | list[int], n: int = 2) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """Keras/TF 'same' padding: output ceil(size / s); the odd pixel goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def need_rank(layer: Layer, shape: Shape, rank: int, what: str) -> None:
    if len(shape) != rank:
        raise ShapeError(
            f"{layer.spec.type} needs a {what} input per sample, got shape "
            f"{keras_shape(shape)}"
            + (
                "; add a Reshape first"
                if len(shape) < rank
                else "; add a Flatten or GlobalAveragePooling2D first"
            )
        )
