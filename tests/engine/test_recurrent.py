"""Whole-sequence RNN, LSTM and GRU nodes against torch.nn's layers under torch.autograd
(float64): forward, the input's and every weight's gradient, both directions, odd sizes."""

import pytest
import torch
from torch.func import functional_call

from dltrain.engine import functional as F
from dltrain.engine.functional.recurrent import gru, lstm, rnn
from tests.oracle import check

D = torch.float64


def r(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(seed)) * scale


def weights(gates, inp, hid, seed=10):
    return [
        r(gates * hid, inp, seed=seed, scale=0.5),
        r(gates * hid, hid, seed=seed + 1, scale=0.5),
        r(gates * hid, seed=seed + 2, scale=0.5),
        r(gates * hid, seed=seed + 3, scale=0.5),
    ]


TORCH = {
    "rnn": (torch.nn.RNN, 1, rnn),
    "lstm": (torch.nn.LSTM, 4, lstm),
    "gru": (torch.nn.GRU, 3, gru),
}


def torch_run(kind, x, w_ih, w_hh, b_ih, b_hh, reverse=False, nonlinearity="tanh"):
    cls, _, _ = TORCH[kind]
    kw = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    m = cls(x.shape[-1], w_hh.shape[1], batch_first=True, dtype=D, **kw)
    params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    if reverse:  # the reverse direction is the forward one on the flipped sequence
        return functional_call(m, params, (x.flip(1),))[0].flip(1)
    return functional_call(m, params, (x,))[0]


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("n,t,d,h", [(3, 6, 5, 7), (1, 1, 1, 1), (2, 13, 4, 9)])
def test_sequence_matches_torch(kind, reverse, n, t, d, h):
    _, gates, fn = TORCH[kind]
    x = r(n, t, d, seed=1)
    check(
        lambda x, *w: fn(x, *w, reverse=reverse),
        lambda x, *w: torch_run(kind, x, *w, reverse=reverse),
        x,
        *weights(gates, d, h),
    )


def test_relu_rnn_matches_torch():
    x = r(3, 8, 5, seed=2)
    check(
        lambda x, *w: rnn(x, *w, activation="relu"),
        lambda x, *w: torch_run("rnn", x, *w, nonlinearity="relu"),
        x,
        *weights(1, 5, 6),
    )


def _loop(kind, x, w_ih, w_hh, b_ih, act, ract, mask):
    """An independent step-by-step definition in torch ops, for the other activations and
    recurrent dropout masks."""
    A = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "linear": lambda v: v}
    a, rr = A[act], A[ract]
    N, T, _ = x.shape
    H = w_hh.shape[1]
    h = c = x.new_zeros(N, H)
    outs = []
    for t in range(T):
        hm = h * mask
        if kind == "lstm":
            i, f, g, o = (x[:, t] @ w_ih.T + b_ih + hm @ w_hh.T).chunk(4, 1)
            c = rr(f) * c + rr(i) * a(g)
            h = rr(o) * a(c)
        else:
            pr, pz, pn = (x[:, t] @ w_ih.T + b_ih).chunk(3, 1)
            qr, qz, qn = (hm @ w_hh.T).chunk(3, 1)
            z = rr(pz + qz)
            h = (1 - z) * a(pn + rr(pr + qr) * qn) + z * h
        outs.append(h)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("act,ract", [("relu", "sigmoid"), ("linear", "tanh")])
def test_other_activations_and_recurrent_mask(kind, act, ract):
    gates = 4 if kind == "lstm" else 3
    x = r(2, 5, 3, seed=4)
    mask = (r(2, 6, seed=5) > 0).to(D) * 2.0
    fn = lstm if kind == "lstm" else gru
    check(
        lambda x, wi, wh, bi: fn(
            x, wi, wh, bi, activation=act, recurrent_activation=ract, h_mask=mask
        ),
        lambda x, wi, wh, bi: _loop(kind, x, wi, wh, bi, act, ract, mask),
        x,
        *weights(gates, 3, 6)[:3],
    )


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(16, 4\)"):
        F.lstm(_t(r(2, 5)), _t(r(16, 5)), _t(r(16, 4)))
    with pytest.raises(ValueError, match="activation 'gelu'"):
        rnn(_t(r(2, 3, 5)), _t(r(4, 5)), _t(r(4, 4)), activation="gelu")


