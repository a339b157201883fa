"""Losses with torch.nn.functional's names, arguments and reductions.

cross_entropy and nll_loss are single nodes. Both are written as
    loss_i = -sum_c A_ic * z_ic
with z the log-probabilities and A a per-row coefficient matrix that holds the target,
class weights, label smoothing and ignored rows. For cross_entropy, z = log_softmax(x), so
    d loss_i / d x_ic = softmax_ic * sum_c' A_ic' - A_ic,
one pass over the logits with no separate softmax node. The other losses are composites of
engine ops and need no rule of their own.
"""

from __future__ import annotations

from typing import Any

import torch

from ...kernels import cross_entropy as K_ce
from .. import ops
from ..precision import full
from ..tensor import Tensor, make, may_read_back
from .activations import relu

REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS + ("batchmean",):
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    _check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, d1, ...) -> (N*d1*..., C); (C,) -> (1, C)."""
    if x.dim() == 1:
        return x.unsqueeze(0)
    if x.dim() == 2:
        return x
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _unrows(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) <= 2:
        return g.reshape(shape)
    moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return g.reshape(moved).movedim(-1, 1)


def _check_targets(t: torch.Tensor, C: int, ignore_index: int) -> None:
    """Class indices within [0, C) (or ignore_index); on CPU only, where reading them back
    costs no device sync."""
    if t.numel() and may_read_back(t):
        bad = (t != ignore_index) & ((t < 0) | (t >= C))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise IndexError(f"target {int(t[i])} at position {i} is outside classes [0, {C})")


def _index_coeffs(
    target: torch.Tensor,
    C: int,
    weight: torch.Tensor | None,
    ignore_index: int,
    smoothing: float,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (M, C) for class-index targets, and the 'mean' denominator sum_i w_{t_i}."""
    t = target.reshape(-1)
    _check_targets(t, C, ignore_index)
    valid = t != ignore_index
    safe = torch.where(valid, t, torch.zeros_like(t))
    w_row = weight.to(dtype) if weight is not None else None
    w_t = (w_row[safe] if w_row is not None else torch.ones_like(t, dtype=dtype)) * valid
    A = torch.zeros(t.shape[0], C, dtype=dtype, device=t.device)
    A.scatter_(1, safe.unsqueeze(1), ((1.0 - smoothing) * w_t).unsqueeze(1))
    if smoothing:
        row = (
            w_row.unsqueeze(0)
            if w_row is not None
            else torch.ones(1, C, dtype=dtype, device=t.device)
        )
        A += (smoothing / C) * row * valid.unsqueeze(1).to(dtype)
    return A, w_t.sum()


