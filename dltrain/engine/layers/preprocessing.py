"""Keras's preprocessing layers: Resizing (bilinear or nearest-exact, as Keras's torch
backend), Rescaling and Normalization, whose statistics `adapt_normalization` fits to the training
data when training starts, as Keras's adapt() does."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...spec import audio_layers as S
from ..tensor import Tensor, make
from .audio import EPSILON
from .base import (
    BuildContext,
    Layer,
    OnnxGraph,
    RunContext,
    Shape,
    ShapeError,
    keras_shape,
    register,
)


def _resize(x: Tensor, size: tuple[int, int], nearest: bool) -> Tensor:
    """Bilinear (half-pixel, no antialiasing) or nearest-exact resize of (N, C, H, W), as
    Keras's torch backend; the backward is aten's own adjoint of the same resize."""
    X = x.data
    mode = "nearest-exact" if nearest else "bilinear"
    out = torch.nn.functional.interpolate(
        X, size=size, mode=mode, align_corners=None if nearest else False
    )
    in_size = list(X.shape)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        g = g.contiguous()
        if nearest:
            return (torch.ops.aten._upsample_nearest_exact2d_backward(g, list(size), in_size),)
        return (torch.ops.aten.upsample_bilinear2d_backward(g, list(size), in_size, False),)

    return make(out, (x,), vjp, "resize")


@register(S.ResizingSpec)
class Resizing(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        if len(shape) != 3:
            raise ShapeError(
                f"Resizing needs images (height, width, channels) per example, got "
                f"{keras_shape(shape)}; add a Reshape first"
            )
        return (shape[0], self.spec.height, self.spec.width)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        s = self.spec
        return _resize(xs[0], (s.height, s.width), s.interpolation == "nearest")

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        s = self.spec
        c = self.output_shape[0]
        sizes = g.const(f"{self.name}.sizes", np.array([1, c, s.height, s.width], np.int64))
        batch = g.op("Shape", [xs[0]], self.name, start=0, end=1)
        full = g.op(
            "Concat",
            [
                batch,
                g.op(
                    "Slice",
                    [
                        sizes,
                        g.const(f"{self.name}.one", np.array([1], np.int64)),
                        g.const(f"{self.name}.four", np.array([4], np.int64)),
                    ],
                    self.name,
                ),
            ],
            self.name,
            axis=0,
        )
        if s.interpolation == "nearest":
            attrs = {
                "mode": "nearest",
                "coordinate_transformation_mode": "half_pixel",
                "nearest_mode": "round_prefer_ceil",
            }
        else:
            attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
        return g.op("Resize", [xs[0], "", "", full], self.name, **attrs)


def _keep_axes(axis: int | list[int] | None, rank: int) -> tuple[int, ...]:
    """Keras's per-sample axes that keep their own statistics."""
    if axis is None:
        return ()
    axes = [axis] if isinstance(axis, int) else list(axis)
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ShapeError(f"Normalization axis {a} is outside a rank-{rank} input")
        out.append(a % rank)
    return tuple(sorted(set(out)))


def _engine_axis(k: int, rank: int) -> int:
    """Keras per-sample axis k -> the engine tensor's dim (batch first, channels first)."""
    if rank < 2:
        return k + 1
    return 1 if k == rank - 1 else k + 2


@register(S.RescalingSpec)
class Rescaling(Layer):
    """x * scale + offset, Keras's Rescaling (integer inputs come out float32)."""

    may_run_inplace = False

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        return shapes[0]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x, sc, off = xs[0], self.spec.scale, self.spec.offset
        X = x.data if x.data.is_floating_point() else x.data.float()
        y = X * sc + off if off else X * sc
        return make(y, (x,), lambda g: (g * sc,), "rescaling")

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        y = g.op("Mul", [xs[0], g.const("scale", np.float32(self.spec.scale))], self.name)
        return g.op("Add", [y, g.const("offset", np.float32(self.spec.offset))], self.name)


