"""Recurrent cells (torch's gate order and math) and scaled dot-product attention.

The cells are composites of engine ops (one linear per weight, a chunk, the gate
nonlinearities), so their gradients come from those ops' rules. Attention is one node:
    S = Q K^T * scale + mask,  P = softmax(S),  O = P V
    dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),  dQ = dS K scale,
    dK = dS^T Q scale.
"""

from __future__ import annotations

import math

import torch

from ...kernels import attention as K_attn
from ...kernels import rnn_gates as K_rnn
from ...kernels import use_triton
from .. import ops
from ..tensor import Tensor, make
from .activations import sigmoid, tanh
from .nn import linear


def _gates(
    input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> tuple[Tensor, Tensor]:
    return linear(input, w_ih, b_ih), linear(hx, w_hh, b_hh)


def lstm_cell(
    input: Tensor,
    hx: tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step: gates i, f, g, o; c' = f c + i g; h' = o tanh(c')."""
    h, c = hx
    gi, gh = _gates(input, h, w_ih, w_hh, b_ih, b_hh)
    if use_triton(gi.data) and gi.data.dim() == 2:
        return _lstm_gates_fused(gi + gh, c)
    i, f, g, o = ops.chunk(gi + gh, 4, dim=-1)
    c_next = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h_next = sigmoid(o) * tanh(c_next)
    return h_next, c_next


def gru_cell(
    input: Tensor,
    hx: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> Tensor:
    """One GRU step: r, z, n gates; n = tanh(W_in x + b_in + r (W_hn h + b_hn));
    h' = (1 - z) n + z h."""
    gi, gh = _gates(input, hx, w_ih, w_hh, b_ih, b_hh)
    if use_triton(gi.data) and gi.data.dim() == 2:
        return _gru_gates_fused(gi, gh, hx)
    i_r, i_z, i_n = ops.chunk(gi, 3, dim=-1)
    h_r, h_z, h_n = ops.chunk(gh, 3, dim=-1)
    r = sigmoid(i_r + h_r)
    z = sigmoid(i_z + h_z)
    n = tanh(i_n + r * h_n)
    return (1 - z) * n + z * hx


def rnn_tanh_cell(
    input: Tensor,
    hx: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> Tensor:
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    gi, gh = _gates(input, hx, w_ih, w_hh, b_ih, b_hh)
    return tanh(gi + gh)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """softmax(Q K^T * scale + mask) V over (..., L, E) queries and (..., S, E) keys.

    A boolean mask marks the positions that may be attended (True = keep), as in torch;
    a float mask is added to the scores.
    """
    Q, K, V = query.data, key.data, value.data
    if Q.shape[-1] != K.shape[-1] or K.shape[-2] != V.shape[-2]:
        raise ValueError(
            f"attention: query {tuple(Q.shape)}, key {tuple(K.shape)} and value "
            f"{tuple(V.shape)} do not fit (E of query and key, S of key and value must match)"
        )
    L, S = Q.shape[-2], K.shape[-2]
    M0 = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    if use_triton(Q) and dropout_p == 0.0 and (M0 is None or M0.dim() == 2):
        return _attention_fused(query, key, value, M0, is_causal, scale)
    sc = 1.0 / math.sqrt(Q.shape[-1]) if scale is None else scale
    scores = (Q @ K.transpose(-1, -2)) * sc
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=Q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        M = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
        if M.dtype == torch.bool:
            scores = scores.masked_fill(~M, float("-inf"))
        else:
            scores = scores + M
    P = torch.softmax(scores, -1)
    drop = None
    if dropout_p > 0.0:
        drop = torch.empty_like(P).bernoulli_(1.0 - dropout_p, generator=generator)
        drop.mul_(1.0 / (1.0 - dropout_p))
    Pd = P * drop if drop is not None else P
    out = Pd @ V

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gv = ops.unbroadcast(Pd.transpose(-1, -2) @ g, V.shape) if value.requires_grad else None
        dP = g @ V.transpose(-1, -2)
        if drop is not None:
            dP = dP * drop
        dS = P * (dP - (dP * P).sum(-1, keepdim=True))
        gq = ops.unbroadcast((dS @ K) * sc, Q.shape) if query.requires_grad else None
        gk = (
            ops.unbroadcast((dS.transpose(-1, -2) @ Q) * sc, K.shape) if key.requires_grad else None
        )
        return gq, gk, gv

    return make(out, (query, key, value), vjp, "scaled_dot_product_attention")


def _attention_fused(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float | None,
) -> Tensor:
    """Flash attention (Triton): O and the row log-sum-exp forward, tiled backward."""
    Q, K, V = query.data, key.data, value.data
    shape = torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2])
    Qb, Kb, Vb = (t.expand(*shape, *t.shape[-2:]) for t in (Q, K, V))
    out, lse = K_attn.attention_fwd(Qb, Kb, Vb, mask, causal, scale)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dq, dk, dv = K_attn.attention_bwd(g, Qb, Kb, Vb, out, lse, mask, causal, scale)
        return (
            ops.unbroadcast(dq, Q.shape),
            ops.unbroadcast(dk, K.shape),
            ops.unbroadcast(dv, V.shape),
        )

    return make(out, (query, key, value), vjp, "scaled_dot_product_attention")


def _lstm_gates_fused(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """h', c' from the summed gate pre-activations in one kernel. The backward is linear in
    (dh', dc'), so h' and c' are separate nodes over (gates, c), each running the fused
    backward with the other's gradient zero; their contributions add up exactly."""
    G, C = gates.data, c.data
    h_next, c_next = K_rnn.lstm_gates_fwd(G, C)

    def from_h(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return K_rnn.lstm_gates_bwd(g, torch.zeros_like(C), G, C, c_next)

    def from_c(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return K_rnn.lstm_gates_bwd(torch.zeros_like(C), g, G, C, c_next)

    return (make(h_next, (gates, c), from_h, "lstm_h"), make(c_next, (gates, c), from_c, "lstm_c"))


def _gru_gates_fused(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    GI, GH, Hd = gi.data, gh.data, h.data
    out = K_rnn.gru_gates_fwd(GI, GH, Hd)
    return make(out, (gi, gh, h), lambda g: K_rnn.gru_gates_bwd(g, GI, GH, Hd), "gru_gates")
