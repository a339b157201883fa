"""Scaled dot-product attention, flash-attention style: tiled so the L x S score matrix is
never stored.

Per head, S = Q K^T * scale + mask (causal: -inf above the diagonal), P = softmax(S), O = P V.
Forward: for each query block, stream key blocks with an online softmax (running max m and
normaliser l), keep O and lse = m + log l per query row.
VJP (FA2): with D_i = rowsum(dO_i * O_i) and P recomputed from lse,
    dV = P^T dO,  dP = dO V^T,  dS = P * (dP - D),  dQ = dS K * scale,  dK = dS^T Q * scale.
One kernel per key block accumulates dK, dV over query blocks; another per query block
accumulates dQ over key blocks: no atomics. Masks are (L, S), boolean (True = attend) or
additive floats.
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

BM, BN = 16, 16

if triton is not None:

    @triton.jit
    def _scores(
        q, k, offs_m, offs_n, mask_ptr, L, S, scale, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr
    ):
        s = tl.dot(q, tl.trans(k)) * scale
        valid = (offs_m[:, None] < L) & (offs_n[None, :] < S)
        if HAS_MASK:
            s += tl.load(mask_ptr + offs_m[:, None] * S + offs_n[None, :], mask=valid, other=0.0)
        if CAUSAL:
            s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float("-inf"))
        return tl.where(offs_n[None, :] < S, s, float("-inf"))

    @triton.jit
    def _tile(ptr, bh, offs, n, E, offs_d):
        """Rows offs of head bh from a (heads, n, E) tensor, zero past n and E."""
        m = (offs[:, None] < n) & (offs_d[None, :] < E)
        return tl.load(
            ptr + bh * n * E + offs[:, None] * E + offs_d[None, :], mask=m, other=0.0
        ).to(tl.float32)

    @triton.jit
    def _attn_fwd_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        mask_ptr,
        o_ptr,
        lse_ptr,
        L,
        S,
        E,
        scale,
        HAS_MASK: tl.constexpr,
        CAUSAL: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        mb, bh = tl.program_id(0), tl.program_id(1)
        offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        dm = offs_d[None, :] < E
        q = tl.load(
            q_ptr + bh * L * E + offs_m[:, None] * E + offs_d[None, :],
            mask=(offs_m[:, None] < L) & dm,
            other=0.0,
        ).to(tl.float32)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start in range(0, S, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            k = _tile(k_ptr, bh, offs_n, S, E, offs_d)
            v = _tile(v_ptr, bh, offs_n, S, E, offs_d)
            s = _scores(q, k, offs_m, offs_n, mask_ptr, L, S, scale, HAS_MASK, CAUSAL)
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p, v)
            m_i = m_new
        o = acc / l_i[:, None]
        tl.store(
            o_ptr + bh * L * E + offs_m[:, None] * E + offs_d[None, :],
            o.to(o_ptr.dtype.element_ty),
            mask=(offs_m[:, None] < L) & dm,
        )
        tl.store(lse_ptr + bh * L + offs_m, m_i + tl.log(l_i), mask=offs_m < L)

    @triton.jit
    def _attn_bwd_dkdv_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        mask_ptr,
        do_ptr,
        lse_ptr,
        delta_ptr,
        dk_ptr,
        dv_ptr,
        L,
        S,
        E,
        scale,
        HAS_MASK: tl.constexpr,
        CAUSAL: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        nb, bh = tl.program_id(0), tl.program_id(1)
        offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        dm = offs_d[None, :] < E
        kv = bh * S * E + offs_n[:, None] * E + offs_d[None, :]
        km = (offs_n[:, None] < S) & dm
        k = tl.load(k_ptr + kv, mask=km, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + kv, mask=km, other=0.0).to(tl.float32)
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        for start in range(0, L, BLOCK_M):
            offs_m = start + tl.arange(0, BLOCK_M)
            q = _tile(q_ptr, bh, offs_m, L, E, offs_d)
            do = _tile(do_ptr, bh, offs_m, L, E, offs_d)
            lse = tl.load(lse_ptr + bh * L + offs_m, mask=offs_m < L, other=0.0)
            delta = tl.load(delta_ptr + bh * L + offs_m, mask=offs_m < L, other=0.0)
            s = _scores(q, k, offs_m, offs_n, mask_ptr, L, S, scale, HAS_MASK, CAUSAL)
            p = tl.where(offs_m[:, None] < L, tl.exp(s - lse[:, None]), 0.0)
            dv += tl.dot(tl.trans(p), do)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds), q) * scale
        tl.store(dk_ptr + kv, dk.to(dk_ptr.dtype.element_ty), mask=km)
        tl.store(dv_ptr + kv, dv.to(dv_ptr.dtype.element_ty), mask=km)

    @triton.jit
    def _attn_bwd_dq_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        mask_ptr,
        do_ptr,
        lse_ptr,
        delta_ptr,
        dq_ptr,
        L,
        S,
        E,
        scale,
        HAS_MASK: tl.constexpr,
        CAUSAL: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        mb, bh = tl.program_id(0), tl.program_id(1)
        offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        dm = offs_d[None, :] < E
        qo = bh * L * E + offs_m[:, None] * E + offs_d[None, :]
        qm = (offs_m[:, None] < L) & dm
        q = tl.load(q_ptr + qo, mask=qm, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + qo, mask=qm, other=0.0).to(tl.float32)
        lse = tl.load(lse_ptr + bh * L + offs_m, mask=offs_m < L, other=0.0)
        delta = tl.load(delta_ptr + bh * L + offs_m, mask=offs_m < L, other=0.0)
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start in range(0, S, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            k = _tile(k_ptr, bh, offs_n, S, E, offs_d)
            v = _tile(v_ptr, bh, offs_n, S, E, offs_d)
            s = _scores(q, k, offs_m, offs_n, mask_ptr, L, S, scale, HAS_MASK, CAUSAL)
            p = tl.exp(s - lse[:, None])
            ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
            dq += tl.dot(ds, k) * scale
        tl.store(dq_ptr + qo, dq.to(dq_ptr.dtype.element_ty), mask=qm)


def _prep(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None):
    *batch, L, E = q.shape
    S = k.shape[-2]
    flat = [t.reshape(-1, t.shape[-2], E).contiguous() for t in (q, k, v)]
    add = None
    if mask is not None:
        add = (
            mask.float()
            if mask.dtype != torch.bool
            else torch.zeros(mask.shape, device=q.device).masked_fill(~mask, float("-inf"))
        )
        add = add.expand(L, S).contiguous()
    return flat, add, L, S, E


def attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float | None,
    drop: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., L, E), (..., S, E), (..., S, E) -> (O (..., L, E), lse (..., L)); lse is what
    the backward reads (`saved`)."""
    assert drop is None  # dispatch sends attention without dropout only
    (qf, kf, vf), add, L, S, E = _prep(q, k, v, mask)
    sc = scale if scale is not None else 1.0 / math.sqrt(E)
    o = torch.empty_like(qf)
    lse = torch.empty(qf.shape[0], L, dtype=torch.float32, device=q.device)
    bd = max(16, triton.next_power_of_2(E))
    _attn_fwd_kernel[(triton.cdiv(L, BM), qf.shape[0])](
        qf,
        kf,
        vf,
        add if add is not None else qf,
        o,
        lse,
        L,
        S,
        E,
        sc,
        HAS_MASK=add is not None,
        CAUSAL=causal,
        BLOCK_M=BM,
        BLOCK_N=BN,
        BLOCK_D=bd,
    )
    return o.reshape(q.shape), lse.reshape(q.shape[:-1])


