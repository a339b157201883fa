"""Mixed precision (dltrain.engine.precision) against torch.autocast under torch.autograd.

Each op runs under dltrain's `autocast(torch.bfloat16)` and under
`torch.autocast("cpu", torch.bfloat16)` with float32 leaves on both sides: the output's
type and values, and the float32 gradients of input and weights, must agree. Then whole
models: every gradient lands float32 in the flat buffer, close to the float32 step's.
"""

import pytest
import torch
import torch.nn.functional as TF

from dltrain.engine import Tensor
from dltrain.engine import functional as F
from dltrain.engine.bench import Stepper
from dltrain.engine.functional.recurrent import gru, lstm
from dltrain.engine.layers.base import RunContext
from dltrain.engine.model import compile_model
from dltrain.engine.precision import LossScaler, autocast, compute_dtype, full, lower
from dltrain.engine.train.losses import build_loss
from dltrain.spec import load

BF = torch.bfloat16


def leaves(*shapes, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) * scale for s in shapes]


def both(fn_ours, fn_torch, tensors, grad_seed=99):
    """Run dltrain's op under its autocast and torch's under torch.autocast on copies of
    the same float32 leaves; backpropagate the same upstream gradient. Returns
    (ours_out, torch_out, ours_grads, torch_grads)."""
    ours = [Tensor(t.clone(), requires_grad=True) for t in tensors]
    theirs = [t.clone().requires_grad_(True) for t in tensors]
    with autocast(BF):
        y = fn_ours(*ours)
    with torch.autocast("cpu", BF):
        ty = fn_torch(*theirs)
    g = torch.randn(ty.shape, generator=torch.Generator().manual_seed(grad_seed)).to(ty.dtype)
    y.backward(g)
    ty.backward(g)
    return y, ty, [t.grad for t in ours], [t.grad for t in theirs]


def close(a, b, rtol=2e-2, atol=2e-2):
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=atol)


def check(y, ty, gs, tgs):
    close(y.data, ty.detach())
    for a, b in zip(gs, tgs):
        assert a is not None and a.dtype == torch.float32  # the leaves' own type
        close(a, b)


def test_linear_matches_torch_autocast():
    x, w, b = leaves((6, 7, 10), (5, 10), (5,))
    check(*both(F.linear, TF.linear, [x, w, b]))


def test_conv2d_and_transposed_conv_match_torch_autocast():
    x, w, b = leaves((2, 3, 9, 9), (4, 3, 3, 3), (4,))
    check(
        *both(
            lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
            lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1),
            [x, w, b],
        )
    )
    x, w = leaves((2, 4, 5, 5), (4, 3, 4, 4), seed=1)
    check(
        *both(
            lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1),
            lambda x, w: TF.conv_transpose2d(x, w, stride=2, padding=1),
            [x, w],
        )
    )


def test_batched_matmul_matches_torch_autocast():
    a, b = leaves((3, 4, 6), (6, 5))
    check(*both(lambda a, b: a @ b, lambda a, b: a @ b, [a, b]))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T", [1, 13])
def test_onednn_lstm_in_bfloat16_matches_torch_autocast(reverse, T):
    """nn.LSTM under torch.autocast runs oneDNN's layer in bfloat16: so does dltrain's."""
    x, w_ih, w_hh, b_ih, b_hh = leaves((3, T, 5), (24, 5), (24, 6), (24,), (24,))
    m = torch.nn.LSTM(5, 6, batch_first=True)

    def theirs(x, w_ih, w_hh, b_ih, b_hh):
        params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih}
        params["bias_hh_l0"] = b_hh
        xx = x.flip(1) if reverse else x
        out = torch.func.functional_call(m, params, (xx,))[0]
        return out.flip(1) if reverse else out

    y, ty, gs, tgs = both(lambda *a: lstm(*a, reverse=reverse), theirs, [x, w_ih, w_hh, b_ih, b_hh])
    assert y.dtype == BF
    check(y, ty, gs, tgs)


