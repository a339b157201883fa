"""Training-mode batch norm fused with its activation, forward and backward.

Inputs are viewed as (R, C): rows are every (n, h, w) position, columns the channels,
which is the channels-last memory the engine keeps images in. Per channel c:
    mean_c, rstd_c = 1 / sqrt(var_c + eps)   (biased variance over the R rows)
    z = (x - mean) rstd w + b,   y = act(z)    (act: none, relu, leaky_relu)
VJP: gz = dy act'(z);  db = sum_rows gz;  dw = sum_rows gz xhat;
     dx = rstd (gz w - mean_rows(gz w) - xhat mean_rows(gz w xhat)).
Column statistics are reduced per block of channels by one program looping over all rows
(two passes, mean then centred variance, for accuracy); no atomics.
"""

from __future__ import annotations

import torch

from . import dispatch, triton_available

if triton_available():  # imported only where a kernel can run (about 1 s of start-up)
    import triton
    import triton.language as tl
else:
    triton = None

ACTS = {"none": 0, "relu": 1, "leaky_relu": 2}

if triton is not None:

    @triton.jit
    def _bn_stats_kernel(
        x_ptr, mean_ptr, rstd_ptr, R, C, eps, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr
    ):
        cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        cm = cols < C
        s = tl.zeros([BLOCK_C], tl.float32)
        for start in range(0, R, BLOCK_R):
            rows = start + tl.arange(0, BLOCK_R)[:, None]
            x = tl.load(
                x_ptr + rows * C + cols[None, :], mask=(rows < R) & cm[None, :], other=0.0
            ).to(tl.float32)
            s += tl.sum(x, axis=0)
        mean = s / R
        v = tl.zeros([BLOCK_C], tl.float32)
        for start in range(0, R, BLOCK_R):
            rows = start + tl.arange(0, BLOCK_R)[:, None]
            m = (rows < R) & cm[None, :]
            x = tl.load(x_ptr + rows * C + cols[None, :], mask=m, other=0.0).to(tl.float32)
            d = tl.where(m, x - mean[None, :], 0.0)
            v += tl.sum(d * d, axis=0)
        tl.store(mean_ptr + cols, mean, mask=cm)
        tl.store(rstd_ptr + cols, 1.0 / tl.sqrt(v / R + eps), mask=cm)

    @triton.jit
    def _bn_act_fwd_kernel(
        x_ptr,
        mean_ptr,
        rstd_ptr,
        w_ptr,
        b_ptr,
        y_ptr,
        R,
        C,
        slope,
        ACT: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cm = cols < C
        m = (rows < R) & cm[None, :]
        x = tl.load(x_ptr + rows * C + cols[None, :], mask=m, other=0.0).to(tl.float32)
        scale = tl.load(rstd_ptr + cols, mask=cm, other=0.0) * tl.load(
            w_ptr + cols, mask=cm, other=0.0
        )
        z = (x - tl.load(mean_ptr + cols, mask=cm, other=0.0)[None, :]) * scale[None, :] + tl.load(
            b_ptr + cols, mask=cm, other=0.0
        )[None, :]
        if ACT == 1:
            z = tl.maximum(z, 0.0)
        if ACT == 2:
            z = tl.where(z > 0, z, z * slope)
        tl.store(y_ptr + rows * C + cols[None, :], z.to(y_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _bn_act_bwd_sums_kernel(
        dy_ptr,
        x_ptr,
        mean_ptr,
        rstd_ptr,
        w_ptr,
        b_ptr,
        sgz_ptr,
        sgzx_ptr,
        R,
        C,
        slope,
        ACT: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        cm = cols < C
        mean = tl.load(mean_ptr + cols, mask=cm, other=0.0)
        rstd = tl.load(rstd_ptr + cols, mask=cm, other=0.0)
        w = tl.load(w_ptr + cols, mask=cm, other=0.0)
        b = tl.load(b_ptr + cols, mask=cm, other=0.0)
        sgz = tl.zeros([BLOCK_C], tl.float32)
        sgzx = tl.zeros([BLOCK_C], tl.float32)
        for start in range(0, R, BLOCK_R):
            rows = start + tl.arange(0, BLOCK_R)[:, None]
            m = (rows < R) & cm[None, :]
            x = tl.load(x_ptr + rows * C + cols[None, :], mask=m, other=0.0).to(tl.float32)
            gz = tl.load(dy_ptr + rows * C + cols[None, :], mask=m, other=0.0).to(tl.float32)
            xhat = (x - mean[None, :]) * rstd[None, :]
            z = xhat * w[None, :] + b[None, :]
            if ACT == 1:
                gz = tl.where(z > 0, gz, 0.0)
            if ACT == 2:
                gz = tl.where(z > 0, gz, gz * slope)
            gz = tl.where(m, gz, 0.0)
            sgz += tl.sum(gz, axis=0)
            sgzx += tl.sum(gz * xhat, axis=0)
        tl.store(sgz_ptr + cols, sgz, mask=cm)
        tl.store(sgzx_ptr + cols, sgzx, mask=cm)

    @triton.jit
    def _bn_act_bwd_dx_kernel(
        dy_ptr,
        x_ptr,
        mean_ptr,
        rstd_ptr,
        w_ptr,
        b_ptr,
        sgz_ptr,
        sgzx_ptr,
        dx_ptr,
        R,
        C,
        slope,
        ACT: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cm = cols < C
        m = (rows < R) & cm[None, :]
        mean = tl.load(mean_ptr + cols, mask=cm, other=0.0)[None, :]
        rstd = tl.load(rstd_ptr + cols, mask=cm, other=0.0)[None, :]
        w = tl.load(w_ptr + cols, mask=cm, other=0.0)[None, :]
        b = tl.load(b_ptr + cols, mask=cm, other=0.0)[None, :]
        x = tl.load(x_ptr + rows * C + cols[None, :], mask=m, other=0.0).to(tl.float32)
        gz = tl.load(dy_ptr + rows * C + cols[None, :], mask=m, other=0.0).to(tl.float32)
        xhat = (x - mean) * rstd
        z = xhat * w + b
        if ACT == 1:
            gz = tl.where(z > 0, gz, 0.0)
        if ACT == 2:
            gz = tl.where(z > 0, gz, gz * slope)
        m1 = tl.load(sgz_ptr + cols, mask=cm, other=0.0)[None, :] / R
        m2 = tl.load(sgzx_ptr + cols, mask=cm, other=0.0)[None, :] / R
        dx = rstd * w * (gz - m1 - xhat * m2)
        tl.store(dx_ptr + rows * C + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)


BR, BC = 64, 32


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (R, C) over channels-last memory."""
    return x.movedim(1, -1).reshape(-1, x.shape[1]).contiguous()


def _unrows(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    shape = (like.shape[0],) + tuple(like.shape[2:]) + (like.shape[1],)
    return y.reshape(shape).movedim(-1, 1)


def batch_norm_act_fwd(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float, act: str, slope: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (N, C, ...) -> (y, batch mean (C,), rstd (C,))."""
    xr = _rows(x)
    R, C = xr.shape
    mean = torch.empty(C, dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    _bn_stats_kernel[(triton.cdiv(C, BC),)](xr, mean, rstd, R, C, eps, BLOCK_R=BR, BLOCK_C=BC)
    y = torch.empty_like(xr)
    _bn_act_fwd_kernel[(triton.cdiv(R, BR), triton.cdiv(C, BC))](
        xr, mean, rstd, w, b, y, R, C, slope, ACT=ACTS[act], BLOCK_R=BR, BLOCK_C=BC
    )
    return _unrows(y, x), mean, rstd


def batch_norm_act_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    act: str,
    slope: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xr, dyr = _rows(x), _rows(dy)
    R, C = xr.shape
    sgz = torch.empty(C, dtype=torch.float32, device=x.device)
    sgzx = torch.empty_like(sgz)
    _bn_act_bwd_sums_kernel[(triton.cdiv(C, BC),)](
        dyr, xr, mean, rstd, w, b, sgz, sgzx, R, C, slope, ACT=ACTS[act], BLOCK_R=BR, BLOCK_C=BC
    )
    dx = torch.empty_like(xr)
    _bn_act_bwd_dx_kernel[(triton.cdiv(R, BR), triton.cdiv(C, BC))](
        dyr, xr, mean, rstd, w, b, sgz, sgzx, dx, R, C, slope, ACT=ACTS[act], BLOCK_R=BR, BLOCK_C=BC
    )
    return _unrows(dx, x), (sgzx).to(w.dtype), sgz.to(b.dtype)


def _act(z: torch.Tensor, act: str, slope: float) -> torch.Tensor:
    if act == "relu":
        return z.clamp(min=0)
    if act == "leaky_relu":
        return torch.where(z > 0, z, z * slope)
    return z


def batch_norm_act_fwd_reference(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float, act: str, slope: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CPU path: aten's native batch norm over the batch (no running statistics: the
    caller updates them from mean and rstd), then the activation. A bfloat16/float16 input
    runs aten's mixed kernel (float32 weights and statistics, the output in the input's
    type), with no float32 copy of the activations."""
    acc = torch.promote_types(x.dtype, torch.float32)
    z, mean, rstd = torch.ops.aten.native_batch_norm(
        x, _as(w, acc), _as(b, acc), None, None, True, 0.0, eps
    )
    return _act(z, act, slope), mean, rstd


def batch_norm_act_bwd_reference(
    dy: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    act: str,
    slope: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = mean.dtype
    wa, gz = _as(w, acc), _as(dy, x.dtype)
    if act != "none":  # through the activation: z recomputed from the saved statistics
        shape = (1, -1) + (1,) * (x.dim() - 2)
        z = (x - mean.view(shape)) * (rstd * wa).view(shape) + _as(b, acc).view(shape)
        gz = gz * (z > 0) if act == "relu" else torch.where(z > 0, gz, gz * slope)
    # training-mode backward reads the saved statistics only (eps is not used); a lower
    # precision input runs aten's mixed kernel as in the forward
    dx, dw, db = torch.ops.aten.native_batch_norm_backward(
        gz, x, wa, None, None, mean, rstd, True, 0.0, [True, True, True]
    )
    return _as(dx, x.dtype), _as(dw, w.dtype), _as(db, b.dtype)


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


batch_norm_act_forward = dispatch(batch_norm_act_fwd, batch_norm_act_fwd_reference)
batch_norm_act_backward = dispatch(batch_norm_act_bwd, batch_norm_act_bwd_reference)
