"""Bias + activation (+ dropout) after a matmul, forward and backward.

Forward on z = x + b (x is the matmul output, (M, N)):
    y = act(z) * keep / (1 - p),   keep = [rand(seed, offset) >= p]
VJP: dz = dy * keep / (1 - p) * act'(z);  dx = dz;  db = sum_rows dz.
act: none (act' = 1), relu (act' = [z > 0]), leaky_relu (1 or slope), gelu with tanh
(y = z/2 (1 + tanh u), u = k (z + 0.044715 z^3)). The dropout mask is regenerated from
(seed, element offset) with Triton's counter-based generator instead of being stored.
The bias gradient's column sums use per-program partial rows (no atomics).
"""

from __future__ import annotations

import math

import torch

from . import dispatch, triton_available

if triton_available():  # imported only where a kernel can run (about 1 s of start-up)
    import triton
    import triton.language as tl
else:
    triton = None

ACTS = {"none": 0, "relu": 1, "leaky_relu": 2, "gelu_tanh": 3}
K = math.sqrt(2.0 / math.pi)

if triton is not None:

    @triton.jit
    def _act(z, ACT: tl.constexpr, slope):
        if ACT == 1:
            return tl.maximum(z, 0.0)
        if ACT == 2:
            return tl.where(z > 0, z, z * slope)
        if ACT == 3:
            u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
            t = 2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0
            return 0.5 * z * (1.0 + t)
        return z

    @triton.jit
    def _dact(z, ACT: tl.constexpr, slope):
        if ACT == 1:
            return tl.where(z > 0, 1.0, 0.0)
        if ACT == 2:
            return tl.where(z > 0, 1.0, slope)
        if ACT == 3:
            u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
            t = 2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0
            du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
            return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du
        return tl.full(z.shape, 1.0, tl.float32)

    @triton.jit
    def _load_z(
        x_ptr,
        b_ptr,
        pm,
        pn,
        M,
        N,
        HAS_B: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        """z = x + b on one (BLOCK_M, BLOCK_N) tile, with its offsets and mask."""
        rows = pm * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
        cols = pn * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        m = (rows < M) & (cols < N)
        offs = rows * N + cols
        z = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_B:
            z += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
        return z, offs, m

    @triton.jit
    def _bias_act_fwd_kernel(
        x_ptr,
        b_ptr,
        y_ptr,
        M,
        N,
        p,
        seed,
        slope,
        ACT: tl.constexpr,
        HAS_B: tl.constexpr,
        DROP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        z, offs, m = _load_z(
            x_ptr, b_ptr, tl.program_id(0), tl.program_id(1), M, N, HAS_B, BLOCK_M, BLOCK_N
        )
        y = _act(z, ACT, slope)
        if DROP:
            keep = tl.rand(seed, offs) >= p
            y = tl.where(keep, y / (1.0 - p), 0.0)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _bias_act_bwd_kernel(
        dy_ptr,
        x_ptr,
        b_ptr,
        dx_ptr,
        db_part,
        M,
        N,
        p,
        seed,
        slope,
        ACT: tl.constexpr,
        HAS_B: tl.constexpr,
        DROP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        pm = tl.program_id(0)
        z, offs, m = _load_z(x_ptr, b_ptr, pm, tl.program_id(1), M, N, HAS_B, BLOCK_M, BLOCK_N)
        dz = tl.load(dy_ptr + offs, mask=m, other=0.0).to(tl.float32) * _dact(z, ACT, slope)
        if DROP:
            keep = tl.rand(seed, offs) >= p
            dz = tl.where(keep, dz / (1.0 - p), 0.0)
        dz = tl.where(m, dz, 0.0)
        tl.store(dx_ptr + offs, dz.to(dx_ptr.dtype.element_ty), mask=m)
        if HAS_B:
            c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
            tl.store(db_part + pm * N + c, tl.sum(dz, axis=0), mask=c < N)


BM, BN = 32, 64


def bias_act_fwd(
    x: torch.Tensor, b: torch.Tensor | None, act: str, p: float, seed: int, slope: float = 0.01
) -> torch.Tensor:
    x = x.contiguous()
    M, N = x.shape
    y = torch.empty_like(x)
    grid = (triton.cdiv(M, BM), triton.cdiv(N, BN))
    _bias_act_fwd_kernel[grid](
        x,
        b if b is not None else x,
        y,
        M,
        N,
        p,
        seed,
        slope,
        ACT=ACTS[act],
        HAS_B=b is not None,
        DROP=p > 0,
        BLOCK_M=BM,
        BLOCK_N=BN,
    )
    return y


def bias_act_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str,
    p: float,
    seed: int,
    slope: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x, dy = x.contiguous(), dy.contiguous()
    M, N = x.shape
    dx = torch.empty_like(x)
    gm = triton.cdiv(M, BM)
    part = torch.empty(gm, N, dtype=torch.float32, device=x.device) if b is not None else x
    _bias_act_bwd_kernel[(gm, triton.cdiv(N, BN))](
        dy,
        x,
        b if b is not None else x,
        dx,
        part,
        M,
        N,
        p,
        seed,
        slope,
        ACT=ACTS[act],
        HAS_B=b is not None,
        DROP=p > 0,
        BLOCK_M=BM,
        BLOCK_N=BN,
    )
    return dx, (part.sum(0).to(b.dtype) if b is not None else None)


def _act_ref(z: torch.Tensor, act: str, slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    if act == "relu":
        return z.clamp(min=0), (z > 0).to(z.dtype)
    if act == "leaky_relu":
        return torch.where(z > 0, z, z * slope), torch.where(
            z > 0, torch.ones_like(z), torch.full_like(z, slope)
        )
    if act == "gelu_tanh":
        t = torch.tanh(K * (z + 0.044715 * z**3))
        du = K * (1 + 3 * 0.044715 * z * z)
        return 0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du
    return z, torch.ones_like(z)


def _keep_ref(shape: torch.Size, p: float, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.rand(shape, generator=g, device=device) >= p


def bias_act_fwd_reference(
    x: torch.Tensor, b: torch.Tensor | None, act: str, p: float, seed: int, slope: float = 0.01
) -> torch.Tensor:
    """Same math; its dropout draws from torch's generator (same distribution, other
    numbers), so tests compare it to Triton with p = 0 and check the masks separately."""
    acc = torch.promote_types(x.dtype, torch.float32)
    z = x.to(acc) + (b.to(acc) if b is not None else 0)
    y = _act_ref(z, act, slope)[0]
    if p > 0:
        y = torch.where(_keep_ref(x.shape, p, seed, x.device), y / (1 - p), 0.0)
    return y.to(x.dtype)


def bias_act_bwd_reference(
    dy: torch.Tensor,
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str,
    p: float,
    seed: int,
    slope: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    acc = torch.promote_types(x.dtype, torch.float32)
    z = x.to(acc) + (b.to(acc) if b is not None else 0)
    dz = dy.to(acc) * _act_ref(z, act, slope)[1]
    if p > 0:
        dz = torch.where(_keep_ref(x.shape, p, seed, x.device), dz / (1 - p), 0.0)
    return dz.to(x.dtype), (dz.sum(0).to(b.dtype) if b is not None else None)


bias_act_forward = dispatch(bias_act_fwd, bias_act_fwd_reference, lambda x, *a: x.dim() == 2)
bias_act_backward = dispatch(bias_act_bwd, bias_act_bwd_reference, lambda dy, x, *a: x.dim() == 2)
