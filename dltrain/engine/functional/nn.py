"""Layers' math as in torch.nn.functional: linear, convolutions, pooling, dropout,
embedding, padding, upsampling (normalisation is in `normalization`). NCHW layouts,
torch's names and defaults.

Convolutions and pooling take their gradients from torch's own primitive backward kernels
(`aten.convolution_backward`, `aten.max_pool2d_with_indices_backward`, ...): that is the
primitive math; the tape around them is dltrain's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as TF

from ...kernels import bias_act as K_ba
from ..distributed import RowsGenerator, bernoulli_rows
from ..precision import lower
from ..tensor import Tensor, make, may_read_back

aten = torch.ops.aten
IntOrSeq = int | Sequence[int]


def _tuple(v: IntOrSeq, n: int) -> list[int]:
    return [int(v)] * n if isinstance(v, int) else [int(x) for x in v]


def _data(t: Tensor | torch.Tensor | None) -> torch.Tensor | None:
    return t.data if isinstance(t, Tensor) else t


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, x (..., in), W (out, in)."""
    input, weight, bias = lower(input), lower(weight), lower(bias)
    X, W = input.data, weight.data
    if X.shape[-1] != W.shape[1]:
        raise ValueError(
            f"linear: input has {X.shape[-1]} features (shape {tuple(X.shape)}) but the weight "
            f"expects {W.shape[1]} (shape {tuple(W.shape)})"
        )
    B = bias.data if bias is not None else None
    out = TF.linear(X, W, B)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # dx = g W ; dW = g^T x ; db = sum g over every leading dim
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g @ W) if input.requires_grad else None
        gw = (g2.t() @ X.reshape(-1, X.shape[-1])) if weight.requires_grad else None
        if bias is None:
            return gx, gw
        return gx, gw, (g2.sum(0) if bias.requires_grad else None)

    parents = (input, weight) if bias is None else (input, weight, bias)
    return make(out, parents, vjp, "linear")


def bias_act(
    input: Tensor,
    bias: Tensor | None,
    act: str = "relu",
    p: float = 0.0,
    seed: int = 0,
    slope: float = 0.01,
) -> Tensor:
    """act(input + bias) with dropout from a seed, fused (Triton) on 2-D inputs; the dropout
    mask is regenerated in the backward instead of stored."""
    X = input.data
    B = bias.data if bias is not None else None
    y = K_ba.bias_act_forward(X, B, act, p, seed, slope)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dx, db = K_ba.bias_act_backward(g, X, B, act, p, seed, slope)
        return (dx,) if bias is None else (dx, db)

    return make(y, (input,) if bias is None else (input, bias), vjp, "bias_act")


