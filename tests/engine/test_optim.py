"""Optimizers against torch.optim: 20 steps from the same parameters and gradients."""

import pytest
import torch

from dltrain.engine import Tensor
from dltrain.engine.optim import OPTIMIZERS, clip_grad_norm_, clip_grad_value_
from dltrain.engine.params import FlatParams

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.3)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=1e-2, amsgrad=True, betas=(0.8, 0.99))),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("AdamW", dict(lr=1e-2, amsgrad=True)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-3, alpha=0.9)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1)),
]
SHAPES = [(7, 13), (13,), (3, 2, 5)]


def _grads(step, gen):
    return [torch.randn(s, generator=gen) for s in SHAPES]


@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_matches_torch_optim(name, kw, flat):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    ours = [Tensor(p.clone(), requires_grad=True) for p in init]
    theirs = [p.clone().requires_grad_() for p in init]
    opt = OPTIMIZERS[name](FlatParams(ours) if flat else ours, **kw)
    ref = getattr(torch.optim, name)(theirs, **kw)
    ggen = torch.Generator().manual_seed(1)
    for step in range(20):
        grads = _grads(step, ggen)
        opt.zero_grad()
        for p, g in zip(ours, grads):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.data, b.detach(), rtol=1e-6, atol=1e-7)


def test_state_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(0)
    p1 = Tensor(torch.randn(13, generator=gen), requires_grad=True)
    p2 = Tensor(p1.data.clone(), requires_grad=True)
    a, b = OPTIMIZERS["Adam"]([p1], lr=0.01), OPTIMIZERS["Adam"]([p2], lr=0.01)
    for step in range(10):
        g = torch.randn(13, generator=gen)
        p1.grad, p2.grad = g.clone(), g.clone()
        a.step()
        if step == 4:  # checkpoint b and restore into a fresh optimizer
            tensors, meta = b.state_dict()
            b = OPTIMIZERS["Adam"]([p2], lr=0.5)
            b.load_state_dict(tensors, meta)
        b.step()
    assert torch.equal(p1.data, p2.data)


def test_clip_grad_norm_matches_torch():
    gen = torch.Generator().manual_seed(0)
    gs = [torch.randn(s, generator=gen) * 3 for s in SHAPES]
    ps = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    for p, g in zip(ps, gs):
        p.grad = g.clone()
    ref = torch.nn.utils.clip_grad_norm_(ps, 1.5)
    mine = [g.clone() for g in gs]
    total = clip_grad_norm_(mine, 1.5)
    torch.testing.assert_close(total, ref)
    for a, p in zip(mine, ps):
        torch.testing.assert_close(a, p.grad)
    small = [g.clone() * 1e-3 for g in gs]
    clip_grad_norm_(small, 1.5)  # below the limit: untouched
    for a, g in zip(small, gs):
        torch.testing.assert_close(a, g * 1e-3)
    v = gs[0].clone()
    clip_grad_value_([v], 0.5)
    assert v.abs().max() <= 0.5 and torch.equal(v, gs[0].clamp(-0.5, 0.5))


def test_bad_learning_rate():
    with pytest.raises(ValueError, match="learning rate"):
        OPTIMIZERS["SGD"]([Tensor(torch.zeros(2), requires_grad=True)], lr=-1)
