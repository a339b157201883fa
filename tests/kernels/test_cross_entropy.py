import pytest
import torch

from dltrain.kernels import cross_entropy as K
from tests.kernels.helpers import DEVICES, close, dtypes, rand


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("C", [1, 7, 1023, 5000])
@pytest.mark.parametrize(
    "kw",
    [dict(), dict(smoothing=0.1), dict(ignore=True), dict(weight=True, smoothing=0.2)],
    ids=str,
)
def test_cross_entropy_matches_reference(device, C, kw):
    for dtype in dtypes(device):
        M = 13
        x = (rand(M, C, device=device) * 3).to(dtype)
        t = torch.randint(0, C, (M,), generator=torch.Generator().manual_seed(2)).to(device)
        ignore = -100
        if kw.get("ignore"):
            t[3] = ignore
        w = (
            (torch.rand(C, generator=torch.Generator().manual_seed(4)) + 0.5).to(device)
            if kw.get("weight")
            else None
        )
        eps = kw.get("smoothing", 0.0)
        out = K.cross_entropy_fwd(x, t, w, ignore, eps)
        ref = K.cross_entropy_fwd_reference(x, t, w, ignore, eps)
        close(out[0], ref[0], dtype)  # per-row losses
        close(out[2], ref[2], dtype)  # w_t
        # what each saves for its backward: lse, or the log-probabilities it derives from
        close(out[1], (x.float() - ref[1].float())[:, 0], dtype)
        g = rand(M, seed=5, device=device)
        close(
            K.cross_entropy_bwd(x, t, w, ignore, eps, out[1], g),
            K.cross_entropy_bwd_reference(x, t, w, ignore, eps, ref[1], g),
            dtype,
        )


def test_reference_agrees_with_torch():
    x, t = rand(13, 7), torch.randint(0, 7, (13,))
    w = torch.rand(7) + 0.5
    for eps in (0.0, 0.1):
        xg = x.clone().requires_grad_()
        loss, logp, wt = K.cross_entropy_fwd_reference(x, t, w, -100, eps)
        want = torch.nn.functional.cross_entropy(xg, t, w, reduction="sum", label_smoothing=eps)
        close(loss.sum(), want.detach())
        want.backward()
        g = torch.ones(13)
        close(K.cross_entropy_bwd_reference(x, t, w, -100, eps, logp, g), xg.grad)