def _resolve_padding(
    padding: str | IntOrSeq, kernel: Sequence[int], dilation: list[int], stride: list[int], nd: int
) -> tuple[list[int], list[int] | None]:
    """Symmetric padding for the conv, plus an extra F.pad when 'same' is asymmetric."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * nd, None
        if padding != "same":
            raise ValueError(f"padding must be 'valid', 'same' or numbers, got {padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError("padding='same' needs stride 1 (as in torch); pass numbers instead")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        left = [t // 2 for t in total]
        extra = [t - 2 * lft for t, lft in zip(total, left)]
        if any(extra):  # torch puts the odd pixel on the right / bottom
            pad: list[int] = []
            for e in reversed(extra):
                pad += [0, e]
            return left, pad
        return left, None
    return _tuple(padding, nd), None


def _conv(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrSeq,
    padding: str | IntOrSeq,
    dilation: IntOrSeq,
    groups: int,
    nd: int,
) -> Tensor:
    input, weight, bias = lower(input), lower(weight), lower(bias)
    X, W = input.data, weight.data
    if X.dim() != nd + 2:
        raise ValueError(f"conv{nd}d expects a {nd + 2}-D input, got shape {tuple(X.shape)}")
    if X.shape[1] != W.shape[1] * groups:
        raise ValueError(
            f"conv{nd}d: input has {X.shape[1]} channels (shape {tuple(X.shape)}) but the weight "
            f"{tuple(W.shape)} with groups={groups} expects {W.shape[1] * groups}"
        )
    st, dil = _tuple(stride, nd), _tuple(dilation, nd)
    pads, extra = _resolve_padding(padding, W.shape[2:], dil, st, nd)
    if extra is not None:
        return _conv(pad(input, extra), weight, bias, st, pads, dil, groups, nd)
    B = _data(bias)
    out = aten.convolution(X, W, B, st, pads, dil, False, [0] * nd, groups)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        mask = [input.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad]
        bias_sizes = [W.shape[0]] if bias is not None else None
        gx, gw, gb = aten.convolution_backward(
            g, X, W, bias_sizes, st, pads, dil, False, [0] * nd, groups, mask
        )
        return (gx, gw) if bias is None else (gx, gw, gb)

    parents = (input, weight) if bias is None else (input, weight, bias)
    return make(out, parents, vjp, f"conv{nd}d")


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: str | IntOrSeq = 0,
    dilation: IntOrSeq = 1,
    groups: int = 1,
) -> Tensor:
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: str | IntOrSeq = 0,
    dilation: IntOrSeq = 1,
    groups: int = 1,
) -> Tensor:
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2)


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: IntOrSeq = 0,
    output_padding: IntOrSeq = 0,
    groups: int = 1,
    dilation: IntOrSeq = 1,
) -> Tensor:
    """Transposed convolution; weight (in, out/groups, kh, kw) as in torch."""
    input, weight, bias = lower(input), lower(weight), lower(bias)
    X, W = input.data, weight.data
    if X.dim() != 4 or X.shape[1] != W.shape[0]:
        raise ValueError(
            f"conv_transpose2d: input shape {tuple(X.shape)} does not fit weight "
            f"{tuple(W.shape)} (input channels must equal weight.shape[0])"
        )
    st, pad, opad, dil = (_tuple(v, 2) for v in (stride, padding, output_padding, dilation))
    B = _data(bias)
    out = aten.convolution(X, W, B, st, pad, dil, True, opad, groups)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        mask = [input.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad]
        bias_sizes = [W.shape[1] * groups] if bias is not None else None
        gx, gw, gb = aten.convolution_backward(
            g, X, W, bias_sizes, st, pad, dil, True, opad, groups, mask
        )
        return (gx, gw) if bias is None else (gx, gw, gb)

    parents = (input, weight) if bias is None else (input, weight, bias)
    return make(out, parents, vjp, "conv_transpose2d")


def max_pool2d(
    input: Tensor,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: IntOrSeq = 0,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
) -> Tensor:
    X = input.data
    k = _tuple(kernel_size, 2)
    st = _tuple(stride, 2) if stride else k
    pad, dil = _tuple(padding, 2), _tuple(dilation, 2)
    out, idx = aten.max_pool2d_with_indices(X, k, st, pad, dil, ceil_mode)
    return make(
        out,
        (input,),
        lambda g: (aten.max_pool2d_with_indices_backward(g, X, k, st, pad, dil, ceil_mode, idx),),
        "max_pool2d",
    )


def avg_pool2d(
    input: Tensor,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: IntOrSeq = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    X = input.data
    k = _tuple(kernel_size, 2)
    st = _tuple(stride, 2) if stride else k
    pad = _tuple(padding, 2)
    args = (k, st, pad, ceil_mode, count_include_pad, divisor_override)
    out = aten.avg_pool2d(X, *args)
    return make(out, (input,), lambda g: (aten.avg_pool2d_backward(g, X, *args),), "avg_pool2d")


def adaptive_avg_pool2d(input: Tensor, output_size: IntOrSeq) -> Tensor:
    X = input.data
    out = aten._adaptive_avg_pool2d(X, _tuple(output_size, 2))
    return make(
        out, (input,), lambda g: (aten._adaptive_avg_pool2d_backward(g, X),), "adaptive_avg_pool2d"
    )


def dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    generator: torch.Generator | RowsGenerator | None = None,
) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity in eval.

    Pass a seeded `torch.Generator` for reproducible masks.
    """
    return _dropout(input, p, training, generator, input.dim())


