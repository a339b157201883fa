"""Fused optimizer steps over the flat parameter and gradient buffers, one launch each.

Adam / AdamW (torch.optim's math), with t the step and c = sqrt(1 - b2^t):
    g' = g + wd * p                      (Adam's L2; AdamW instead: p <- p * (1 - lr * wd))
    m  <- b1 m + (1 - b1) g'
    v  <- b2 v + (1 - b2) g'^2
    p  <- p - lr / (1 - b1^t) * m / (sqrt(v) / c + eps)
SGD with momentum mu, dampening d (the buffer starts as g' on the first step):
    buf <- mu buf + (1 - d) g' ;  p <- p - lr * (g' + mu buf if nesterov else buf)
Global gradient norm for clipping: per-block partial sums of g^2 (no atomics), then one
small sum and sqrt. There is no VJP: optimizers are not differentiated.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import dispatch, triton_available

if triton_available():  # imported only where a kernel can run (about 1 s of start-up)
    import triton
    import triton.language as tl
else:
    triton = None

BLOCK = 1024


if triton is not None:

    @triton.jit
    def _adam_kernel(
        p_ptr,
        g_ptr,
        m_ptr,
        v_ptr,
        n,
        lr,
        b1,
        b2,
        eps,
        wd,
        bc1,
        bc2_sqrt,
        DECOUPLED: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=mask).to(tl.float32)
        v = tl.load(v_ptr + offs, mask=mask).to(tl.float32)
        if DECOUPLED:
            p = p * (1.0 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        p = p - (lr / bc1) * m / (tl.sqrt(v) / bc2_sqrt + eps)
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)
        tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)
        tl.store(v_ptr + offs, v.to(v_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _sgd_kernel(
        p_ptr,
        g_ptr,
        buf_ptr,
        n,
        lr,
        mu,
        damp,
        wd,
        FIRST: tl.constexpr,
        NESTEROV: tl.constexpr,
        MOMENTUM: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float32) + wd * p
        d = g
        if MOMENTUM:
            if FIRST:
                buf = g
            else:
                buf = mu * tl.load(buf_ptr + offs, mask=mask).to(tl.float32) + (1.0 - damp) * g
            tl.store(buf_ptr + offs, buf.to(buf_ptr.dtype.element_ty), mask=mask)
            if NESTEROV:
                d = g + mu * buf
            else:
                d = buf
        tl.store(p_ptr + offs, (p - lr * d).to(p_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _sumsq_kernel(g_ptr, out_ptr, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        g = tl.load(g_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
        tl.store(out_ptr + pid, tl.sum(g * g, axis=0))


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, BLOCK),)


def adam_step(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    step: int,
    decoupled: bool,
    vmax: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> None:
    """Triton: one launch updates p, m, v in place (1-D contiguous buffers; no AMSGrad)."""
    _adam_kernel[_grid(p.numel())](
        p,
        g,
        m,
        v,
        p.numel(),
        lr,
        b1,
        b2,
        eps,
        wd,
        1 - b1**step,
        math.sqrt(1 - b2**step),
        DECOUPLED=decoupled,
        BLOCK=BLOCK,
    )


def adam_step_reference(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    step: int,
    decoupled: bool,
    vmax: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> None:
    """The CPU path, in place; `vmax` is AMSGrad's running maximum of v, `scratch` a
    buffer like p for the denominator (no allocation per step)."""
    if wd:
        if decoupled:  # AdamW: p <- p (1 - lr wd)
            p.mul_(1 - lr * wd)
        else:  # Adam's L2: g <- g + wd p
            g = g.add(p, alpha=wd)
    m.lerp_(g, 1 - b1)  # m = b1 m + (1 - b1) g
    v.mul_(b2).addcmul_(g, g, value=1 - b2)  # v = b2 v + (1 - b2) g^2
    if vmax is not None:
        torch.maximum(vmax, v, out=vmax)
        v = vmax
    # p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps); multiplying through by
    # c = sqrt(1-b2^t) saves a pass: p -= lr/(1-b1^t) c m / (sqrt(v) + eps c)
    c = math.sqrt(1 - b2**step)
    denom = torch.sqrt(v, out=scratch).add_(eps * c)
    p.addcdiv_(m, denom, value=-lr / (1 - b1**step) * c)


def sgd_step(
    p: torch.Tensor,
    g: torch.Tensor,
    buf: torch.Tensor | None,
    lr: float,
    mu: float,
    damp: float,
    wd: float,
    nesterov: bool,
    first: bool,
) -> None:
    _sgd_kernel[_grid(p.numel())](
        p,
        g,
        buf if buf is not None else p,
        p.numel(),
        lr,
        mu,
        damp,
        wd,
        FIRST=first,
        NESTEROV=nesterov,
        MOMENTUM=buf is not None,
        BLOCK=BLOCK,
    )


def sgd_step_reference(
    p: torch.Tensor,
    g: torch.Tensor,
    buf: torch.Tensor | None,
    lr: float,
    mu: float,
    damp: float,
    wd: float,
    nesterov: bool,
    first: bool,
) -> None:
    """The CPU path, in place; on the first step the momentum buffer starts as the
    gradient itself (as torch.optim.SGD)."""
    d = g.add(p, alpha=wd) if wd else g
    if buf is not None:
        if first:
            buf.copy_(d)
        else:
            buf.mul_(mu).add_(d, alpha=1 - damp)
        d = d.add(buf, alpha=mu) if nesterov else buf
    p.add_(d, alpha=-lr)


def grad_norm(g: torch.Tensor) -> torch.Tensor:
    """L2 norm of a 1-D buffer: per-block partial sums (no atomics), then one small sum."""
    n = g.numel()
    partial = torch.empty(triton.cdiv(n, BLOCK), dtype=torch.float32, device=g.device)
    _sumsq_kernel[_grid(n)](g, partial, n, BLOCK=BLOCK)
    return partial.sum().sqrt()


def grad_norm_reference(g: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(g, dtype=torch.promote_types(g.dtype, torch.float32))


def _adam_fits(p: torch.Tensor, *args: Any) -> bool:
    return p.dim() == 1 and args[10] is None  # one flat buffer, no AMSGrad (vmax)


def _sgd_fits(
    p: torch.Tensor, g: torch.Tensor, buf: Any, lr: float, mu: float, damp: float, *args: Any
) -> bool:
    return p.dim() == 1 and (not damp or buf is None)


adam = dispatch(adam_step, adam_step_reference, _adam_fits)
sgd = dispatch(sgd_step, sgd_step_reference, _sgd_fits)
norm = dispatch(grad_norm, grad_norm_reference, lambda g: g.dim() == 1)
