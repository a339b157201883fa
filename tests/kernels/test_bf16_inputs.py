"""The elementwise kernels take bfloat16 inputs (what bf16-mixed hands them on CUDA) with
float32 weights, compute in float32 and store in the input's type: checked against their
torch references through Triton's interpreter (which runs bfloat16 loads and stores but no
bfloat16 dot, so attention's bfloat16 path is checked on a GPU only)."""

import pytest
import torch

from dltrain.kernels import batch_norm_act as K_bn
from dltrain.kernels import bias_act as K_ba
from dltrain.kernels import layer_norm as K_ln
from tests.kernels.helpers import close, needs_interpreter, rand

BF = torch.bfloat16
pytestmark = needs_interpreter


def test_layer_norm_takes_bfloat16_rows():
    x, w, b = rand(6, 40, dtype=BF), rand(40, seed=1), rand(40, seed=2)
    y, mean, rstd = K_ln.layer_norm_fwd(x, w, b, 1e-5)
    yr, mr, rr = K_ln.layer_norm_fwd_reference(x, w, b, 1e-5)
    assert y.dtype == BF and mean.dtype == torch.float32
    close(y, yr, BF)
    close(mean, mr)
    dy = rand(6, 40, seed=3, dtype=BF)
    for a, r in zip(
        K_ln.layer_norm_bwd(dy, x, w, b, mean, rstd),
        K_ln.layer_norm_bwd_reference(dy, x, w, b, mr, rr),
    ):
        assert a.dtype == r.dtype
        close(a, r, BF)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "gelu_tanh"])
def test_bias_act_takes_bfloat16_with_a_float32_bias(act):
    x, b = rand(8, 24, dtype=BF), rand(24, seed=1)
    y = K_ba.bias_act_fwd(x, b, act, 0.0, 0, 0.2)
    assert y.dtype == BF
    close(y, K_ba.bias_act_fwd_reference(x, b, act, 0.0, 0, 0.2), BF)
    dy = rand(8, 24, seed=2, dtype=BF)
    dx, db = K_ba.bias_act_bwd(dy, x, b, act, 0.0, 0, 0.2)
    rx, rb = K_ba.bias_act_bwd_reference(dy, x, b, act, 0.0, 0, 0.2)
    assert dx.dtype == BF and db.dtype == torch.float32
    close(dx, rx, BF)
    close(db, rb, BF)


def test_batch_norm_act_takes_bfloat16_images():
    x = rand(4, 6, 3, 3, dtype=BF).contiguous(memory_format=torch.channels_last)
    w, b = rand(6, seed=1), rand(6, seed=2)
    y, mean, rstd = K_bn.batch_norm_act_fwd(x, w, b, 1e-3, "relu")
    yr, mr, rr = K_bn.batch_norm_act_fwd_reference(x, w, b, 1e-3, "relu")
    assert y.dtype == BF and mean.dtype == torch.float32
    close(y, yr, BF)
    dy = rand(4, 6, 3, 3, seed=3, dtype=BF)
    for a, r in zip(
        K_bn.batch_norm_act_bwd(dy, x, w, b, mean, rstd, "relu"),
        K_bn.batch_norm_act_bwd_reference(dy, x, w, b, mr, rr, "relu"),
    ):
        assert a.dtype == r.dtype
        close(a, r, BF)
