"""Convolution and pooling layers (Keras semantics, NCHW inside).

Keras's 'same' padding puts the odd pixel after (bottom/right); torch pads symmetrically,
so an asymmetric 'same' becomes an explicit pad op followed by a 'valid' op.
"""

from __future__ import annotations

import math

import numpy as np
import torch

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
    need_rank,
    pair,
    register,
    same_pads,
)


def _plan_padding(
    layer: Layer, sizes: Shape, k: tuple, s: tuple, d: tuple
) -> tuple[list[int], list[int] | None]:
    """(symmetric padding, extra pad list for F.pad or None) for Keras 'same'/'valid'."""
    if layer.spec.padding == "valid":
        return [0] * len(sizes), None
    if layer.spec.padding == "causal":  # Conv1D: (k - 1) d zeros before the steps
        return [0], [(k[0] - 1) * d[0], 0]
    pads = [same_pads(n, ki, si, di) for n, ki, si, di in zip(sizes, k, s, d)]
    if all(a == b for a, b in pads):
        return [a for a, _ in pads], None
    extra: list[int] = []
    for a, b in reversed(pads):
        extra += [a, b]
    return [0] * len(sizes), extra


def _out_size(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


class _ConvND(Layer):
    nd = 2

    def keras_layout(self, key: str, w: np.ndarray) -> np.ndarray:
        return _keras_kernel(w) if key == "kernel" else w

    @property
    def output_unsaved(self) -> bool:  # the convolution's backward reads x and W, not y
        return self.activation in (None, "linear")

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        nd = self.nd
        need_rank(
            self, shape, nd + 1, "(height, width, channels)" if nd == 2 else "(steps, channels)"
        )
        sp = self.spec
        c_in = shape[0]
        groups = getattr(sp, "groups", 1)
        if c_in % groups or sp.filters % groups:
            raise ShapeError(
                f"groups={groups} must divide the input channels ({c_in}) and "
                f"filters ({sp.filters})"
            )
        self.groups = groups
        out = self._window(shape)
        rf = math.prod(self.k)
        self.add_param(
            "kernel",
            (sp.filters, c_in // groups) + self.k,
            sp.kernel_initializer,
            c_in // groups * rf,
            sp.filters * rf,
            ctx,
        )
        if sp.use_bias:
            self.add_param(
                "bias", (sp.filters,), sp.bias_initializer, c_in * rf, sp.filters * rf, ctx
            )
        return (sp.filters,) + out

    def _window(self, shape: Shape) -> tuple[int, ...]:
        """Kernel, strides, dilation and padding from the spec; the output's spatial size."""
        nd, sp = self.nd, self.spec
        k, s, d = pair(sp.kernel_size, nd), pair(sp.strides, nd), pair(sp.dilation_rate, nd)
        self.k, self.s, self.d = k, s, d
        self.pad, self.extra = _plan_padding(self, shape[1:], k, s, d)
        sizes = [
            n + (sum(self.extra[2 * (nd - 1 - i) : 2 * (nd - 1 - i) + 2]) if self.extra else 0)
            for i, n in enumerate(shape[1:])
        ]
        out = tuple(
            _out_size(n, ki, si, p, di) for n, ki, si, p, di in zip(sizes, k, s, self.pad, d)
        )
        if any(o <= 0 for o in out):
            raise ShapeError(
                f"kernel {k} does not fit the input {shape[1:]} with padding '{sp.padding}'"
            )
        return out

    def pre_activation(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]
        if self.extra:
            x = F.pad(x, self.extra)
        conv = F.conv2d if self.nd == 2 else F.conv1d
        return conv(
            x, self.params["kernel"], self.params.get("bias"), self.s, self.pad, self.d, self.groups
        )

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        y = self._onnx_conv(g, xs[0], "kernel", "bias" if "bias" in self.params else None)
        return g.activation(self.activation, y, self.name)

    def _onnx_conv(self, g: OnnxGraph, x: str, kernel: str, bias: str | None) -> str:
        """The windowed convolution with weights `kernel` (and `bias`) as one ONNX Conv."""
        nd = self.nd
        begin, end = list(self.pad), list(self.pad)
        if self.extra:  # torch's F.pad list runs last dim first: [w0, w1, h0, h1]
            for i in range(nd):
                begin[i] += self.extra[2 * (nd - 1 - i)]
                end[i] += self.extra[2 * (nd - 1 - i) + 1]
        ins = [x, self.onnx_weight(g, kernel)]
        if bias is not None:
            ins.append(self.onnx_weight(g, bias))
        return g.op(
            "Conv",
            ins,
            self.name,
            strides=list(self.s),
            dilations=list(self.d),
            group=self.groups,
            pads=begin + end,
            kernel_shape=list(self.k),
        )


def _keras_kernel(w: np.ndarray) -> np.ndarray:
    """Keras's (k..., in, out) -> torch's (out, in, k...) (Conv2DTranspose: Keras's
    (k..., out, in) -> torch's (in, out, k...), the same axis move)."""
    return np.ascontiguousarray(np.moveaxis(w, (-1, -2), (0, 1)))


@register(S.Conv2DSpec)
class Conv2D(_ConvND):
    nd = 2


@register(S.Conv1DSpec)
class Conv1D(_ConvND):
    nd = 1


def _keras_depthwise(w: np.ndarray) -> np.ndarray:
    """Keras's depthwise kernel (kh, kw, in, multiplier) -> torch's grouped-convolution
    kernel (in * multiplier, 1, kh, kw): output channel i * multiplier + m, as Keras orders
    them."""
    return _keras_kernel(w.reshape(w.shape[0], w.shape[1], 1, -1))


@register(S.DepthwiseConv2DSpec)
class DepthwiseConv2D(_ConvND):
    """One convolution with groups = input channels (torch's form of a depthwise step)."""

    def keras_layout(self, key: str, w: np.ndarray) -> np.ndarray:
        return _keras_depthwise(w) if key == "kernel" else w

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 3, "(height, width, channels)")
        sp = self.spec
        c, m = shape[0], sp.depth_multiplier
        self.groups = c
        out = self._window(shape)
        rf = math.prod(self.k)
        # Keras's fans of its (kh, kw, in, multiplier) kernel
        self.add_param("kernel", (c * m, 1) + self.k, sp.depthwise_initializer, c * rf, m * rf, ctx)
        if sp.use_bias:
            self.add_param("bias", (c * m,), sp.bias_initializer, c * rf, m * rf, ctx)
        return (c * m,) + out


@register(S.SeparableConv2DSpec)
class SeparableConv2D(_ConvND):
    """The depthwise step (groups = input channels, no bias), then a 1x1 convolution to
    `filters` channels with the bias, then the activation: Keras's order."""

    def keras_layout(self, key: str, w: np.ndarray) -> np.ndarray:
        if key == "depthwise_kernel":
            return _keras_depthwise(w)
        return _keras_kernel(w) if key == "pointwise_kernel" else w

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 3, "(height, width, channels)")
        sp = self.spec
        c, m, f = shape[0], sp.depth_multiplier, sp.filters
        self.groups = c
        out = self._window(shape)
        rf = math.prod(self.k)
        self.add_param(
            "depthwise_kernel", (c * m, 1) + self.k, sp.depthwise_initializer, c * rf, m * rf, ctx
        )
        pw = sp.pointwise_initializer
        self.add_param("pointwise_kernel", (f, c * m, 1, 1), pw, c * m, f, ctx)
        if sp.use_bias:
            self.add_param("bias", (f,), sp.bias_initializer, c * m, f, ctx)
        return (f,) + out

    def pre_activation(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]
        if self.extra:
            x = F.pad(x, self.extra)
        dw = self.params["depthwise_kernel"]
        h = F.conv2d(x, dw, None, self.s, self.pad, self.d, self.groups)
        return F.conv2d(h, self.params["pointwise_kernel"], self.params.get("bias"))

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        h = self._onnx_conv(g, xs[0], "depthwise_kernel", None)
        ins = [h, self.onnx_weight(g, "pointwise_kernel")]
        if "bias" in self.params:
            ins.append(self.onnx_weight(g, "bias"))
        y = g.op("Conv", ins, self.name, kernel_shape=[1, 1])
        return g.activation(self.activation, y, self.name)


