"""Every op of dltrain.engine.functional against torch.nn.functional under torch.autograd,
float64, relative error at most 1e-10, odd sizes included."""

import pytest
import torch
import torch.nn.functional as TF

from dltrain.engine import functional as F
from tests.oracle import check

D = torch.float64


def r(*shape, seed=0, positive=False):
    t = torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(seed))
    return t.abs() + 0.1 if positive else t


def probs(*shape, seed=0):
    return torch.rand(*shape, dtype=D, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.05


def labels(n, c, seed=0):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


def same(name, **kw):
    """(engine fn, torch fn) calling the function of the same name with kwargs."""
    return (lambda *a: getattr(F, name)(*a, **kw), lambda *a: getattr(TF, name)(*a, **kw))


ACT = {
    "relu": {},
    "leaky_relu": {"negative_slope": 0.2},
    "elu": {"alpha": 0.7},
    "gelu": {},
    "gelu_tanh": {"approximate": "tanh"},
    "silu": {},
    "sigmoid": {},
    "tanh": {},
    "softplus": {"beta": 2.0, "threshold": 3.0},
    "softmax": {"dim": -1},
    "log_softmax": {"dim": 1},
}


@pytest.mark.parametrize("name", ACT)
@pytest.mark.parametrize("shape", [(7, 13), (1023,), (2, 7, 1)], ids=str)
def test_activations(name, shape):
    kw = ACT[name]
    fn = name.replace("_tanh", "")
    if fn in ("sigmoid", "tanh"):
        fe, ft = getattr(F, fn), getattr(torch, fn)
    else:
        if fn in ("softmax", "log_softmax") and len(shape) == 1:
            kw = {"dim": 0}
        fe, ft = same(fn, **kw)
    check(fe, ft, r(*shape) * 3)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 13), (2, 3, 13), (13,)], ids=str)
def test_linear(shape, bias):
    args = [r(*shape), r(5, 13, seed=1)] + ([r(5, seed=2)] if bias else [])
    check(F.linear, TF.linear, *args)


CONV2D = [
    dict(stride=1, padding=0),
    dict(stride=2, padding=1),
    dict(padding="same"),
    dict(padding="valid", dilation=2),
    dict(stride=(2, 1), padding=(1, 0), groups=2),
]


@pytest.mark.parametrize("kw", CONV2D, ids=str)
def test_conv2d(kw):
    check(
        *same("conv2d", **kw),
        r(2, 4, 9, 7),
        r(6, 4 // kw.get("groups", 1), 3, 3, seed=1),
        r(6, seed=2),
    )


def test_conv2d_same_even_kernel_no_bias():
    check(*same("conv2d", padding="same"), r(2, 3, 7, 7), r(5, 3, 4, 2, seed=1))


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding="same")], ids=str)
def test_conv1d(kw):
    check(*same("conv1d", **kw), r(2, 3, 13), r(5, 3, 3, seed=1), r(5, seed=2))


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(stride=2, padding=1, output_padding=1), dict(stride=2, padding=1, groups=2)],
    ids=str,
)
def test_conv_transpose2d(kw):
    g = kw.get("groups", 1)
    check(*same("conv_transpose2d", **kw), r(2, 4, 5, 7), r(4, 6 // g, 4, 4, seed=1), r(6, seed=2))


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=2, ceil_mode=True),
    ],
    ids=str,
)
def test_pools(kw):
    check(*same("max_pool2d", **kw), r(2, 3, 9, 7))
    check(*same("avg_pool2d", **kw), r(2, 3, 9, 7))
    check(*same("adaptive_avg_pool2d", output_size=(1, 1)), r(2, 3, 9, 7))
    check(*same("adaptive_avg_pool2d", output_size=3), r(2, 3, 9, 7))


