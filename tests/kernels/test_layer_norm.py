import pytest
import torch

from dltrain.kernels import layer_norm as K
from tests.kernels.helpers import DEVICES, close, dtypes, rand


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M,N", [(1, 7), (13, 1), (13, 1023), (130, 33)])
def test_layer_norm_matches_reference(device, M, N):
    for dtype in dtypes(device):
        x = rand(M, N, device=device, dtype=dtype)
        w, b = rand(N, seed=1, device=device), rand(N, seed=2, device=device)
        out, ref = K.layer_norm_fwd(x, w, b, 1e-5), K.layer_norm_fwd_reference(x, w, b, 1e-5)
        for a, r in zip(out, ref):
            close(a, r, dtype)
        dy = rand(M, N, seed=3, device=device, dtype=dtype)
        for a, r in zip(
            K.layer_norm_bwd(dy, x, w, b, ref[1], ref[2]),
            K.layer_norm_bwd_reference(dy, x, w, b, ref[1], ref[2]),
        ):
            if N == 1:  # dx is exactly 0; aten's rounding there is ~ eps_f32 / sqrt(eps) = 3e-5
                torch.testing.assert_close(a.float(), r.float(), rtol=1e-4, atol=1e-4)
            else:
                close(a, r, dtype)


def test_reference_agrees_with_torch():
    x, w, b = rand(13, 33).requires_grad_(), rand(33, seed=1).requires_grad_(), rand(33, seed=2)
    b.requires_grad_()
    y = torch.nn.functional.layer_norm(x, [33], w, b, 1e-5)
    dy = rand(13, 33, seed=3)
    y.backward(dy)
    yr, mean, rstd = K.layer_norm_fwd_reference(x.detach(), w.detach(), b.detach(), 1e-5)
    close(yr, y.detach())
    for a, r in zip(
        K.layer_norm_bwd_reference(dy, x.detach(), w.detach(), b.detach(), mean, rstd),
        (x.grad, w.grad, b.grad),
    ):
        close(a, r)


def test_rows_too_long_for_the_kernel_take_the_reference():
    from dltrain import kernels

    n = K.MAX_ROW + 1
    x, w, b = rand(2, n), rand(n, seed=1), rand(n, seed=2)
    with kernels.using("triton"):
        got = K.layer_norm_forward(x, w, b, 1e-5)
    for a, r in zip(got, K.layer_norm_fwd_reference(x, w, b, 1e-5)):
        assert torch.equal(a, r)
