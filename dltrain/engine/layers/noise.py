"""Regularization layers beside Dropout: whole-channel dropout and Gaussian noise, as Keras
defines them. Training only (the identity at inference and in ONNX exports); the noise comes
from the run's dropout generator, drawn for the global batch's rows with several processes,
so N processes train as one would."""

from __future__ import annotations

import math

import torch

from ...spec import noise_layers as S
from .. import functional as F
from ..distributed import normal_rows
from ..tensor import Tensor, make
from .base import BuildContext, Layer, OnnxGraph, RunContext, Shape, need_rank, register


class _TrainingOnly(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        return shapes[0]

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return xs[0]  # inference: the identity


@register(S.SpatialDropout1DSpec)
class SpatialDropout1D(_TrainingOnly):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        need_rank(self, shapes[0], 2, "(steps, channels)")
        return shapes[0]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return F.dropout1d(xs[0], self.spec.rate, run.training, run.generator)


@register(S.SpatialDropout2DSpec)
class SpatialDropout2D(_TrainingOnly):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        need_rank(self, shapes[0], 3, "(height, width, channels)")
        return shapes[0]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return F.dropout2d(xs[0], self.spec.rate, run.training, run.generator)


def _noise(x: Tensor, run: RunContext) -> torch.Tensor:
    X = x.data
    return normal_rows(tuple(X.shape), run.generator, X.device).to(X.dtype)


@register(S.GaussianNoiseSpec)
class GaussianNoise(_TrainingOnly):
    """x + stddev * N(0, 1) in training; the gradient passes unchanged."""

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x, sd = xs[0], self.spec.stddev
        if not run.training or sd == 0:
            return x
        return make(x.data + _noise(x, run).mul_(sd), (x,), lambda g: (g,), "gaussian_noise")


@register(S.GaussianDropoutSpec)
class GaussianDropout(_TrainingOnly):
    """x * N(1, rate / (1 - rate)) in training (mean 1: no rescaling at inference)."""

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x, rate = xs[0], self.spec.rate
        if not run.training or rate == 0:
            return x
        m = _noise(x, run).mul_(math.sqrt(rate / (1.0 - rate))).add_(1.0)
        return make(x.data * m, (x,), lambda g: (g * m,), "gaussian_dropout")
