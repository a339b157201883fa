"""Scaled dot-product attention: one node over the fused op `kernels.attention`.

    S = Q K^T * scale + mask,  P = softmax(S),  O = (P * D) V   (D: dropout multiplier)
    dV = (P D)^T dO,  dP = (dO V^T) D,  dS = P * (dP - rowsum(dP * P)),
    dQ = dS K scale,  dK = dS^T Q scale.
On CUDA the Triton kernel saves the row log-sum-exp and recomputes P in the backward
(flash attention); the torch reference, the CPU path, saves P.
"""

from __future__ import annotations

import torch

from ...kernels import attention as K_attn
from .. import ops
from ..distributed import RowsGenerator, bernoulli_rows
from ..precision import lower
from ..tensor import Tensor, make


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    generator: torch.Generator | RowsGenerator | None = None,
) -> Tensor:
    """softmax(Q K^T * scale + mask) V over (..., L, E) queries and (..., S, E) keys.

    A boolean mask marks the positions that may be attended (True = keep), as in torch;
    a float mask is added to the scores.
    """
    query, key, value = lower(query), lower(key), lower(value)
    Q, K, V = query.data, key.data, value.data
    if Q.shape[-1] != K.shape[-1] or K.shape[-2] != V.shape[-2]:
        raise ValueError(
            f"attention: query {tuple(Q.shape)}, key {tuple(K.shape)} and value "
            f"{tuple(V.shape)} do not fit (E of query and key, S of key and value must match)"
        )
    M = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    batch = torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2], V.shape[:-2])
    Qb, Kb, Vb = (t.expand(*batch, *t.shape[-2:]) for t in (Q, K, V))
    drop = None
    if dropout_p > 0.0:  # one multiplier per attention probability: 0 or 1 / (1 - p)
        shape = (*batch, Q.shape[-2], K.shape[-2])
        drop = bernoulli_rows(shape, 1.0 - dropout_p, Q.dtype, Q.device, generator)
        drop.mul_(1.0 / (1.0 - dropout_p))
    out, saved = K_attn.attention_forward(Qb, Kb, Vb, M, is_causal, scale, drop)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dq, dk, dv = K_attn.attention_backward(g, Qb, Kb, Vb, out, saved, M, is_causal, scale, drop)
        return (
            ops.unbroadcast(dq, Q.shape) if query.requires_grad else None,
            ops.unbroadcast(dk, K.shape) if key.requires_grad else None,
            ops.unbroadcast(dv, V.shape) if value.requires_grad else None,
        )

    return make(out, (query, key, value), vjp, "scaled_dot_product_attention")
