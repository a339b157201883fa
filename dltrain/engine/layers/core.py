"""Dense, dropout, reshaping, activations, embedding and merge layers (normalisation is in
`normalization`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...kernels import use_triton
from ...spec import layers as S
from .. import functional as F
from .. import ops
from ..tensor import Tensor
from .base import (
    BuildContext,
    Layer,
    OnnxGraph,
    RunContext,
    Shape,
    ShapeError,
    engine_shape,
    keras_shape,
    need_rank,
    register,
    to_channels_first,
    to_channels_last,
)


@register(S.DenseSpec)
class Dense(Layer):
    """y = activation(x W^T + b) over the last (channel) axis."""

    @property
    def output_unsaved(self) -> bool:  # linear's backward reads x and W, not y
        return self.activation in (None, "linear") and self.inputs_rank < 2

    inputs_rank = 1

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        self.inputs_rank = len(shape)
        n_in, units = shape[0], self.spec.units
        self.add_param("kernel", (units, n_in), self.spec.kernel_initializer, n_in, units, ctx)
        if self.spec.use_bias:
            self.add_param("bias", (units,), self.spec.bias_initializer, n_in, units, ctx)
        return (units,) + shape[1:]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]
        if self.activation == "relu" and x.ndim == 2 and use_triton(x.data):
            # matmul, then bias + relu fused in one kernel
            return F.bias_act(F.linear(x, self.params["kernel"]), self.params.get("bias"), "relu")
        return super().forward(xs, run)

    def pre_activation(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]
        if x.ndim >= 3:  # Keras applies Dense to the last axis: channels, dim 1 inside
            y = F.linear(to_channels_last(x), self.params["kernel"], self.params.get("bias"))
            return to_channels_first(y)
        return F.linear(x, self.params["kernel"], self.params.get("bias"))

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        x = g.to_last(xs[0], rank, self.name)
        y = g.op(
            "MatMul",
            [x, g.const(f"{self.name}.kernelT", g.weight(self, "kernel").T.copy())],
            self.name,
        )
        if "bias" in self.params:
            y = g.op("Add", [y, self.onnx_weight(g, "bias")], self.name)
        return g.activation(self.activation, g.to_first(y, rank, self.name), self.name)


@register(S.DropoutSpec)
class Dropout(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        return shapes[0]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return F.dropout(xs[0], self.spec.rate, run.training, run.generator)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return xs[0]  # inference: the identity


@register(S.FlattenSpec)
class Flatten(Layer):
    """Flattens in Keras's channels-last order, so weights match Keras models."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        return (math.prod(shapes[0]),)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return to_channels_last(xs[0]).flatten(1)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.op("Flatten", [g.to_last(xs[0], rank, self.name)], self.name, axis=1)


@register(S.RepeatVectorSpec)
class RepeatVector(Layer):
    """(N, features) -> (N, n, features) in Keras's layout; (N, features, n) inside."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 1, "(features,)")
        return (shape[0], self.spec.n)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]  # (N, F)
        return x.unsqueeze(2).expand(x.shape[0], x.shape[1], self.spec.n).contiguous()

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        axes = g.const("axes", np.asarray([2], np.int64))
        shape = g.const("shape", np.asarray([1, 1, self.spec.n], np.int64))
        return g.op("Expand", [g.op("Unsqueeze", [xs[0], axes], self.name), shape], self.name)


@register(S.ReshapeSpec)
class Reshape(Layer):
    """Reshape with Keras's channels-last semantics."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        n = math.prod(shapes[0])
        target = list(self.spec.target_shape)
        if target.count(-1) > 1 or any(t == 0 or t < -1 for t in target):
            raise ShapeError(f"target_shape {target} may hold one -1 and positive sizes only")
        known = math.prod(t for t in target if t != -1)
        if -1 in target:
            if n % known:
                raise ShapeError(
                    f"cannot reshape {keras_shape(shapes[0])} ({n} values) to {target}"
                )
            target[target.index(-1)] = n // known
        elif known != n:
            raise ShapeError(
                f"cannot reshape {keras_shape(shapes[0])} ({n} values) to {target} ({known} values)"
            )
        self.keras_target = tuple(target)
        return engine_shape(self.keras_target)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = to_channels_last(xs[0])
        return to_channels_first(x.reshape(x.shape[0], *self.keras_target))

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        x = g.to_last(xs[0], rank, self.name)
        shape = np.asarray((0,) + tuple(self.keras_target), dtype=np.int64)
        y = g.op("Reshape", [x, g.const(f"{self.name}.shape", shape)], self.name)
        return g.to_first(y, len(self.keras_target) + 1, self.name)


