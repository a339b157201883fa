"""Layers that pad, crop or repeat rows and columns (Keras semantics, NCHW inside): no
weights, exact gradients through pad/slice/interpolate."""

from __future__ import annotations

import numpy as np

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
    need_rank,
    pair,
    register,
)


def _edges(v: int | list, what: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's 2-D padding/cropping forms: n, [h, w] or [[top, bottom], [left, right]]."""
    if isinstance(v, int):
        return (v, v), (v, v)
    if len(v) == 2 and all(isinstance(x, int) for x in v):
        return (v[0], v[0]), (v[1], v[1])
    if len(v) == 2 and all(isinstance(x, list) and len(x) == 2 for x in v):
        return (v[0][0], v[0][1]), (v[1][0], v[1][1])
    raise ShapeError(f"{what} {v}: use n, [h, w] or [[top, bottom], [left, right]]")


@register(S.ZeroPadding2DSpec)
class ZeroPadding2D(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 3, "(height, width, channels)")
        (t, b), (lft, r) = _edges(self.spec.padding, "padding")
        self.pads = [lft, r, t, b]
        return (shape[0], shape[1] + t + b, shape[2] + lft + r)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return F.pad(xs[0], self.pads)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        lft, r, t, b = self.pads
        pads = g.const("pads", np.asarray([0, 0, t, lft, 0, 0, b, r], np.int64))
        return g.op("Pad", [xs[0], pads], self.name)


@register(S.UpSampling2DSpec)
class UpSampling2D(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 3, "(height, width, channels)")
        self.size = pair(self.spec.size)
        return (shape[0], shape[1] * self.size[0], shape[2] * self.size[1])

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return F.interpolate(xs[0], scale_factor=[float(s) for s in self.size])

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        scales = g.const("scales", np.asarray([1, 1, *self.size], dtype=np.float32))
        return g.op(
            "Resize",
            [xs[0], "", scales],
            self.name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )


@register(S.Cropping2DSpec)
class Cropping2D(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 3, "(height, width, channels)")
        (t, b), (lft, r) = _edges(self.spec.cropping, "cropping")
        h, w = shape[1] - t - b, shape[2] - lft - r
        if h <= 0 or w <= 0:
            raise ShapeError(
                f"cropping {self.spec.cropping} leaves nothing of a {shape[1]}x{shape[2]} input"
            )
        self.box = (t, t + h, lft, lft + w)
        return (shape[0], h, w)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        t, b, lft, r = self.box
        return xs[0][:, :, t:b, lft:r]

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        t, b, lft, r = self.box
        return g.op(
            "Slice",
            [xs[0], g.const("starts", [t, lft]), g.const("ends", [b, r]), g.const("axes", [2, 3])],
            self.name,
        )


@register(S.Cropping1DSpec)
class Cropping1D(Layer):
    """(steps, channels) per sample; steps are the last engine dim."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 2, "(steps, channels)")
        a, b = pair(self.spec.cropping)
        n = shape[1] - a - b
        if n <= 0:
            raise ShapeError(f"cropping {self.spec.cropping} leaves nothing of {shape[1]} steps")
        self.span = (a, a + n)
        return (shape[0], n)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        a, b = self.span
        return xs[0][:, :, a:b]

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        a, b = self.span
        return g.op(
            "Slice",
            [xs[0], g.const("starts", [a]), g.const("ends", [b]), g.const("axes", [2])],
            self.name,
        )