def test_gru_projects_in_bfloat16_and_recurs_in_float32():
    """torch.autocast leaves nn.GRU in float32 on CPU; dltrain's GRU runs its input
    projection (the big matmul) in bfloat16 and the step loop in float32. The oracle does
    the same in torch: the projection under torch.autocast, then nn.GRU in float32 over it
    with an identity input weight (exact in float32)."""
    x, w_ih, w_hh, b_ih, b_hh = leaves((3, 13, 5), (18, 5), (18, 6), (18,), (18,))
    m = torch.nn.GRU(18, 6, batch_first=True)

    def theirs(x, w_ih, w_hh, b_ih, b_hh):
        p = TF.linear(x, w_ih, b_ih).float()
        params = {"weight_ih_l0": torch.eye(18), "weight_hh_l0": w_hh}
        params.update(bias_ih_l0=torch.zeros(18), bias_hh_l0=b_hh)
        return torch.func.functional_call(m, params, (p,))[0]

    y, ty, gs, tgs = both(gru, theirs, [x, w_ih, w_hh, b_ih, b_hh])
    assert y.dtype == torch.float32
    check(y, ty, gs, tgs)


def test_normalisation_keeps_float32_statistics_on_a_bfloat16_input():
    x, w, b = leaves((4, 6, 3, 3), (6,), (6,))
    xb = x.to(BF)
    # batch norm: a bfloat16 input with float32 weights is aten's mixed kernel, as torch's
    check(
        *both(
            lambda x, w, b: F.batch_norm(lower(x), None, None, w, b, training=True),
            lambda x, w, b: TF.batch_norm(x.to(BF), None, None, w, b, training=True),
            [x, w, b],
        )
    )
    check(
        *both(
            lambda x, w, b: F.layer_norm(lower(x), 9, w.reshape(9)[:9], b.reshape(9)[:9]),
            lambda x, w, b: TF.layer_norm(x.to(BF), (9,), w.reshape(9)[:9], b.reshape(9)[:9]),
            [x.reshape(4, 6, 9), *leaves((9,), (9,), seed=3)],
        )
    )
    assert xb.dtype == BF


def test_losses_softmax_and_reductions_run_in_float32():
    logits = leaves((8, 5))[0]
    t = torch.arange(8) % 5
    with autocast(BF):
        z = lower(Tensor(logits, requires_grad=True))
        assert z.dtype == BF
        assert F.cross_entropy(z, t).dtype == torch.float32
        assert F.softmax(z).dtype == torch.float32
        assert z.sum().dtype == torch.float32 and z.mean(1).dtype == torch.float32
        assert F.mse_loss(z, Tensor(torch.zeros(8, 5))).dtype == torch.float32
        loss = F.cross_entropy(z, t)
    # the loss equals float32 cross-entropy of the bfloat16-rounded logits
    ref = TF.cross_entropy(logits.to(BF).float(), t)
    torch.testing.assert_close(loss.data, ref)


def test_autocast_is_scoped_and_off_by_default():
    assert compute_dtype() is None
    x = Tensor(torch.ones(2, 2))
    assert lower(x) is x and full(x) is x
    with autocast(BF):
        assert compute_dtype() == BF
        with autocast(None):
            assert lower(x) is x
        assert lower(x).dtype == BF
    assert compute_dtype() is None
    with pytest.raises(ValueError, match="bfloat16 or torch.float16"):
        with autocast(torch.float64):
            pass


def model_grads(path, precision):
    """One forward and backward as the trainer runs them (the gradients land in the flat
    buffer the optimizer reads)."""
    step = Stepper(load(path), "cpu", precision)
    with autocast(step.compute):
        run = RunContext(training=True, generator=torch.Generator().manual_seed(1))
        out = step.model(Tensor(step.x), run, logits=step.loss.logits)
        step.loss.fn(out, step.y).backward()
    step.opt.flat.sync_grads()
    return {k: p.grad.clone() for k, p in step.model.named_parameters()}, step


