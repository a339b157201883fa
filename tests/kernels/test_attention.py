import pytest
import torch

from dltrain.kernels import attention as K
from tests.kernels.helpers import DEVICES, close, dtypes, rand


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L,S,E", [(1, 1, 16), (7, 7, 13), (33, 17, 16)])
@pytest.mark.parametrize("kind", ["plain", "causal", "bool", "additive"])
def test_attention_matches_reference(device, L, S, E, kind):
    if kind == "causal" and L != S:
        S = L
    for dtype in dtypes(device):
        q = rand(2, 3, L, E, device=device, dtype=dtype)
        k = rand(2, 3, S, E, seed=1, device=device, dtype=dtype)
        v = rand(2, 3, S, E, seed=2, device=device, dtype=dtype)
        mask = None
        if kind == "bool":
            mask = torch.rand(L, S, generator=torch.Generator().manual_seed(3)) > 0.3
            mask[:, 0] = True
            mask = mask.to(device)
        elif kind == "additive":
            mask = rand(L, S, seed=3, device=device)
        causal = kind == "causal"
        o, lse = K.attention_fwd(q, k, v, mask, causal, None)
        o_r, p_r = K.attention_fwd_reference(q, k, v, mask, causal, None)
        close(o, o_r, dtype)
        # each saves what its backward reads: the row log-sum-exp, or the probabilities
        scores, _ = K._scores_ref(q, k, mask, causal, None)
        close(lse, torch.logsumexp(scores, -1), dtype)
        close(p_r, torch.softmax(scores, -1), dtype)
        do = rand(2, 3, L, E, seed=4, device=device, dtype=dtype)
        for a, r in zip(
            K.attention_bwd(do, q, k, v, o_r, lse, mask, causal, None),
            K.attention_bwd_reference(do, q, k, v, o_r, p_r, mask, causal, None),
        ):
            close(a, r, dtype)


def test_reference_agrees_with_torch_sdpa():
    q, k, v = (rand(2, 3, 9, 8, seed=i).requires_grad_() for i in range(3))
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    do = rand(2, 3, 9, 8, seed=5)
    o.backward(do)
    o_r, lse = K.attention_fwd_reference(q.detach(), k.detach(), v.detach(), None, True, None)
    close(o_r, o.detach())
    for a, r in zip(
        K.attention_bwd_reference(
            do, q.detach(), k.detach(), v.detach(), o_r, lse, None, True, None
        ),
        (q.grad, k.grad, v.grad),
    ):
        close(a, r)
