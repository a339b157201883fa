"""Layer base class, registry and shape conventions.

Shapes here are per sample (no batch dim). Inside the engine a tensor of rank >= 2 per
sample is stored channels-first, (C, H, W) or (C, L), as torch wants it; specs and
summaries speak Keras's channels-last (H, W, C). `keras_shape` / `engine_shape` convert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

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
    generator: torch.Generator | None = None
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


class Layer:
    """One node of a compiled model, made from its spec."""

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
    # whether this layer's backward never reads its own output, so a consumer may overwrite it
    output_unsaved = False

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


LAYERS: dict[str, type[Layer]] = {}


def register(type_name: str) -> Callable[[type[Layer]], type[Layer]]:
    def deco(cls: type[Layer]) -> type[Layer]:
        LAYERS[type_name] = cls
        return cls

    return deco


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