def attention_bwd(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    saved: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float | None,
    drop: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`saved` is the forward's row log-sum-exp."""
    lse = saved
    (qf, kf, vf), add, L, S, E = _prep(q, k, v, mask)
    sc = scale if scale is not None else 1.0 / math.sqrt(E)
    dof = do.reshape(qf.shape).contiguous()
    delta = (dof.float() * o.reshape(qf.shape).float()).sum(-1).contiguous()
    lsef = lse.reshape(qf.shape[0], L).contiguous()
    dq, dk, dv = torch.empty_like(qf), torch.empty_like(kf), torch.empty_like(vf)
    bd = max(16, triton.next_power_of_2(E))
    args = dict(HAS_MASK=add is not None, CAUSAL=causal, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=bd)
    m = add if add is not None else qf
    _attn_bwd_dkdv_kernel[(triton.cdiv(S, BN), qf.shape[0])](
        qf, kf, vf, m, dof, lsef, delta, dk, dv, L, S, E, sc, **args
    )
    _attn_bwd_dq_kernel[(triton.cdiv(L, BM), qf.shape[0])](
        qf, kf, vf, m, dof, lsef, delta, dq, L, S, E, sc, **args
    )
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)


def _scores_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float | None,
) -> tuple[torch.Tensor, float]:
    L, S = q.shape[-2], k.shape[-2]
    acc = torch.promote_types(q.dtype, torch.float32)
    sc = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    s = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * sc
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    if causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return s, sc


def attention_fwd_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float | None,
    drop: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU path: softmax(scores) V, with the dropout multiplier `drop` (0 or 1/(1-p))
    on the probabilities when given. Returns O and what its backward reads: the
    probabilities P (the kernel saves the row log-sum-exp and recomputes P instead)."""
    s, _ = _scores_ref(q, k, mask, causal, scale)
    p = torch.softmax(s, -1)
    pd = p * drop if drop is not None else p
    return (pd @ v.to(p.dtype)).to(q.dtype), p


def attention_bwd_reference(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    saved: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float | None,
    drop: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # with dropout O = (P D) V, so dV = (P D)^T dO, dP = (dO V^T) D and
    # dS = P (dP - rowsum(dP P)) (= P (dP - rowsum(dO O)) without D)
    p = saved
    acc = p.dtype
    sc = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    dof = do.to(acc)
    pd = p * drop if drop is not None else p
    dv = pd.transpose(-1, -2) @ dof
    dp = dof @ v.to(acc).transpose(-1, -2)
    if drop is not None:
        dp = dp * drop
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    return (
        ((ds @ k.to(acc)) * sc).to(q.dtype),
        ((ds.transpose(-1, -2) @ q.to(acc)) * sc).to(k.dtype),
        dv.to(v.dtype),
    )


def _fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, *rest: Any) -> bool:
    drop = rest[2] if len(rest) > 2 else None
    return drop is None and (mask is None or mask.dim() == 2)


attention_forward = dispatch(attention_fwd, attention_fwd_reference, _fits)
attention_backward = dispatch(
    attention_bwd, attention_bwd_reference, lambda do, q, k, v, o, lse, *r: _fits(q, k, v, *r)
)