def cross_entropy(
    input: Tensor,
    target: Tensor | torch.Tensor,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy from logits; targets are class indices or class probabilities."""
    input = full(input)  # losses in float32 under autocast
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    X = input.data
    T = target.data if isinstance(target, Tensor) else target
    W = weight.data if isinstance(weight, Tensor) else weight
    C = X.shape[1] if X.dim() > 1 else X.shape[0]
    if not T.is_floating_point():  # class indices: the fused op, over rows of C logits
        expected = (X.shape[0],) + tuple(X.shape[2:]) if X.dim() > 1 else ()
        if tuple(T.shape) != expected:
            raise ValueError(
                f"cross_entropy: input {tuple(X.shape)} needs class-index targets of shape "
                f"{expected}, got {tuple(T.shape)}"
            )
        if X.dim() == 1:
            rows = input.reshape(1, C)
        elif X.dim() > 2:  # a class per step (N, C, d1, ...)
            rows = input.permute(0, *range(2, X.dim()), 1).reshape(-1, C)
        else:
            rows = input
        _check_targets(T.reshape(-1), C, ignore_index)
        res = _cross_entropy_rows(rows, T.reshape(-1), W, ignore_index, reduction, label_smoothing)
        return res.reshape(T.shape) if reduction == "none" else res
    # class probabilities (one-hot or soft): A_ic = ((1 - s) t_ic + s / C) w_c
    if T.shape != X.shape:
        raise ValueError(
            f"cross_entropy: probability targets must have the input's shape "
            f"{tuple(X.shape)}, got {tuple(T.shape)}"
        )
    X2 = _rows(X)
    logp = torch.log_softmax(X2, -1)
    A = _rows(T) * (1.0 - label_smoothing) + label_smoothing / C
    if W is not None:
        A = A * W
    denom = torch.tensor(float(X2.shape[0]), dtype=X.dtype, device=X.device)
    per_row = -(A * logp).sum(-1)
    if reduction == "mean":
        out = per_row.sum() / denom
    elif reduction == "sum":
        out = per_row.sum()
    else:
        out = per_row.reshape(T.shape[:-1])

    def row_scale(g: torch.Tensor) -> torch.Tensor:
        if reduction == "mean":
            return (g / denom).reshape(1, 1)
        return g.reshape(1, 1) if reduction == "sum" else g.reshape(-1, 1)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gi = row_scale(g)
        gx = (logp.exp() * A.sum(-1, keepdim=True) - A) * gi
        gx = _unrows(gx, X.shape)
        if not (isinstance(target, Tensor) and target.requires_grad):
            return (gx,)
        # d loss_i / d t_ic = -(1 - eps) w_c logp_ic
        gt = -(1.0 - label_smoothing) * logp * gi
        gt = gt * W if W is not None else gt
        return gx, _unrows(gt, T.shape)

    parents = (input, target) if isinstance(target, Tensor) else (input,)
    return make(out, parents, vjp, "cross_entropy")


def _cross_entropy_rows(
    input: Tensor,
    T: torch.Tensor,
    W: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    smoothing: float,
) -> Tensor:
    """The fused op `kernels.cross_entropy` on (M, C) logits and (M,) class indices:
    per-row losses and lse forward, the logits' gradient backward."""
    X = input.data
    rows, saved, wt = K_ce.cross_entropy_forward(X, T, W, ignore_index, smoothing)
    denom = wt.sum() if reduction == "mean" else None
    out = rows if reduction == "none" else (rows.sum() / denom if denom is not None else rows.sum())
    if out.dtype != X.dtype:
        out = out.to(X.dtype)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        gf = g if g.dtype == rows.dtype else g.to(rows.dtype)
        if reduction != "none":  # d total / d row_i = 1 (sum) or 1 / sum w_t (mean)
            gf = (gf / denom if denom is not None else gf).expand(X.shape[0])
        return (K_ce.cross_entropy_backward(X, T, W, ignore_index, smoothing, saved, gf),)

    return make(out, (input,), vjp, "cross_entropy")


def nll_loss(
    input: Tensor,
    target: Tensor | torch.Tensor,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of log-probabilities `input` at class indices `target`."""
    input = full(input)  # losses in float32 under autocast
    _check_reduction(reduction)
    X = input.data
    T = target.data if isinstance(target, Tensor) else target
    W = weight.data if isinstance(weight, Tensor) else weight
    C = X.shape[1] if X.dim() > 1 else X.shape[0]
    A, denom = _index_coeffs(T, C, W, ignore_index, 0.0, X.dtype)
    per_row = -(A * _rows(X)).sum(-1)
    scale: Any = {"mean": 1.0 / denom, "sum": 1.0}.get(reduction)
    out = per_row.sum() * scale if scale is not None else per_row.reshape(T.shape)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        gi = g.reshape(-1, 1) if scale is None else (g * scale).reshape(1, 1)
        return (_unrows(-A * gi, X.shape),)

    return make(out, (input,), vjp, "nll_loss")


def _same_shape(name: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{name}: input shape {tuple(input.shape)} and target shape {tuple(target.shape)} "
            "differ; reshape one of them (broadcasting here is almost always a bug)"
        )


def _const(x: Any, like: Tensor) -> Tensor:
    return ops.as_tensor(x, like)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    input = full(input)  # losses in float32 under autocast
    target = _const(target, input)
    _same_shape("mse_loss", input, target)
    if reduction in ("mean", "sum") and not target.requires_grad:  # one node, aten's kernels
        X, Y, r = input.data, target.data, 1 if reduction == "mean" else 2
        out = torch.ops.aten.mse_loss(X, Y, r)
        return make(
            out, (input,), lambda g: (torch.ops.aten.mse_loss_backward(g, X, Y, r),), "mse_loss"
        )
    d = input - target
    return _reduce(d * d, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    input = full(input)  # losses in float32 under autocast
    target = _const(target, input)
    _same_shape("l1_loss", input, target)
    return _reduce(ops.abs(input - target), reduction)


def huber_loss(
    input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0
) -> Tensor:
    """0.5 d^2 where |d| < delta, delta (|d| - delta/2) beyond."""
    input = full(input)  # losses in float32 under autocast
    target = _const(target, input)
    _same_shape("huber_loss", input, target)
    d = input - target
    ad = ops.abs(d)
    loss = ops.where(ad.data < delta, d * d * 0.5, (ad - 0.5 * delta) * delta)
    return _reduce(loss, reduction)


def binary_cross_entropy(
    input: Tensor, target: Tensor | torch.Tensor, weight: Any = None, reduction: str = "mean"
) -> Tensor:
    """-w (t log x + (1 - t) log(1 - x)) on probabilities, logs clamped at -100 as torch."""
    input = full(input)  # losses in float32 under autocast
    target = _const(target, input)
    _same_shape("binary_cross_entropy", input, target)
    X = input.data
    if X.numel() and may_read_back(X) and bool(((X < 0) | (X > 1)).any()):
        raise ValueError(
            "binary_cross_entropy: inputs must be probabilities in [0, 1]; "
            "use binary_cross_entropy_with_logits for raw scores"
        )
    log_x = ops.clamp(ops.log(input), min=-100)
    log_1mx = ops.clamp(ops.log(1 - input), min=-100)
    loss = -(target * log_x + (1 - target) * log_1mx)
    if weight is not None:
        loss = loss * _const(weight, input)
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor | torch.Tensor,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> Tensor:
    """Stable sigmoid + BCE: (1 - t) x + (1 + (pw - 1) t) (log(1 + e^-|x|) + max(-x, 0))."""
    input = full(input)  # losses in float32 under autocast
    target = _const(target, input)
    _same_shape("binary_cross_entropy_with_logits", input, target)
    softplus_neg = ops.log1p(ops.exp(-ops.abs(input))) + relu(-input)
    if pos_weight is not None:
        lw = 1 + (_const(pos_weight, input) - 1) * target
        loss = (1 - target) * input + lw * softplus_neg
    else:
        loss = (1 - target) * input + softplus_neg
    if weight is not None:
        loss = loss * _const(weight, input)
    return _reduce(loss, reduction)


def kl_div(
    input: Tensor,
    target: Tensor | torch.Tensor,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """KL(target || exp(input)) with `input` log-probabilities; 'batchmean' divides by N."""
    input = full(input)  # losses in float32 under autocast
    target = _const(target, input)
    if log_target:
        loss = ops.exp(target) * (target - input)
    else:
        # t (log t - x), with 0 log 0 = 0
        safe = ops.where(target.data > 0, target, 1.0)
        loss = target * (ops.log(safe) - input)
    if reduction == "batchmean":
        return loss.sum() / input.shape[0]
    return _reduce(loss, reduction)
