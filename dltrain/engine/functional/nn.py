"""Layers' math as in torch.nn.functional: linear, convolutions, pooling, normalisation,
dropout, embedding, padding, upsampling. NCHW layouts, torch's names and defaults.

Convolutions and pooling take their gradients from torch's own primitive backward kernels
(`aten.convolution_backward`, `aten.max_pool2d_with_indices_backward`, ...): that is the
primitive math; the tape around them is dltrain's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as TF

from ...kernels import batch_norm_act as K_bn
from ...kernels import bias_act as K_ba
from ...kernels import layer_norm as K_ln
from ..distributed import RowsGenerator, World, bernoulli_rows
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


def batch_norm(
    input: Tensor,
    running_mean: Tensor | torch.Tensor | None,
    running_var: Tensor | torch.Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over every dim but the channels (dim 1). Training updates running stats
    in place (running_var with the unbiased variance, as torch).

    y = xhat * w + b, xhat = (x - mean) * invstd. In training the statistics depend on x:
        dx = invstd * (gh - mean(gh) - xhat * mean(gh * xhat)),  gh = g * w
    (means over every dim but the channels); in eval dx = g * w * invstd. dw = sum(g * xhat),
    db = sum(g). torch's native batch-norm kernels compute exactly this in one pass each
    way. Training with both weight and bias is the fused op `kernels.batch_norm_act`
    (Triton on CUDA; its reference, aten's native batch norm, elsewhere).
    """
    X = input.data
    C = X.shape[1]
    rm, rv = _data(running_mean), _data(running_var)
    if training and X.numel() // C <= 1:
        raise ValueError(
            f"batch_norm in training needs more than one value per channel, got "
            f"input shape {tuple(X.shape)}"
        )
    if not training and (rm is None or rv is None):
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    W = weight.data if weight is not None else None
    B = bias.data if bias is not None else None
    if training and weight is not None and bias is not None:
        return _batch_norm_act(input, weight, bias, rm, rv, momentum, eps)
    out, save_mean, save_invstd = aten.native_batch_norm(X, W, B, rm, rv, training, momentum, eps)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        mask = [
            input.requires_grad,
            weight is not None and weight.requires_grad,
            bias is not None and bias.requires_grad,
        ]
        gx, gw, gb = aten.native_batch_norm_backward(
            g, X, W, rm, rv, save_mean, save_invstd, training, eps, mask
        )
        res: list[torch.Tensor | None] = [gx]
        if weight is not None:
            res.append(gw)
        if bias is not None:
            res.append(gb)
        return tuple(res)

    parents = tuple(t for t in (input, weight, bias) if t is not None)
    return make(out, parents, vjp, "batch_norm")


