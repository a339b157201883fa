"""Normalisation layers in Keras's terms: BatchNormalization (moving statistics, the fused
training kernel, synchronised over processes when asked), LayerNormalization and
GroupNormalization, with Keras's gamma/beta weights."""

from __future__ import annotations

import numpy as np
import torch

from ...spec import layers as S
from .. import functional as F
from ..tensor import Tensor
from .base import (
    BuildContext,
    Layer,
    OnnxGraph,
    RunContext,
    Shape,
    ShapeError,
    register,
    to_channels_first,
    to_channels_last,
)


def add_affine(layer: Layer, c: int, ctx: BuildContext) -> None:
    """Keras's normalisation weights: gamma (scale) and beta (center), as the spec asks."""
    if layer.spec.scale:
        layer.add_param("gamma", (c,), "ones", c, c, ctx)
    if layer.spec.center:
        layer.add_param("beta", (c,), "zeros", c, c, ctx)


def onnx_affine(layer: Layer, g: OnnxGraph, c: int) -> list[str]:
    """gamma and beta as initializers (ones and zeros where the layer has none)."""
    gamma = g.weight(layer, "gamma")
    beta = g.weight(layer, "beta")
    return [
        g.const(f"{layer.name}.gamma", np.ones(c, np.float32) if gamma is None else gamma),
        g.const(f"{layer.name}.beta", np.zeros(c, np.float32) if beta is None else beta),
    ]


@register(S.BatchNormalizationSpec)
class BatchNormalization(Layer):
    batch_statistics = True

    @property
    def output_unsaved(self) -> bool:  # its backward reads the input and the batch statistics
        return True

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        c = shape[0]
        add_affine(self, c, ctx)
        self.buffers["moving_mean"] = torch.zeros(c, dtype=ctx.dtype, device=ctx.device)
        self.buffers["moving_variance"] = torch.ones(c, dtype=ctx.dtype, device=ctx.device)
        return shape

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        # Keras momentum m keeps m of the old statistic; torch's momentum is 1 - m.
        # A frozen layer (trainable: false) runs in inference mode, as in Keras.
        training = run.training and self.spec.trainable
        if training and run.sync is not None:  # train.sync_batch_norm with several processes
            return F.sync_batch_norm(
                xs[0],
                self.buffers["moving_mean"],
                self.buffers["moving_variance"],
                self.params.get("gamma"),
                self.params.get("beta"),
                1.0 - self.spec.momentum,
                self.spec.epsilon,
                run.sync,
                run.global_rows,
            )
        return F.batch_norm(
            xs[0],
            self.buffers["moving_mean"],
            self.buffers["moving_variance"],
            self.params.get("gamma"),
            self.params.get("beta"),
            training,
            1.0 - self.spec.momentum,
            self.spec.epsilon,
        )

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        stats = [
            g.const(f"{self.name}.{k}", self.buffers[k].detach().cpu().numpy().astype(np.float32))
            for k in ("moving_mean", "moving_variance")
        ]
        c = self.buffers["moving_mean"].numel()
        ins = [xs[0], *onnx_affine(self, g, c), *stats]
        return g.op("BatchNormalization", ins, self.name, epsilon=float(self.spec.epsilon))


@register(S.LayerNormalizationSpec)
class LayerNormalization(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        add_affine(self, shapes[0][0], ctx)
        return shapes[0]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]
        c = x.shape[1]
        y = F.layer_norm(
            to_channels_last(x),
            [c],
            self.params.get("gamma"),
            self.params.get("beta"),
            self.spec.epsilon,
        )
        return to_channels_first(y)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        x = g.to_last(xs[0], rank, self.name)
        ins = [x, *onnx_affine(self, g, self.output_shape[0])]
        y = g.op("LayerNormalization", ins, self.name, axis=-1, epsilon=float(self.spec.epsilon))
        return g.to_first(y, rank, self.name)


@register(S.GroupNormalizationSpec)
class GroupNormalization(Layer):
    """Keras's GroupNormalization: statistics per sample over each group of channels and
    every spatial position (population variance), then per-channel gamma and beta."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        c = shapes[0][0]
        self.groups = c if self.spec.groups == -1 else self.spec.groups
        if c % self.groups:
            raise ShapeError(
                f"GroupNormalization: {self.groups} groups do not divide the {c} channels"
            )
        add_affine(self, c, ctx)
        return shapes[0]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return F.group_norm(
            xs[0], self.groups, self.params.get("gamma"), self.params.get("beta"), self.spec.epsilon
        )

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        # (N, C, ...) -> (N, groups, rest): InstanceNormalization normalises each group over
        # its values; back to x's shape, then the per-channel affine
        x, n = xs[0], self.name
        y = g.op("Reshape", [x, g.const("shape", [0, self.groups, -1])], n)
        ones = g.const("ones", np.ones(self.groups, np.float32))
        zeros = g.const("zeros", np.zeros(self.groups, np.float32))
        y = g.op("InstanceNormalization", [y, ones, zeros], n, epsilon=float(self.spec.epsilon))
        y = g.op("Reshape", [y, g.op("Shape", [x], n)], n)
        gamma, beta = onnx_affine(self, g, self.output_shape[0])
        per_channel = g.const("shape", [-1] + [1] * (rank - 2))
        y = g.op("Mul", [y, g.op("Reshape", [gamma, per_channel], n)], n)
        return g.op("Add", [y, g.op("Reshape", [beta, per_channel], n)], n)