def _t(x):
    from dltrain.engine import Tensor

    return Tensor(x)


# -- masks: padded steps skipped, as Keras does for mask_zero inputs ---------------------------
LENGTHS = torch.tensor([5, 1, 3, 2])  # post-padded to 5 steps


def _packed(kind, x, w_ih, w_hh, b_ih, b_hh, reverse):
    """torch's layer over packed sequences: exact per-sample lengths. Keras repeats the last
    real output on the padded steps after it (forward); reading backwards, the padded tail
    comes first and leaves the state zero."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    cls, _, _ = TORCH[kind]
    m = cls(x.shape[-1], w_hh.shape[1], batch_first=True, dtype=D, bidirectional=reverse)
    params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    if reverse:
        params.update({k + "_reverse": v for k, v in list(params.items())})
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    out = pad_packed_sequence(
        functional_call(m, params, (packed,))[0], batch_first=True, total_length=x.shape[1]
    )[0]
    H = w_hh.shape[1]
    if reverse:
        return out[..., H:]
    last = torch.minimum(torch.arange(x.shape[1]).view(1, -1), LENGTHS.view(-1, 1) - 1)
    return out[..., :H].gather(1, last.unsqueeze(-1).expand(-1, -1, H))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_masked_steps_match_packed_sequences(kind, reverse):
    _, gates, fn = TORCH[kind]
    x = r(4, 5, 3, seed=6)
    mask = torch.arange(5).view(1, -1) < LENGTHS.view(-1, 1)
    check(
        lambda x, *w: fn(x, *w, reverse=reverse, mask=mask),
        lambda x, *w: _packed(kind, x, *w, reverse),
        x,
        *weights(gates, 3, 4),
    )


# -- oneDNN's fused LSTM (CPU, float32): the path torch.nn.LSTM takes ---------------------------
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("n,t,d,h", [(3, 1, 5, 7), (2, 13, 4, 9)])
def test_lstm_onednn_matches_torch_float32(monkeypatch, reverse, n, t, d, h):
    from dltrain.engine.functional import recurrent as R

    calls = []
    real = R._lstm_onednn
    monkeypatch.setattr(R, "_lstm_onednn", lambda *a: calls.append(1) or real(*a))
    x = r(n, t, d, seed=1).float()
    w = [v.float() for v in weights(4, d, h)]

    def oracle(x, *w):
        m = torch.nn.LSTM(d, h, batch_first=True)
        params = dict(zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], w))
        return functional_call(m, params, (x.flip(1) if reverse else x,))[0].flip(
            1 if reverse else []
        )

    check(lambda x, *w: lstm(x, *w, reverse=reverse), oracle, x, *w, rtol=1e-5)
    assert calls, "the oneDNN path was not taken"


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_onednn_and_step_loop_agree(bias):
    """The same float32 LSTM through oneDNN and through the step loop (the fallback, which
    the float64 tests above check against torch.nn)."""
    from dltrain.engine import Tensor
    from dltrain.engine.functional.recurrent import onednn

    x = r(4, 13, 6, seed=3).float()
    w = [v.float() for v in weights(4, 6, 5)][: 3 if bias else 2]
    outs = []
    for enabled in (True, False):
        with onednn(enabled):
            ins = [Tensor(v.clone(), requires_grad=True) for v in (x, *w)]
            y = lstm(*ins)
            (y * Tensor(r(*y.shape, seed=9).float())).sum().backward()
            outs.append([y.data] + [i.grad for i in ins])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