@register(S.NormalizationSpec)
class Normalization(Layer):
    """(x - mean) / max(sqrt(variance), 1e-7), Keras's math; mean and variance are buffers
    in Keras's shape (the kept axes), adapted by `adapt_normalization` when not given."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        ks = keras_shape(shape)
        rank = len(ks)
        self.keep = _keep_axes(self.spec.axis, rank)
        stat_shape = tuple(ks[k] for k in self.keep)
        self.bshape = [1] * (rank + 1)
        for k in self.keep:
            self.bshape[_engine_axis(k, rank)] = ks[k]
        s = self.spec
        mean = torch.zeros(stat_shape, dtype=ctx.dtype)
        var = torch.ones(stat_shape, dtype=ctx.dtype)
        if s.mean is not None and s.variance is not None:
            mean = mean + torch.tensor(s.mean, dtype=ctx.dtype)
            var = var * torch.tensor(s.variance, dtype=ctx.dtype)
        if self.adapts:  # weights (checkpointed); given ones are constants of the config
            self.buffers["mean"] = mean.to(ctx.device)
            self.buffers["variance"] = var.to(ctx.device)
            self.buffers["count"] = torch.zeros((), dtype=torch.int64, device=ctx.device)
        else:
            self.fixed = (mean, var)
        self.collect: list[Any] | None = None  # adapt(): [sum, sum of squares, count]
        return shape

    @property
    def adapts(self) -> bool:
        return self.spec.mean is None

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.adapts:
            return self.buffers["mean"], self.buffers["variance"]
        return self.fixed

    def keras_keys(self) -> list[str]:
        # Keras keeps a given mean and variance as constants, adapted ones as variables
        return ["mean", "variance", "count"] if self.adapts else []

    def reduce_dims(self, ndim: int) -> list[int]:
        return [d for d in range(ndim) if self.bshape[d] == 1]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]
        if self.collect is not None:  # adapt(): accumulate this batch's statistics
            X = x.data.double()
            dims = self.reduce_dims(X.ndim)
            self.collect[0] = self.collect[0] + X.sum(dims, keepdim=True)
            self.collect[1] = self.collect[1] + X.square().sum(dims, keepdim=True)
            kept = [X.shape[d] for d in range(X.ndim) if d not in dims]
            self.collect[2] += X.numel() // max(1, int(np.prod(kept)))
            raise _Collected
        mean, var = self.stats()
        mean = mean.to(x.device).reshape(self.bshape)
        std = torch.clamp(torch.sqrt(var.to(x.device).reshape(self.bshape)), min=EPSILON)
        if self.spec.invert:
            return x * Tensor(std) + Tensor(mean)
        return (x - Tensor(mean)) * Tensor(1.0 / std)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        n = self.name
        mean_t, var_t = self.stats()
        mean = mean_t.reshape(self.bshape).cpu().numpy().astype(np.float32)
        var = var_t.reshape(self.bshape).cpu().numpy()
        std = np.maximum(np.sqrt(var), EPSILON).astype(np.float32)
        m, sd = g.const(f"{n}.mean", mean), g.const(f"{n}.std", std)
        if self.spec.invert:
            return g.op("Add", [g.op("Mul", [xs[0], sd], n), m], n)
        return g.op("Div", [g.op("Sub", [xs[0], m], n), sd], n)


class _Collected(Exception):
    """Raised by a Normalization layer once it has seen the batch it adapts to."""


def adapt_normalization(model: Any, batches: Any) -> int:
    """Keras's adapt() for every Normalization layer without fixed statistics, in model
    order: the population mean and variance of its input over the training data (run
    through the layers before it, the earlier ones already adapted). `batches()` yields
    the training inputs. Returns how many layers were adapted."""
    done = 0
    for layer in model.layers:
        if not isinstance(layer, Normalization) or not layer.adapts:
            continue
        layer.collect = [0.0, 0.0, 0]
        try:
            for xb in batches():
                try:
                    model(Tensor(xb), RunContext(training=False))
                except _Collected:
                    pass
            total, sq, n = layer.collect
        finally:
            layer.collect = None
        if not n:
            continue
        mean = total / n
        var = torch.clamp(sq / n - mean * mean, min=0.0)
        dev, dt = layer.buffers["mean"].device, layer.buffers["mean"].dtype
        shape = layer.buffers["mean"].shape
        layer.buffers["mean"] = mean.reshape(shape).to(dev, dt)
        layer.buffers["variance"] = var.reshape(shape).to(dev, dt)
        layer.buffers["count"] = torch.tensor(n, dtype=torch.int64, device=dev)
        done += 1
    return done
