"""Initializers: Keras's scales (checked by sample statistics), seeding, orthogonality."""

import math

import pytest
import torch

from dltrain.engine.init import INITIALIZERS

SHAPE, FAN_IN, FAN_OUT = (400, 300), 300, 400


def make(name, seed=0, shape=SHAPE):
    return INITIALIZERS[name](
        shape, FAN_IN, FAN_OUT, torch.Generator().manual_seed(seed), torch.float64, "cpu"
    )


@pytest.mark.parametrize(
    "name,std,bound",
    [
        ("glorot_uniform", math.sqrt(2 / 700), math.sqrt(6 / 700)),
        ("he_uniform", math.sqrt(2 / 300), math.sqrt(6 / 300)),
        ("lecun_uniform", math.sqrt(1 / 300), math.sqrt(3 / 300)),
        ("glorot_normal", math.sqrt(2 / 700), 2 * math.sqrt(2 / 700) / 0.8796),
        ("he_normal", math.sqrt(2 / 300), 2 * math.sqrt(2 / 300) / 0.8796),
        ("lecun_normal", math.sqrt(1 / 300), 2 * math.sqrt(1 / 300) / 0.8796),
        ("normal", 0.05, None),
        ("uniform", 0.05 / math.sqrt(3), 0.05),
    ],
)
def test_scale_and_bounds(name, std, bound):
    w = make(name)
    assert abs(w.std().item() / std - 1) < 0.02
    assert abs(w.mean().item()) < 0.02 * std * 10
    if bound is not None:
        assert w.abs().max().item() <= bound + 1e-12


def test_seeded_and_distinct():
    assert torch.equal(make("glorot_uniform", 3), make("glorot_uniform", 3))
    assert not torch.equal(make("glorot_uniform", 3), make("glorot_uniform", 4))


@pytest.mark.parametrize("shape", [(7, 13), (13, 7), (6, 2, 3, 3)])
def test_orthogonal(shape):
    w = make("orthogonal", shape=shape).reshape(shape[0], -1)
    k = min(w.shape)
    gram = w @ w.t() if w.shape[0] <= w.shape[1] else w.t() @ w
    torch.testing.assert_close(gram, torch.eye(k, dtype=torch.float64))


def test_constants():
    assert torch.equal(make("zeros"), torch.zeros(SHAPE, dtype=torch.float64))
    assert torch.equal(make("ones"), torch.ones(SHAPE, dtype=torch.float64))
