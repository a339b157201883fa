import pytest
import torch

from dltrain.kernels import bias_act as K
from tests.kernels.helpers import DEVICES, close, dtypes, rand


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M,N", [(1, 7), (13, 1023), (37, 1)])
@pytest.mark.parametrize("act", list(K.ACTS))
@pytest.mark.parametrize("bias", [True, False])
def test_bias_act_matches_reference(device, M, N, act, bias):
    for dtype in dtypes(device):
        x = rand(M, N, device=device, dtype=dtype)
        b = rand(N, seed=1, device=device, dtype=dtype) if bias else None
        close(
            K.bias_act_fwd(x, b, act, 0.0, 0, 0.2),
            K.bias_act_fwd_reference(x, b, act, 0.0, 0, 0.2),
            dtype,
        )
        dy = rand(M, N, seed=2, device=device, dtype=dtype)
        for a, r in zip(
            K.bias_act_bwd(dy, x, b, act, 0.0, 0, 0.2),
            K.bias_act_bwd_reference(dy, x, b, act, 0.0, 0, 0.2),
        ):
            if r is None:
                assert a is None
            else:
                close(a, r, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_mask_is_regenerated_from_the_seed(device):
    M, N, p = 64, 129, 0.3
    x, b = rand(M, N, device=device), rand(N, seed=1, device=device)
    y = K.bias_act_fwd(x, b, "relu", p, 1234)
    y_nodrop = K.bias_act_fwd_reference(x, b, "relu", 0.0, 0)
    kept = y != 0
    close(y[kept], y_nodrop[kept] / (1 - p))
    assert torch.equal(y, K.bias_act_fwd(x, b, "relu", p, 1234))  # same seed, same mask
    assert not torch.equal(y, K.bias_act_fwd(x, b, "relu", p, 99))
    ones = K.bias_act_fwd(torch.ones(M, N, device=device), None, "none", p, 1234)
    keep = ones != 0
    assert abs(keep.float().mean().item() - (1 - p)) < 0.03
    dy = rand(M, N, seed=2, device=device)
    dx, db = K.bias_act_bwd(dy, x, b, "relu", p, 1234)
    want = dy * keep * ((x + b) > 0) / (1 - p)
    close(dx, want)
    close(db, want.sum(0))