@pytest.mark.parametrize("name", ["cnn", "char_lstm", "tiny_gpt", "dcgan_g"])
def test_a_whole_step_in_bf16_mixed_gives_float32_gradients_near_the_float32_step(name):
    """Parameters and gradients stay float32 (the flat buffer); the bfloat16 step's gradient
    is the float32 step's within bfloat16's precision. torch.autocast's own gradients on the
    PyTorch twins of these networks differ from float32 as much (relative norm of the
    difference up to 0.18 for the CNN's first convolution, whose gradient largely cancels
    under batch norm). Gradients that are zero in exact math (a bias before batch norm, the
    key bias of attention) are left out: their float32 values are rounding noise."""
    path = f"configs/bench/{name}.yaml"
    g32, _ = model_grads(path, "fp32")
    g16, step = model_grads(path, "bf16-mixed")
    assert step.model.parameters()[0].dtype == torch.float32
    largest = max(float(g.norm()) for g in g32.values())
    for k, a in g16.items():
        assert a.dtype == torch.float32, k
        assert torch.isfinite(a).all(), k
        if g32[k].norm() > 1e-5 * largest:
            rel = (a - g32[k]).norm() / g32[k].norm()
            assert rel < 0.25, (k, float(rel))
    a = torch.cat([g.flatten() for g in g16.values()])
    b = torch.cat([g.flatten() for g in g32.values()])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


def test_a_model_output_is_float32_under_autocast():
    spec = load("configs/bench/mlp_seed.yaml")
    model = compile_model(spec.model)
    loss = build_loss(spec, model)
    x = Tensor(torch.randn(4, *model.input_shape))
    with autocast(BF):
        assert model(x).dtype == torch.float32  # the final softmax in float32
        assert model(x, logits=loss.logits).dtype == torch.float32
    assert model(x).dtype == torch.float32


def test_loss_scaler_follows_grad_scaler_rules():
    s = LossScaler(True, init_scale=1024.0, growth_interval=3)
    assert not s.update(False) and s.scale == 512.0 and s.skipped == 1
    assert s.update(True) and s.update(True) and s.scale == 512.0
    assert s.update(True) and s.scale == 1024.0  # three finite steps in a row: doubled
    t = LossScaler(True)
    t.load_state_dict(s.state_dict())
    assert (t.scale, t.good_steps, t.skipped) == (1024.0, 0, 1)
    off = LossScaler(False)
    assert off.scale == 1.0 and off.update(False)  # disabled: never skips


def test_fp16_mixed_skips_an_overflowing_step_and_lowers_the_scale():
    """A scaled float16 gradient that overflows: the step is skipped (weights and optimizer
    state untouched), the scale halves, and training goes on with finite steps."""
    from tests.engine.test_no_host_sync import trainer_for

    tr = trainer_for("digits_mlp.yaml", ["train.precision=fp16-mixed"])
    assert tr.scaler.enabled and tr.compute == torch.float16
    tr.scaler.scale = 2.0**120  # the float16 backward overflows at this scale
    before = tr.flat.data.clone()
    bs = tr.spec.train.batch_size
    idx = torch.arange(bs)
    tr._micro_batch(idx, 1.0)
    tr._optimizer_step()
    assert torch.equal(tr.flat.data, before) and tr.scaler.skipped == 1
    assert tr.scaler.scale == 2.0**119
    tr.scaler.scale = 2.0**10
    for k in range(5):
        tr._micro_batch(idx + k * bs, 1.0)
        tr._optimizer_step()
    assert tr.scaler.skipped == 1 and not torch.equal(tr.flat.data, before)
    tr.check_finite()  # no non-finite step was recorded
    state = tr.state_dict()
    assert state["state"]["loss_scale"] == {"scale": 2.0**10, "good_steps": 5, "skipped": 1}
    again = trainer_for("digits_mlp.yaml", ["train.precision=fp16-mixed"])
    again.load_state_dict(state)  # a resume continues with the same scale and counts
    assert again.scaler.state_dict() == tr.scaler.state_dict()


def test_fp16_mixed_gradients_are_unscaled():
    """The loss is scaled for backward only: the optimizer sees the float32 step's
    gradient (within float16's precision), not one 65536 times larger."""
    from tests.engine.test_no_host_sync import trainer_for

    grads = {}
    for precision in ("fp32", "fp16-mixed"):
        tr = trainer_for("digits_mlp.yaml", [f"train.precision={precision}"])
        tr._micro_batch(torch.arange(32), 1.0)
        assert tr._gradients_ready(tr.flat, tr.spec.optimizer, tr._last_loss)
        grads[precision] = tr.flat.grad.clone()
    rel = (grads["fp16-mixed"] - grads["fp32"]).norm() / grads["fp32"].norm()
    assert rel < 0.05, float(rel)  # float16's rounding (0.017 here), not a scale factor