@pytest.mark.parametrize("shape", [(7, 13), (4, 3, 5, 7)], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(shape, training):
    C = shape[1]
    stats = {}

    def run(fn, side):
        def f(x, w, b):
            rm, rv = torch.zeros(C, dtype=D) + 0.3, torch.ones(C, dtype=D) * 1.7
            out = fn(x, rm, rv, w, b, training=training, momentum=0.2, eps=1e-3)
            stats[side] = (rm, rv)
            return out

        return f

    check(run(F.batch_norm, "e"), run(TF.batch_norm, "t"), r(*shape), r(C, seed=1), r(C, seed=2))
    for a, b in zip(stats["e"], stats["t"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_batch_norm_without_affine():
    check(
        lambda x: F.batch_norm(x, None, None, training=True),
        lambda x: TF.batch_norm(x, None, None, training=True),
        r(7, 13),
    )


@pytest.mark.parametrize(
    "shape,norm", [((7, 13), [13]), ((2, 5, 1023), [1023]), ((3, 4, 5), [4, 5])], ids=str
)
def test_layer_norm(shape, norm):
    check(
        lambda x, w, b: F.layer_norm(x, norm, w, b, 1e-5),
        lambda x, w, b: TF.layer_norm(x, norm, w, b, 1e-5),
        r(*shape),
        r(*norm, seed=1),
        r(*norm, seed=2),
    )
    check(lambda x: F.layer_norm(x, norm), lambda x: TF.layer_norm(x, norm), r(*shape))


def test_dropout_is_seeded_scaled_and_masked_in_backward():
    x = r(7, 1023)
    a = F.dropout(F.relu(_leaf(x)), 0.3, generator=torch.Generator().manual_seed(5))
    b = F.dropout(F.relu(_leaf(x)), 0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.data, b.data)
    mask = a.data / torch.relu(x)
    kept = mask[torch.relu(x) > 0]
    assert set(torch.unique(kept.round(decimals=6)).tolist()) <= {0.0, round(1 / 0.7, 6)}
    assert 0.6 < (kept > 0).double().mean() < 0.8
    m = (a.data != 0).to(D) / 0.7
    check(
        lambda t: F.dropout(t, 0.3, generator=torch.Generator().manual_seed(5)),
        lambda t: t * _mask_like(t, 0.3, 5),
        x,
    )
    assert F.dropout(_leaf(x), 0.3, training=False).data is not None
    assert torch.equal(F.dropout(_leaf(x), 0.3, training=False).data, x)
    del m


def _mask_like(t, p, seed):
    u = torch.rand(t.shape, generator=torch.Generator().manual_seed(seed))  # float32 draws
    return (u < 1 - p).to(t.dtype) / (1 - p)


def _leaf(x):
    from dltrain.engine import Tensor

    return Tensor(x.clone(), requires_grad=True)


def test_embedding_with_padding_and_repeats():
    idx = torch.tensor([[0, 3, 3], [6, 0, 2]])
    check(lambda w: F.embedding(idx, w), lambda w: TF.embedding(idx, w), r(7, 13))
    check(
        lambda w: F.embedding(idx, w, padding_idx=3),
        lambda w: TF.embedding(idx, w, padding_idx=3),
        r(7, 13),
    )


@pytest.mark.parametrize("p", [[1, 2], [1, 0, 2, 3], [-1, 2, 0, -2]], ids=str)
def test_pad(p):
    check(*same("pad", pad=p, value=0.5), r(2, 3, 7, 5))


@pytest.mark.parametrize(
    "kw", [dict(scale_factor=2), dict(size=(7, 9)), dict(scale_factor=3)], ids=str
)
def test_interpolate_nearest(kw):
    check(*same("interpolate", **kw), r(2, 3, 4, 5))


def test_interpolate_1d():
    check(*same("interpolate", scale_factor=2), r(2, 3, 7))


# -- losses ----------------------------------------------------------------------------------
CE = [
    dict(),
    dict(label_smoothing=0.1),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(ignore_index=2),
    dict(weight="w"),
    dict(weight="w", label_smoothing=0.2, ignore_index=1),
]


@pytest.mark.parametrize("kw", CE, ids=str)
@pytest.mark.parametrize("C", [7, 1023])
def test_cross_entropy_class_indices(kw, C):
    kw = dict(kw)
    if kw.get("weight") == "w":
        kw["weight"] = probs(C, seed=3)
    check(*same("cross_entropy", **kw), r(13, C) * 2, labels(13, C), grad=(True, False))


@pytest.mark.parametrize(
    "kw", [dict(), dict(label_smoothing=0.15, reduction="sum"), dict(reduction="none")], ids=str
)
def test_cross_entropy_probabilities(kw):
    t = torch.softmax(r(13, 7, seed=4), -1)
    check(*same("cross_entropy", **kw), r(13, 7), t)
    check(*same("cross_entropy", weight=probs(7, seed=3), **kw), r(13, 7), t)


def test_cross_entropy_spatial():
    t = torch.randint(0, 5, (2, 3, 4), generator=torch.Generator().manual_seed(1))
    check(*same("cross_entropy", label_smoothing=0.1), r(2, 5, 3, 4), t, grad=(True, False))
    check(*same("cross_entropy", reduction="none"), r(2, 5, 3, 4), t, grad=(True, False))


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(reduction="sum"), dict(ignore_index=1), dict(weight="w", reduction="none")],
    ids=str,
)
def test_nll_loss(kw):
    kw = dict(kw)
    if kw.get("weight") == "w":
        kw["weight"] = probs(7, seed=3)
    check(
        *same("nll_loss", **kw), torch.log_softmax(r(13, 7), -1), labels(13, 7), grad=(True, False)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(reduction):
    for name in ("mse_loss", "l1_loss"):
        check(*same(name, reduction=reduction), r(7, 13), r(7, 13, seed=1))
    check(*same("huber_loss", reduction=reduction, delta=0.7), r(7, 13), r(7, 13, seed=1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_losses(reduction):
    check(*same("binary_cross_entropy", reduction=reduction), probs(7, 13), probs(7, 13, seed=1))
    check(
        *same("binary_cross_entropy", reduction=reduction, weight=probs(13, seed=4)),
        probs(7, 13),
        probs(7, 13, seed=1),
        grad=(True, False),
    )
    check(
        *same("binary_cross_entropy_with_logits", reduction=reduction),
        r(7, 13) * 3,
        probs(7, 13, seed=1),
    )
    check(
        *same(
            "binary_cross_entropy_with_logits",
            reduction=reduction,
            pos_weight=probs(13, seed=2) * 3,
            weight=probs(13, seed=4),
        ),
        r(7, 13) * 3,
        probs(7, 13, seed=1),
    )


@pytest.mark.parametrize(
    "kw",
    [
        dict(reduction="batchmean"),
        dict(reduction="sum"),
        dict(reduction="mean"),
        dict(log_target=True, reduction="none"),
    ],
    ids=str,
)
def test_kl_div(kw):
    t = torch.softmax(r(7, 13, seed=1), -1)
    if kw.get("log_target"):
        t = t.log()
    check(*same("kl_div", **kw), torch.log_softmax(r(7, 13), -1), t)


# -- recurrent cells and attention -----------------------------------------------------------
def _cell_weights(mult, inp=5, hid=7, seed=10):
    return [
        r(mult * hid, inp, seed=seed) * 0.5,
        r(mult * hid, hid, seed=seed + 1) * 0.5,
        r(mult * hid, seed=seed + 2),
        r(mult * hid, seed=seed + 3),
    ]


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(is_causal=True), dict(mask="bool"), dict(mask="float"), dict(scale=0.3)],
    ids=str,
)
def test_attention(kw):
    kw = dict(kw)
    m = kw.pop("mask", None)
    if m == "bool":
        kw["attn_mask"] = torch.rand(7, 9, generator=torch.Generator().manual_seed(3)) > 0.3
        kw["attn_mask"][:, 0] = True  # every query sees a key
    elif m == "float":
        kw["attn_mask"] = r(7, 9, seed=3)
    S = 7 if kw.get("is_causal") else 9
    check(
        *same("scaled_dot_product_attention", **kw),
        r(2, 3, 7, 13),
        r(2, 3, S, 13, seed=1),
        r(2, 3, S, 5, seed=2),
    )


@pytest.mark.parametrize(
    "act,ref",
    [
        ("relu", torch.relu),
        ("none", lambda z: z),
        ("leaky_relu", lambda z: TF.leaky_relu(z, 0.2)),
        ("gelu_tanh", lambda z: TF.gelu(z, approximate="tanh")),
    ],
)
def test_bias_act(act, ref):
    check(
        lambda x, b: F.bias_act(x, b, act, slope=0.2),
        lambda x, b: ref(x + b),
        r(7, 13),
        r(13, seed=1),
    )
