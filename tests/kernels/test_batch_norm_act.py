import pytest
import torch

from dltrain.kernels import batch_norm_act as K
from tests.kernels.helpers import DEVICES, close, dtypes, rand


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(4, 7, 5, 3), (2, 1, 1, 1023), (13, 33)], ids=str)
@pytest.mark.parametrize("act", list(K.ACTS))
def test_batch_norm_act_matches_reference(device, shape, act):
    for dtype in dtypes(device):
        x = rand(*shape, device=device, dtype=dtype)
        if len(shape) == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        C = shape[1]
        w, b = rand(C, seed=1, device=device), rand(C, seed=2, device=device)
        out, ref = (
            K.batch_norm_act_fwd(x, w, b, 1e-3, act, 0.2),
            K.batch_norm_act_fwd_reference(x, w, b, 1e-3, act, 0.2),
        )
        for a, r in zip(out, ref):
            close(a, r, dtype)
        dy = rand(*shape, seed=3, device=device, dtype=dtype)
        for a, r in zip(
            K.batch_norm_act_bwd(dy, x, w, b, ref[1], ref[2], act, 0.2),
            K.batch_norm_act_bwd_reference(dy, x, w, b, ref[1], ref[2], act, 0.2),
        ):
            close(a, r, dtype)


def test_reference_agrees_with_torch():
    x = rand(4, 3, 5, 5).requires_grad_()
    w, b = rand(3, seed=1).requires_grad_(), rand(3, seed=2).requires_grad_()
    y = torch.nn.functional.leaky_relu(
        torch.nn.functional.batch_norm(x, None, None, w, b, training=True, eps=1e-3), 0.2
    )
    dy = rand(4, 3, 5, 5, seed=3)
    y.backward(dy)
    yr, mean, rstd = K.batch_norm_act_fwd_reference(
        x.detach(), w.detach(), b.detach(), 1e-3, "leaky_relu", 0.2
    )
    close(yr, y.detach())
    for a, r in zip(
        K.batch_norm_act_bwd_reference(
            dy, x.detach(), w.detach(), b.detach(), mean, rstd, "leaky_relu", 0.2
        ),
        (x.grad, w.grad, b.grad),
    ):
        close(a, r)
