"""Softmax cross-entropy from logits: the loss and the logits' gradient, one pass each way.

Per row i with logits x (C classes), target t, class weights w (1 if none), smoothing e:
    A_c    = (1 - e) w_t [c == t] + (e / C) w_c       (0 for an ignored row)
    lse    = log sum_c exp(x_c)
    loss_i = -sum_c A_c (x_c - lse) = S lse - sum_c A_c x_c,   S = sum_c A_c
VJP (upstream g_i per row):
    dx_c = g_i (softmax_c S - A_c),  softmax_c = exp(x_c - lse)
The forward keeps only lse per row; the backward recomputes softmax from it, so the (M, C)
probability matrix is never stored. Rows are tiled over C in BLOCK_C chunks (any C).
Returns per-row losses and the per-row weight w_t (the 'mean' denominator sums it).
"""

from __future__ import annotations

import torch

from . import dispatch, triton_available

if triton_available():  # imported only where a kernel can run (about 1 s of start-up)
    import triton
    import triton.language as tl
else:
    triton = None


if triton is not None:

    @triton.jit
    def _ce_fwd_kernel(
        x_ptr,
        t_ptr,
        w_ptr,
        loss_ptr,
        lse_ptr,
        wt_ptr,
        C,
        stride,
        ignore,
        eps,
        wsum,
        HAS_W: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        row = tl.program_id(0)
        t = tl.load(t_ptr + row)
        valid = t != ignore
        tsafe = tl.where(valid, t, 0)
        base = x_ptr + row * stride
        mx = tl.full([BLOCK_C], float("-inf"), tl.float32)
        acc = tl.zeros([BLOCK_C], tl.float32)
        ax = tl.zeros([BLOCK_C], tl.float32)
        for start in range(0, C, BLOCK_C):  # online max / sum of exponentials
            cols = start + tl.arange(0, BLOCK_C)
            m = cols < C
            x = tl.load(base + cols, mask=m, other=float("-inf")).to(tl.float32)
            new = tl.maximum(mx, x)
            # lanes masked so far hold -inf: their rescale factor is 0, not exp(nan)
            scale = tl.where(new == float("-inf"), 0.0, tl.exp(mx - new))
            acc = acc * scale + tl.where(m, tl.exp(x - new), 0.0)
            mx = new
            if HAS_W:
                wc = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
            else:
                wc = tl.where(m, 1.0, 0.0)
            ax += tl.where(m, wc * x, 0.0)
        gmax = tl.max(mx, axis=0)
        lse = gmax + tl.log(tl.sum(acc * tl.exp(mx - gmax), axis=0))
        xt = tl.load(base + tsafe).to(tl.float32)
        if HAS_W:
            wt = tl.load(w_ptr + tsafe).to(tl.float32)
        else:
            wt = 1.0
        s = (1.0 - eps) * wt + eps / C * wsum
        loss = s * lse - (1.0 - eps) * wt * xt - eps / C * tl.sum(ax, axis=0)
        tl.store(loss_ptr + row, tl.where(valid, loss, 0.0))
        tl.store(lse_ptr + row, lse)
        tl.store(wt_ptr + row, tl.where(valid, wt, 0.0))

    @triton.jit
    def _ce_bwd_kernel(
        x_ptr,
        t_ptr,
        w_ptr,
        lse_ptr,
        g_ptr,
        dx_ptr,
        C,
        stride,
        ignore,
        eps,
        wsum,
        HAS_W: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        row = tl.program_id(0)
        t = tl.load(t_ptr + row)
        valid = t != ignore
        g = tl.where(valid, tl.load(g_ptr + row).to(tl.float32), 0.0)
        lse = tl.load(lse_ptr + row)
        if HAS_W:
            wt = tl.load(w_ptr + tl.where(valid, t, 0)).to(tl.float32)
        else:
            wt = 1.0
        s = (1.0 - eps) * wt + eps / C * wsum
        for start in range(0, C, BLOCK_C):
            cols = start + tl.arange(0, BLOCK_C)
            m = cols < C
            x = tl.load(x_ptr + row * stride + cols, mask=m, other=0.0).to(tl.float32)
            if HAS_W:
                wc = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
            else:
                wc = 1.0
            a = eps / C * wc + tl.where(cols == t, (1.0 - eps) * wt, 0.0)
            dx = g * (tl.exp(x - lse) * s - a)
            tl.store(dx_ptr + row * stride + cols, dx.to(dx_ptr.dtype.element_ty), mask=m)


def _block(C: int) -> int:
    return min(triton.next_power_of_2(C), 4096)


def cross_entropy_fwd(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, C) logits, (M,) int targets -> (per-row loss, per-row lse, per-row w_t). The
    middle output is what the backward reads (`saved`): lse here, the log-probabilities
    in the reference."""
    x = x.contiguous()
    M, C = x.shape
    loss = torch.empty(M, dtype=torch.float32, device=x.device)
    lse, wt = torch.empty_like(loss), torch.empty_like(loss)
    wsum = float(weight.sum()) if weight is not None else float(C)
    _ce_fwd_kernel[(M,)](
        x,
        target,
        weight if weight is not None else x,
        loss,
        lse,
        wt,
        C,
        x.stride(0),
        ignore_index,
        smoothing,
        wsum,
        HAS_W=weight is not None,
        BLOCK_C=_block(C),
    )
    return loss, lse, wt


def cross_entropy_bwd(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    smoothing: float,
    saved: torch.Tensor,
    g_rows: torch.Tensor,
) -> torch.Tensor:
    """`saved` is the forward's per-row lse."""
    lse = saved
    x = x.contiguous()
    M, C = x.shape
    dx = torch.empty_like(x)
    wsum = float(weight.sum()) if weight is not None else float(C)
    _ce_bwd_kernel[(M,)](
        x,
        target,
        weight if weight is not None else x,
        lse,
        g_rows.contiguous(),
        dx,
        C,
        x.stride(0),
        ignore_index,
        smoothing,
        wsum,
        HAS_W=weight is not None,
        BLOCK_C=_block(C),
    )
    return dx


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)  # (a no-op .to still costs a call)


def cross_entropy_fwd_reference(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU path (float32 or wider, as the input): per-row loss, the log-probabilities
    (what its backward reads; the kernel saves lse instead) and w_t."""
    M, C = x.shape
    acc = torch.promote_types(x.dtype, torch.float32)
    logp = torch.log_softmax(_as(x, acc), 1)
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    wt = _as(weight, acc)[safe] * valid if weight is not None else _as(valid, acc)
    loss = logp.gather(1, safe[:, None])[:, 0].mul_(wt).neg_()
    if smoothing:  # (1 - e) w_t nll + (e / C) sum_c w_c (-logp_c)
        w_logp = logp * _as(weight, acc) if weight is not None else logp
        loss = loss * (1 - smoothing) - (smoothing / C) * w_logp.sum(1) * valid
    return loss, logp, wt


def cross_entropy_bwd_reference(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    smoothing: float,
    saved: torch.Tensor,
    g_rows: torch.Tensor,
) -> torch.Tensor:
    """dx = g (softmax * S - A) with the log-probabilities `saved` by the forward."""
    M, C = x.shape
    logp = saved
    acc = logp.dtype
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    g = _as(g_rows, acc) * valid
    w = _as(weight, acc) if weight is not None else None
    gt = g * w[safe] if w is not None else g  # the one-hot part of A, times g
    if smoothing:
        gt = gt * (1 - smoothing)
    dx = torch.exp(logp)
    if smoothing:  # A also holds (e / C) w_c on every class: S = sum_c A_c
        ge = g * (smoothing / C)
        wsum = w.sum() if w is not None else float(C)
        dx.mul_((gt + ge * wsum)[:, None])
        dx.sub_(ge[:, None] * w if w is not None else ge[:, None])
    else:
        dx.mul_(gt[:, None])
    dx.scatter_add_(1, safe[:, None], gt.neg()[:, None])
    return _as(dx, x.dtype)


cross_entropy_forward = dispatch(cross_entropy_fwd, cross_entropy_fwd_reference)
cross_entropy_backward = dispatch(cross_entropy_bwd, cross_entropy_bwd_reference)