class _Elementwise(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        return shapes[0]


@register(S.ActivationSpec)
class Activation(_Elementwise):
    def pre_activation(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return xs[0]

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.activation(self.activation, xs[0], self.name)


@register(S.ReLUSpec)
class ReLU(_Elementwise):
    may_run_inplace = True

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        s = self.spec
        y = (
            F.leaky_relu(xs[0], s.negative_slope, self.inplace)
            if s.negative_slope
            else F.relu(xs[0], self.inplace)
        )
        return y.clamp(max=s.max_value) if s.max_value is not None else y

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        s = self.spec
        y = (
            g.op("LeakyRelu", [xs[0]], self.name, alpha=float(s.negative_slope))
            if s.negative_slope
            else g.op("Relu", [xs[0]], self.name)
        )
        if s.max_value is not None:
            y = g.op("Min", [y, g.const("max", np.float32(s.max_value))], self.name)
        return y

    @property
    def activation(self) -> str | None:
        return None


@register(S.LeakyReLUSpec)
class LeakyReLU(_Elementwise):
    may_run_inplace = True

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        inplace = self.inplace and self.spec.negative_slope > 0
        return F.leaky_relu(xs[0], self.spec.negative_slope, inplace)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.op("LeakyRelu", xs, self.name, alpha=float(self.spec.negative_slope))


@register(S.ELUSpec)
class ELU(_Elementwise):
    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return F.elu(xs[0], self.spec.alpha)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.op("Elu", xs, self.name, alpha=float(self.spec.alpha))


@register(S.SoftmaxSpec)
class Softmax(_Elementwise):
    def pre_activation(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return xs[0]

    @property
    def activation(self) -> str | None:
        return "softmax"

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.activation("softmax", xs[0], self.name)


@register(S.EmbeddingSpec)
class Embedding(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        s = self.spec
        self.add_param(
            "embeddings",
            (s.input_dim, s.output_dim),
            s.embeddings_initializer,
            s.input_dim,
            s.output_dim,
            ctx,
        )
        return engine_shape(keras_shape(shapes[0]) + (s.output_dim,))

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return to_channels_first(F.embedding(xs[0], self.params["embeddings"]))

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        y = g.op("Gather", [self.onnx_weight(g, "embeddings"), xs[0]], self.name)
        return g.to_first(y, len(self.output_shape) + 1, self.name)

    def output_mask(self, xs: list[Tensor], mask: torch.Tensor | None) -> torch.Tensor | None:
        return xs[0].data != 0 if self.spec.mask_zero and xs[0].ndim == 2 else None


@register(S.MaskingSpec)
class Masking(Layer):
    """Keras's Masking: a step whose features all equal mask_value is padding; it is zeroed
    and later layers skip it."""

    onnx_refusal = (
        "it makes a padding mask, and masks cannot be exported to ONNX yet (the "
        "safetensors bundle keeps them)"
    )

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        if len(shape) != 2:
            raise ShapeError("Masking needs a (steps, features) input per sample")
        return shape

    def _mask(self, x: Tensor) -> torch.Tensor:
        return (x.data != self.spec.mask_value).any(1)  # (N, steps)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        keep = self._mask(xs[0]).to(xs[0].dtype)[:, None, :]
        return xs[0] * Tensor(keep)

    def output_mask(self, xs: list[Tensor], mask: torch.Tensor | None) -> torch.Tensor | None:
        m = self._mask(xs[0])
        return m if mask is None else m & mask


class _ElementwiseMerge(Layer):
    """Inputs of one shape combined elementwise, in `inputs` order."""

    n_inputs = 0
    onnx_op = "Sum"

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        if any(s != shapes[0] for s in shapes):
            raise ShapeError(
                f"{self.spec.type} needs equal shapes, got "
                + ", ".join(str(keras_shape(s)) for s in shapes)
            )
        return shapes[0]

    def combine(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = self.combine(out, x)
        return out

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.op(self.onnx_op, xs, self.name)


@register(S.AddSpec)
class Add(_ElementwiseMerge):
    pass


@register(S.SubtractSpec)
class Subtract(_ElementwiseMerge):
    onnx_op = "Sub"

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        if len(shapes) != 2:
            raise ShapeError(f"Subtract takes exactly two inputs, got {len(shapes)}")
        return super().build(shapes, ctx)

    def combine(self, a: Tensor, b: Tensor) -> Tensor:
        return a - b


@register(S.MultiplySpec)
class Multiply(_ElementwiseMerge):
    def combine(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        out = xs[0]
        for x in xs[1:]:  # ONNX's Mul is binary
            out = g.op("Mul", [out, x], self.name)
        return out


@register(S.AverageSpec)
class Average(_ElementwiseMerge):
    onnx_op = "Mean"

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return super().forward(xs, run) * (1.0 / len(xs))


@register(S.MaximumSpec)
class Maximum(_ElementwiseMerge):
    onnx_op = "Max"

    def combine(self, a: Tensor, b: Tensor) -> Tensor:
        return ops.maximum(a, b)


@register(S.MinimumSpec)
class Minimum(_ElementwiseMerge):
    onnx_op = "Min"

    def combine(self, a: Tensor, b: Tensor) -> Tensor:
        return ops.minimum(a, b)


@register(S.ConcatenateSpec)
class Concatenate(Layer):
    n_inputs = 0

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        rank = len(shapes[0])
        ax = self.spec.axis
        k = ax if ax < 0 else ax - 1  # Keras counts the batch axis
        if not -rank <= k < rank or any(len(s) != rank for s in shapes):
            raise ShapeError(
                f"Concatenate axis {ax} does not fit shapes "
                + ", ".join(str(keras_shape(s)) for s in shapes)
            )
        k %= rank
        ks = [list(keras_shape(s)) for s in shapes]
        for s in ks:
            if s[:k] + s[k + 1 :] != ks[0][:k] + ks[0][k + 1 :]:
                raise ShapeError(
                    "Concatenate needs equal shapes off the axis, got "
                    + ", ".join(str(tuple(s)) for s in ks)
                )
        out = ks[0][:]
        out[k] = sum(s[k] for s in ks)
        # Keras axis k (channels-last, no batch) -> engine dim (with batch)
        self.dim = 1 if (rank >= 2 and k == rank - 1) or rank == 1 else k + 2
        return engine_shape(tuple(out))

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return ops.cat(xs, self.dim)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.op("Concat", xs, self.name, axis=self.dim)
