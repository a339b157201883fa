"""Whole blocks against torch: MLP, conv-bn-relu-pool, generator block, LSTM, attention;
and 200 training steps reproducing a torch.autograd run."""

import torch
import torch.nn.functional as TF

from dltrain.engine import Tensor
from dltrain.engine import functional as F
from dltrain.engine.optim import Adam
from tests.oracle import check

D = torch.float64


def r(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(seed)) * scale


def test_mlp():
    def mlp(f, x, w1, b1, w2, b2, w3, b3):
        h = f.gelu(f.linear(x, w1, b1))
        h = torch.tanh(f.linear(h, w2, b2)) if f is TF else F.tanh(f.linear(h, w2, b2))
        return f.log_softmax(f.linear(h, w3, b3), dim=-1)

    check(
        lambda *a: mlp(F, *a),
        lambda *a: mlp(TF, *a),
        r(13, 7),
        r(31, 7, seed=1),
        r(31, seed=2),
        r(17, 31, seed=3),
        r(17, seed=4),
        r(5, 17, seed=5),
        r(5, seed=6),
    )


def test_conv_bn_relu_maxpool_block():
    # no conv bias: batch norm cancels it, so its true gradient is exactly zero
    def block(f, x, w, g, beta):
        y = f.conv2d(x, w, padding=1)
        y = f.batch_norm(y, None, None, g, beta, training=True)
        return f.max_pool2d(f.relu(y), 2)

    check(
        lambda *a: block(F, *a),
        lambda *a: block(TF, *a),
        r(4, 3, 9, 11),
        r(8, 3, 3, 3, seed=1),
        r(8, seed=3),
        r(8, seed=4),
    )


def test_transposed_conv_generator_block():
    def block(f, z, wd, wt, g, beta):
        x = f.linear(z, wd).reshape(-1, 8, 4, 4)
        x = f.leaky_relu(f.batch_norm(x, None, None, g, beta, training=True), 0.2)
        x = f.conv_transpose2d(x, wt, stride=2, padding=1)
        return torch.tanh(x) if f is TF else F.tanh(x)

    check(
        lambda *a: block(F, *a),
        lambda *a: block(TF, *a),
        r(5, 10),
        r(128, 10, seed=1),
        r(8, 3, 4, 4, seed=2),
        r(8, seed=3),
        r(8, seed=4),
    )


def test_causal_attention_block():
    def block(f, x, wq, wk, wv, wo, g, b):
        B, T, C = x.shape
        h = f.layer_norm(x, [C], g, b)
        q, k, v = (f.linear(h, w).reshape(B, T, 2, C // 2).transpose(1, 2) for w in (wq, wk, wv))
        a = f.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + f.linear(a.transpose(1, 2).reshape(B, T, C), wo)

    ws = [r(8, 8, seed=i, scale=0.4) for i in range(1, 5)]
    check(
        lambda *a: block(F, *a),
        lambda *a: block(TF, *a),
        r(2, 7, 8),
        *ws,
        r(8, seed=6),
        r(8, seed=7),
    )


def test_mlp_training_reproduces_torch_autograd_over_200_steps():
    g = torch.Generator().manual_seed(0)
    x, y = r(64, 10, seed=1), torch.randint(0, 4, (64,), generator=g)
    init = [
        r(32, 10, seed=2, scale=0.3),
        torch.zeros(32, dtype=D),
        r(4, 32, seed=3, scale=0.3),
        torch.zeros(4, dtype=D),
    ]
    ours = [Tensor(p.clone(), requires_grad=True) for p in init]
    theirs = [p.clone().requires_grad_() for p in init]
    opt, ref = Adam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01)
    xe = Tensor(x)
    for _ in range(200):
        w1, b1, w2, b2 = ours
        loss = F.cross_entropy(F.linear(F.relu(F.linear(xe, w1, b1)), w2, b2), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        w1, b1, w2, b2 = theirs
        tl = TF.cross_entropy(TF.linear(TF.relu(TF.linear(x, w1, b1)), w2, b2), y)
        ref.zero_grad()
        tl.backward()
        ref.step()
    assert loss.item() < 0.5
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.data, b.detach(), rtol=1e-9, atol=1e-12)
