"""LayerNorm over the last dim, forward and backward.

Per row x (N values): mean, rstd = 1 / sqrt(var + eps), xhat = (x - mean) rstd,
y = xhat w + b.
VJP: gh = dy w;  dx = rstd (gh - mean(gh) - xhat mean(gh xhat));  dw = sum_rows dy xhat;
db = sum_rows dy. The weight and bias gradients are reduced without atomics: each program
handles a contiguous group of rows and writes its partial sums to its own row of a
(groups, N) buffer; one small sum over groups finishes them.
"""

from __future__ import annotations

from typing import Any

import torch

from . import dispatch, triton_available

if triton_available():  # imported only where a kernel can run (about 1 s of start-up)
    import triton
    import triton.language as tl
else:
    triton = None


if triton is not None:

    @triton.jit
    def _ln_fwd_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, N, eps, BLOCK_N: tl.constexpr
    ):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK_N)
        m = cols < N
        x = tl.load(x_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / N
        xc = tl.where(m, x - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / N + eps)
        w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=m, other=0.0).to(tl.float32)
        y = xc * rstd * w + b
        tl.store(y_ptr + row * N + cols, y.to(y_ptr.dtype.element_ty), mask=m)
        tl.store(mean_ptr + row, mean)
        tl.store(rstd_ptr + row, rstd)

    @triton.jit
    def _ln_bwd_kernel(
        dy_ptr,
        x_ptr,
        w_ptr,
        mean_ptr,
        rstd_ptr,
        dx_ptr,
        dw_part,
        db_part,
        M,
        N,
        rows_per_prog,
        BLOCK_N: tl.constexpr,
    ):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_N)
        m = cols < N
        w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK_N], tl.float32)
        db = tl.zeros([BLOCK_N], tl.float32)
        for r in range(0, rows_per_prog):
            row = pid * rows_per_prog + r
            if row < M:
                x = tl.load(x_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
                dy = tl.load(dy_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
                mean = tl.load(mean_ptr + row)
                rstd = tl.load(rstd_ptr + row)
                xhat = tl.where(m, (x - mean) * rstd, 0.0)
                gh = dy * w
                c1 = tl.sum(gh, axis=0) / N
                c2 = tl.sum(gh * xhat, axis=0) / N
                dx = rstd * (gh - c1 - xhat * c2)
                tl.store(dx_ptr + row * N + cols, dx.to(dx_ptr.dtype.element_ty), mask=m)
                dw += dy * xhat
                db += dy
        tl.store(dw_part + pid * N + cols, dw, mask=m)
        tl.store(db_part + pid * N + cols, db, mask=m)


def layer_norm_fwd(
    x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, N) -> (y, mean (M,), rstd (M,))."""
    assert w is not None and b is not None  # dispatch sends the affine case only
    x = x.contiguous()
    M, N = x.shape
    y = torch.empty_like(x)
    mean = torch.empty(M, dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    _ln_fwd_kernel[(M,)](x, w, b, y, mean, rstd, N, eps, BLOCK_N=triton.next_power_of_2(N))
    return y, mean, rstd


def layer_norm_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor | None,
    b: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    assert w is not None and b is not None  # dispatch sends the affine case only
    x, dy = x.contiguous(), dy.contiguous()
    M, N = x.shape
    groups = min(M, 64)
    per = triton.cdiv(M, groups)
    dx = torch.empty_like(x)
    dw_part = torch.empty(groups, N, dtype=torch.float32, device=x.device)
    db_part = torch.empty_like(dw_part)
    _ln_bwd_kernel[(groups,)](
        dy, x, w, mean, rstd, dx, dw_part, db_part, M, N, per, BLOCK_N=triton.next_power_of_2(N)
    )
    return dx, dw_part.sum(0).to(w.dtype), db_part.sum(0).to(w.dtype)


def layer_norm_fwd_reference(
    x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU path: aten's native layer norm, in float32 or wider (bf16 inputs with fp32
    weights, as the kernel takes them)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    y, mean, rstd = torch.ops.aten.native_layer_norm(
        _as(x, acc), [x.shape[1]], _as(w, acc), _as(b, acc), eps
    )
    return _as(y, x.dtype), mean.reshape(-1), rstd.reshape(-1)


def layer_norm_bwd_reference(
    dy: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor | None,
    b: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    mask = [True, w is not None, b is not None]
    acc = mean.dtype
    dx, dw, db = torch.ops.aten.native_layer_norm_backward(
        _as(dy, acc),
        _as(x, acc),
        [x.shape[1]],
        mean[:, None],
        rstd[:, None],
        _as(w, acc),
        _as(b, acc),
        mask,
    )
    return (
        _as(dx, x.dtype),
        None if w is None else _as(dw, w.dtype),
        None if b is None else _as(db, b.dtype),
    )


def _as(t: Any, dtype: torch.dtype) -> Any:
    return t if t is None or t.dtype == dtype else t.to(dtype)


# one row per program: rows longer than this take the reference (the kernel holds a row in
# registers)
MAX_ROW = 16384


def _fits(x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, *rest: object) -> bool:
    return w is not None and b is not None and x.shape[1] <= MAX_ROW


layer_norm_forward = dispatch(layer_norm_fwd, layer_norm_fwd_reference, _fits)
layer_norm_backward = dispatch(
    layer_norm_bwd, layer_norm_bwd_reference, lambda dy, x, w, b, *r: _fits(x, w, b)
)
