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
            K.layer_norm_bwd(dy, x, w, ref[1], ref[2]),
            K.layer_norm_bwd_reference(dy, x, w, ref[1], ref[2]),
        ):
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
        K.layer_norm_bwd_reference(dy, x.detach(), w.detach(), mean, rstd), (x.grad, w.grad, b.grad)
    ):
        close(a, r)