def dropout1d(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    generator: torch.Generator | RowsGenerator | None = None,
) -> Tensor:
    """Zero whole channels of (N, C, L) with probability p (one draw per sample and
    channel), the rest scaled by 1/(1-p): Keras's SpatialDropout1D, torch's dropout1d."""
    return _dropout(input, p, training, generator, 2)


def dropout2d(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    generator: torch.Generator | RowsGenerator | None = None,
) -> Tensor:
    """Zero whole feature maps of (N, C, H, W): Keras's SpatialDropout2D, torch's
    dropout2d."""
    return _dropout(input, p, training, generator, 2)


def _dropout(
    input: Tensor,
    p: float,
    training: bool,
    generator: torch.Generator | RowsGenerator | None,
    drawn: int,
) -> Tensor:
    """Dropout with one draw per index of the first `drawn` dims, broadcast over the rest."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    X = input.data
    shape = tuple(X.shape[:drawn]) + (1,) * (X.dim() - drawn)
    if p == 1.0:
        mask = X.new_zeros(shape)
    else:
        keep = bernoulli_rows(shape, 1.0 - p, X.dtype, X.device, generator)
        mask = keep.mul_(1.0 / (1.0 - p))
    return make(X * mask, (input,), lambda g: (g * mask,), "dropout")


def embedding(
    input: Tensor | torch.Tensor, weight: Tensor, padding_idx: int | None = None
) -> Tensor:
    """Rows of `weight` picked by integer `input`; the padding row gets no gradient."""
    idx = input.data
    W = weight.data
    if idx.is_floating_point():
        raise TypeError(f"embedding indices must be integers, got {idx.dtype}")
    # a range check reads the ids back: on CPU only, where that costs no device sync (on a
    # GPU an out-of-range id is caught by the gather itself)
    if may_read_back(idx) and idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= W.shape[0]):
        raise IndexError(
            f"embedding index out of range: indices span [{int(idx.min())}, {int(idx.max())}] "
            f"but the table has {W.shape[0]} rows"
        )
    out = W[idx]

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        flat = idx.reshape(-1)
        gw = torch.zeros_like(W).index_add_(0, flat, g.reshape(-1, W.shape[1]))
        if padding_idx is not None:
            gw[padding_idx] = 0
        return (gw,)

    return make(out, (weight,), vjp, "embedding")


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Constant padding with torch's pad list (last dim first); negative values crop."""
    if mode != "constant":
        raise NotImplementedError(f"pad mode {mode!r}: only 'constant' is supported")
    pad = list(pad)
    out = TF.pad(input.data, pad, value=value)
    return make(out, (input,), lambda g: (TF.pad(g, [-p for p in pad]),), "pad")


def interpolate(
    input: Tensor,
    size: IntOrSeq | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
) -> Tensor:
    """Nearest-neighbour resize of (N, C, L) or (N, C, H, W) inputs."""
    if mode != "nearest":
        raise NotImplementedError(f"interpolate mode {mode!r}: only 'nearest' is supported")
    X = input.data
    nd = X.dim() - 2
    if nd not in (1, 2):
        raise ValueError(f"interpolate expects a 3-D or 4-D input, got {tuple(X.shape)}")
    out = TF.interpolate(X, size=size, scale_factor=scale_factor, mode="nearest")
    scales = (
        [None] * nd
        if scale_factor is None
        else (
            [float(scale_factor)] * nd
            if isinstance(scale_factor, (int, float))
            else [float(s) for s in scale_factor]
        )
    )
    backward = aten.upsample_nearest1d_backward if nd == 1 else aten.upsample_nearest2d_backward
    return make(
        out,
        (input,),
        lambda g: (backward(g, list(out.shape[2:]), list(X.shape), *scales),),
        "interpolate",
    )
