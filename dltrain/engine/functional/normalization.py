"""Normalisation as in torch.nn.functional: batch norm (one process, or synchronised over
the data-parallel processes) layer norm and group norm, with their vjps. Training batch norm with an
affine transform and layer norm run the fused ops of `kernels` (Triton on CUDA, their
torch references elsewhere)."""

from __future__ import annotations

import math

import torch

from ...kernels import batch_norm_act as K_bn
from ...kernels import layer_norm as K_ln
from ..distributed import World
from ..tensor import Tensor, make
from .nn import IntOrSeq, _data

aten = torch.ops.aten


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
        grads = aten.native_batch_norm_backward(
            g, X, W, rm, rv, save_mean, save_invstd, training, eps, _wanted(input, weight, bias)
        )
        return _present(grads, weight, bias)

    return make(out, _parents(input, weight, bias), vjp, "batch_norm")


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

    parents = _parents(input, weight, bias)
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
    shape = [int(normalized_shape)] if isinstance(normalized_shape, int) else list(normalized_shape)
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

    parents = _parents(input, weight, bias)
    return make(y.reshape(X.shape), parents, vjp, "layer_norm")


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise (N, C, ...) over each group of C / num_groups channels and every other
    dim but the batch, then scale and shift per channel (torch's group_norm). aten's native
    kernels compute the value and the three gradients."""
    X = input.data.contiguous()  # aten's kernel reads (N, C, ...) in its contiguous layout
    N, C = X.shape[0], X.shape[1]
    if C % num_groups:
        raise ValueError(f"group_norm: {num_groups} groups do not divide {C} channels")
    hw = X[0, 0].numel() if C else 0
    W, B = _data(weight), _data(bias)
    out, mean, rstd = aten.native_group_norm(X, W, B, N, C, hw, num_groups, eps)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads = aten.native_group_norm_backward(
            g.contiguous(), X, mean, rstd, W, N, C, hw, num_groups, _wanted(input, weight, bias)
        )
        return _present(grads, weight, bias)

    return make(out, _parents(input, weight, bias), vjp, "group_norm")


def _parents(input: Tensor, weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, ...]:
    return tuple(t for t in (input, weight, bias) if t is not None)


def _wanted(input: Tensor, weight: Tensor | None, bias: Tensor | None) -> list[bool]:
    """aten's output mask of a normalisation backward: which of dx, dw, db to compute."""
    return [
        input.requires_grad,
        weight is not None and weight.requires_grad,
        bias is not None and bias.requires_grad,
    ]


def _present(
    grads: tuple[torch.Tensor, ...], weight: Tensor | None, bias: Tensor | None
) -> tuple[torch.Tensor | None, ...]:
    """aten's (dx, dw, db) as the vjp of the parents there are (no weight, no dw)."""
    gx, gw, gb = grads
    return (gx, *([gw] if weight is not None else []), *([gb] if bias is not None else []))
