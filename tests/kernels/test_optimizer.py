import pytest
import torch

from dltrain.kernels import optimizer as K
from tests.kernels.helpers import DEVICES, close, rand


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 7, 1023, 5000])
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.01), (True, 0.1)])
def test_adam_matches_reference(device, n, decoupled, wd):
    p, g = rand(n, device=device), rand(n, seed=1, device=device)
    ref = [p.clone(), torch.zeros_like(p), torch.zeros_like(p)]
    tri = [p.clone(), torch.zeros_like(p), torch.zeros_like(p)]
    for step in range(1, 6):
        gs = g * step
        K.adam_step_reference(
            ref[0], gs, ref[1], ref[2], 1e-2, 0.9, 0.999, 1e-8, wd, step, decoupled
        )
        K.adam_step(tri[0], gs, tri[1], tri[2], 1e-2, 0.9, 0.999, 1e-8, wd, step, decoupled)
    for a, b in zip(tri, ref):
        close(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [7, 1023])
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_reference(device, n, momentum, nesterov):
    p, g = rand(n, device=device), rand(n, seed=1, device=device)
    bufs = [torch.zeros_like(p) if momentum else None for _ in range(2)]
    pr, pt = p.clone(), p.clone()
    for step in range(3):
        K.sgd_step_reference(pr, g, bufs[0], 0.1, momentum, 0.0, 1e-3, nesterov, step == 0)
        K.sgd_step(pt, g, bufs[1], 0.1, momentum, 0.0, 1e-3, nesterov, step == 0)
    close(pt, pr)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 1023, 5000])
def test_grad_norm(device, n):
    g = rand(n, device=device)
    close(K.grad_norm(g), K.grad_norm_reference(g))