@register(S.Conv2DTransposeSpec)
class Conv2DTranspose(Layer):
    output_unsaved = _ConvND.output_unsaved
    keras_layout = _ConvND.keras_layout

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 3, "(height, width, channels)")
        sp = self.spec
        c_in = shape[0]
        k, s = pair(sp.kernel_size), pair(sp.strides)
        self.s = s
        op = None if sp.output_padding is None else pair(sp.output_padding)
        if op is not None and any(o >= si for o, si in zip(op, s)):
            raise ShapeError(f"output_padding {list(op)} must be smaller than strides {s}")
        # Keras/TF: the adjoint of a Conv2D with the same padding. The output length O is
        # Keras's; the full transposed length is L = (n - 1) s + k, of which 'same' crops
        # floor(P / 2) at the top/left (P: the padding of the forward 'same' conv from O)
        # and the rest at the bottom/right; torch crops symmetrically, so the odd row goes
        # by a slice (self.cut), and missing rows come from output_padding (self.opad).
        self.pad, self.opad, self.cut = [], [], []
        outs = []
        for i, (n, ki, si) in enumerate(zip(shape[1:], k, s)):
            extra = op[i] if op is not None else None
            if sp.padding == "same":
                out = n * si if extra is None else (n - 1) * si + ki - 2 * (ki // 2) + extra
                total = max((-(-out // si) - 1) * si + ki - out, 0)
                top = total // 2
            else:
                out = n * si + max(ki - si, 0) if extra is None else (n - 1) * si + ki + extra
                top = 0
            d = (n - 1) * si + ki - 2 * top - out
            self.pad.append(top)
            self.opad.append(max(-d, 0))
            self.cut.append(max(d, 0))
            outs.append(out)
        if any(o >= si for o, si in zip(self.opad, s)):
            raise ShapeError(f"output_padding {self.opad} must be smaller than strides {s}")
        rf = math.prod(k)
        # torch layout (in, out, kh, kw); Keras fans: fan_in = filters * rf
        self.add_param(
            "kernel", (c_in, sp.filters) + k, sp.kernel_initializer, sp.filters * rf, c_in * rf, ctx
        )
        if sp.use_bias:
            self.add_param(
                "bias", (sp.filters,), sp.bias_initializer, sp.filters * rf, c_in * rf, ctx
            )
        if any(o <= 0 for o in outs):
            raise ShapeError(f"output size {outs} is not positive")
        self.out_hw = tuple(outs)
        return (sp.filters,) + self.out_hw

    def pre_activation(self, xs: list[Tensor], run: RunContext) -> Tensor:
        y = F.conv_transpose2d(
            xs[0], self.params["kernel"], self.params.get("bias"), self.s, self.pad, self.opad
        )
        if any(self.cut):  # the bottom/right row that 'same' crops beyond the top/left one
            h, w = self.out_hw
            y = y[:, :, :h, :w]
        return y

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        ins = [xs[0], self.onnx_weight(g, "kernel")]
        if "bias" in self.params:
            ins.append(self.onnx_weight(g, "bias"))
        y = g.op(
            "ConvTranspose",
            ins,
            self.name,
            strides=list(self.s),
            pads=self.pad + [p + c for p, c in zip(self.pad, self.cut)],
            output_padding=list(self.opad),
        )
        return g.activation(self.activation, y, self.name)


class _Pool2D(Layer):
    nd = 2  # 1: (steps, channels) pooled as a (1, steps) image

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        if self.nd == 1:
            need_rank(self, shape, 2, "(steps, channels)")
            out = self._build2d((shape[0], 1, shape[1]))
            return (out[0], out[2])
        need_rank(self, shape, 3, "(height, width, channels)")
        return self._build2d(shape)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        if self.nd == 1:
            return self.pool(xs[0].unsqueeze(2)).squeeze(2)
        return self.pool(xs[0])

    def pool(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    onnx_op = "MaxPool"

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        lft, r, t, b = self.pads
        extra = {"count_include_pad": 0} if self.onnx_op == "AveragePool" else {}
        if self.nd == 1:
            k, s, pads = [self.k[1]], [self.s[1]], [lft, r]
        else:
            k, s, pads = list(self.k), list(self.s), [t, lft, b, r]
        return g.op(self.onnx_op, [xs[0]], self.name, kernel_shape=k, strides=s, pads=pads, **extra)

    def _build2d(self, shape: Shape) -> Shape:
        sp = self.spec
        one = (1,) if self.nd == 1 else ()
        self.k = one + pair(sp.pool_size, self.nd)
        self.s = one + pair(sp.strides, self.nd) if sp.strides is not None else self.k
        self.pads = [0, 0, 0, 0]
        if sp.padding == "same":
            (t, b), (lft, r) = (same_pads(n, k, s) for n, k, s in zip(shape[1:], self.k, self.s))
            self.pads = [lft, r, t, b]
            out = tuple(-(-n // s) for n, s in zip(shape[1:], self.s))
        else:
            out = tuple((n - k) // s + 1 for n, k, s in zip(shape[1:], self.k, self.s))
        if any(o <= 0 for o in out):
            raise ShapeError(f"pool_size {self.k} is larger than the input {shape[1:]}")
        return (shape[0],) + out


@register(S.MaxPooling2DSpec)
class MaxPooling2D(_Pool2D):
    def pool(self, x: Tensor) -> Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads, value=float("-inf"))  # padding never wins the max
        return F.max_pool2d(x, self.k, self.s)


@register(S.AveragePooling2DSpec)
class AveragePooling2D(_Pool2D):
    onnx_op = "AveragePool"

    def pool(self, x: Tensor) -> Tensor:
        if not any(self.pads):
            return F.avg_pool2d(x, self.k, self.s)
        # Keras averages over the real pixels only: window sums / window counts
        sums = F.avg_pool2d(F.pad(x, self.pads), self.k, self.s, divisor_override=1)
        ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        counts = torch.nn.functional.avg_pool2d(
            torch.nn.functional.pad(ones, self.pads), self.k, self.s, divisor_override=1
        )
        return sums / Tensor(counts)


@register(S.MaxPooling1DSpec)
class MaxPooling1D(MaxPooling2D):
    nd = 1


@register(S.AveragePooling1DSpec)
class AveragePooling1D(AveragePooling2D):
    nd = 1


@register(S.GlobalAveragePooling2DSpec)
class GlobalAveragePooling2D(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 3, "(height, width, channels)")
        return (shape[0], 1, 1) if self.spec.keepdims else (shape[0],)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return xs[0].mean((2, 3), keepdim=self.spec.keepdims)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        y = g.op("GlobalAveragePool", [xs[0]], self.name)
        return y if self.spec.keepdims else g.op("Flatten", [y], self.name, axis=1)


@register(S.GlobalMaxPooling2DSpec)
class GlobalMaxPooling2D(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 3, "(height, width, channels)")
        return (shape[0], 1, 1) if self.spec.keepdims else (shape[0],)

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        return ops.amax(xs[0], (2, 3), keepdim=self.spec.keepdims)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        y = g.op("GlobalMaxPool", [xs[0]], self.name)
        return y if self.spec.keepdims else g.op("Flatten", [y], self.name, axis=1)