def sync_batch_norm(
    input: Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    momentum: float,
    eps: float,
    world: World,
    total_rows: int,
) -> Tensor:
    """Training batch norm over the global batch of every data-parallel process (whose
    rows number `total_rows`): the same math as `batch_norm` on the concatenated batch
    (statistics from all-reduced sums, in float64, of every process's slice), and a
    backward whose two per-channel means are all-reduced the same way. Each process keeps
    only its slice of x and dx. Nothing is read back to the host."""
    X = input.data
    C = X.shape[1]
    dims = [d for d in range(X.ndim) if d != 1]
    shape = [1, C] + [1] * (X.ndim - 2)
    n_local = X.numel() // C if C else 0
    n = total_rows * (X[0].numel() // C)  # values per channel in the global batch
    first = X.sum(dims, dtype=torch.float64)
    world.all_reduce_(first)
    if n <= 1:
        raise ValueError(
            f"batch_norm in training needs more than one value per channel, got {n} in the "
            "global batch"
        )
    mean64 = first / n
    centred = X - mean64.to(X.dtype).view(shape)
    sq = (centred.double() ** 2).sum(dims) if n_local else X.new_zeros(C, dtype=torch.float64)
    world.all_reduce_(sq)
    var64 = sq / n
    invstd = torch.rsqrt(var64 + eps).to(X.dtype)
    xhat = centred * invstd.view(shape)
    W = weight.data if weight is not None else None
    B = bias.data if bias is not None else None
    y = xhat * W.view(shape) if W is not None else xhat.clone()
    if B is not None:
        y = y + B.view(shape)
    if running_mean is not None and running_var is not None:
        running_mean.mul_(1 - momentum).add_(mean64.to(running_mean.dtype), alpha=momentum)
        unbiased = (var64 * (n / (n - 1))).to(running_var.dtype)
        running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gh = g * W.view(shape) if W is not None else g
        sums = torch.cat(
            [gh.sum(dims, dtype=torch.float64), (gh * xhat).sum(dims, dtype=torch.float64)]
        )
        world.all_reduce_(sums)
        m_gh = (sums[:C] / n).to(X.dtype).view(shape)
        m_ghx = (sums[C:] / n).to(X.dtype).view(shape)
        gx = invstd.view(shape) * (gh - m_gh - xhat * m_ghx)
        res: list[torch.Tensor | None] = [gx]
        if weight is not None:
            res.append((g * xhat).sum(dims))
        if bias is not None:
            res.append(g.sum(dims))
        return tuple(res)

    parents = tuple(t for t in (input, weight, bias) if t is not None)
    return make(y, parents, vjp, "sync_batch_norm")


def _batch_norm_act(
    input: Tensor,
    weight: Tensor,
    bias: Tensor,
    rm: torch.Tensor | None,
    rv: torch.Tensor | None,
    momentum: float,
    eps: float,
    act: str = "none",
    slope: float = 0.01,
) -> Tensor:
    """Training batch norm (+ activation) through the fused op."""
    X, W, B = input.data, weight.data, bias.data
    y, mean, rstd = K_bn.batch_norm_act_forward(X, W, B, eps, act, slope)
    if rm is not None and rv is not None:  # running stats as torch: unbiased variance
        n = X.numel() // X.shape[1]
        var = 1.0 / (rstd * rstd) - eps
        rm.mul_(1 - momentum).add_(mean.to(rm.dtype), alpha=momentum)
        rv.mul_(1 - momentum).add_(var.to(rv.dtype), alpha=momentum * n / max(n - 1, 1))

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return K_bn.batch_norm_act_backward(g, X, W, B, mean, rstd, act, slope)

    return make(y, (input, weight, bias), vjp, "batch_norm")


def layer_norm(
    input: Tensor,
    normalized_shape: IntOrSeq,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    X = input.data
    shape = (
        _tuple(normalized_shape, 1) if isinstance(normalized_shape, int) else list(normalized_shape)
    )
    k = len(shape)
    if list(X.shape[-k:]) != shape:
        raise ValueError(
            f"layer_norm: normalized_shape {shape} does not match the input's trailing dims "
            f"{tuple(X.shape)}"
        )
    n = math.prod(shape)
    X2 = X.reshape(-1, n)  # rows of the normalised values
    W = weight.data.reshape(n) if weight is not None else None
    B = bias.data.reshape(n) if bias is not None else None
    y, mean, rstd = K_ln.layer_norm_forward(X2, W, B, eps)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dx, dw, db = K_ln.layer_norm_backward(g.reshape(-1, n), X2, W, B, mean, rstd)
        res: list[torch.Tensor | None] = [dx.reshape(X.shape)]
        if weight is not None:
            res.append(dw.reshape(weight.shape) if dw is not None else None)
        if bias is not None:
            res.append(db.reshape(bias.shape) if db is not None else None)
        return tuple(res)

    parents = tuple(t for t in (input, weight, bias) if t is not None)
    return make(y.reshape(X.shape), parents, vjp, "layer_norm")


def dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    generator: torch.Generator | RowsGenerator | None = None,
) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity in eval.

    Pass a seeded `torch.Generator` for reproducible masks.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    X = input.data
    if p == 1.0:
        mask = torch.zeros_like(X)
    else:
        keep = bernoulli_rows(tuple(X.shape), 1.0 - p, X.dtype, X.device, generator)
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
