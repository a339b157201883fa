"""Every operator, reduction and shape op against torch.autograd in float64."""

import pytest
import torch

from dltrain.engine import Tensor, cat, ops, stack, where
from tests.oracle import check

D = torch.float64


def r(*shape, positive=False, seed=0):
    t = torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(seed))
    return t.abs() + 0.5 if positive else t


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "matmul": lambda a, b: a @ b,
}

SHAPES = [((7, 13), (7, 13)), ((7, 1), (1, 13)), ((1023,), (1,)), ((2, 7, 13), (13,))]


@pytest.mark.parametrize("name", [n for n in BINARY if n != "matmul"])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_binary_broadcasting(name, shapes):
    f = BINARY[name]
    pos = name in ("pow", "div")
    check(f, f, r(*shapes[0], positive=pos, seed=1), r(*shapes[1], positive=pos, seed=2))


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((7, 13), (13, 5)),
        ((13,), (13, 7)),
        ((7, 13), (13,)),
        ((3, 7, 13), (13, 5)),
        ((2, 1, 7, 13), (4, 13, 3)),
        ((13,), (13,)),
    ],
    ids=str,
)
def test_matmul(sa, sb):
    check(BINARY["matmul"], BINARY["matmul"], r(*sa, seed=1), r(*sb, seed=2))


SCALAR = {
    "radd": lambda a: 2.5 + a,
    "rsub": lambda a: 2.5 - a,
    "rmul": lambda a: 3 * a,
    "rdiv": lambda a: 2.0 / a,
    "rpow": lambda a: 2.0**a,
    "pow_scalar": lambda a: a**3,
    "pow_frac": lambda a: a**0.5,
    "neg": lambda a: -a,
    "sub_scalar": lambda a: a - 1.5,
    "div_scalar": lambda a: a / 4.0,
}


@pytest.mark.parametrize("name", SCALAR)
def test_scalar_ops(name):
    check(SCALAR[name], SCALAR[name], r(7, 13, positive=True))


UNARY = {
    "exp": (lambda a: a.exp(), torch.exp),
    "log": (lambda a: a.log(), torch.log),
    "log1p": (lambda a: a.log1p(), torch.log1p),
    "sqrt": (lambda a: a.sqrt(), torch.sqrt),
    "abs": (lambda a: a.abs(), torch.abs),
    "clamp": (lambda a: a.clamp(-0.5, 0.7), lambda a: a.clamp(-0.5, 0.7)),
}


@pytest.mark.parametrize("name", UNARY)
def test_unary(name):
    fe, ft = UNARY[name]
    check(fe, ft, r(7, 1023, positive=name in ("log", "sqrt", "log1p")))


REDUCE = {
    "sum_all": lambda a: a.sum(),
    "sum_dim": lambda a: a.sum(1),
    "sum_dims_keep": lambda a: a.sum((0, 2), keepdim=True),
    "mean_all": lambda a: a.mean(),
    "mean_neg": lambda a: a.mean(-1),
    "mean_keep": lambda a: a.mean(1, keepdim=True),
    "var_all": lambda a: a.var(),
    "var_dim": lambda a: a.var(1),
    "var_keep_c0": lambda a: a.var((0, 2), correction=0, keepdim=True),
}


@pytest.mark.parametrize("name", REDUCE)
def test_reductions(name):
    check(REDUCE[name], REDUCE[name], r(7, 13, 5))


@pytest.mark.parametrize("dim,keep", [(None, False), (1, False), (-1, True), ((0, 2), False)])
def test_max_matches_amax(dim, keep):
    fe = (lambda a: a.max()) if dim is None else (lambda a: a.max(dim, keep))
    ft = (lambda a: a.amax()) if dim is None else (lambda a: a.amax(dim, keep))
    check(fe, ft, r(7, 13, 5))


SHAPE_OPS = {
    "reshape": lambda a: a.reshape(13, 35),
    "view": lambda a: a.view(-1),
    "permute": lambda a: a.permute(2, 0, 1),
    "transpose": lambda a: a.transpose(0, 2),
    "flatten": lambda a: a.flatten(1),
    "unsqueeze": lambda a: a.unsqueeze(1),
    "squeeze": lambda a: a[:, :1].squeeze(1),
    "getitem_slice": lambda a: a[1:5, ::2, -1],
    "getitem_int": lambda a: a[3],
    "getitem_none_ellipsis": lambda a: a[None, ..., 2],
    "expand": lambda a: a[:, :1].expand(7, 4, 5),
    "T": lambda a: a[0].T,
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_ops(name):
    check(SHAPE_OPS[name], SHAPE_OPS[name], r(7, 13, 5))


def test_advanced_indexing_accumulates_repeats():
    idx = torch.tensor([0, 3, 3, 6, 0])
    check(lambda a: a[idx], lambda a: a[idx], r(7, 13))
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([2, 5, 5])
    check(lambda a: a[rows, cols], lambda a: a[rows, cols], r(7, 13))
    mask = r(7, 13, seed=4) > 0
    check(lambda a: a[mask], lambda a: a[mask], r(7, 13))


def test_cat_stack_split_chunk_where():
    a, b, c = r(7, 3), r(7, 13, seed=1), r(7, 1, seed=2)
    check(lambda x, y, z: cat([x, y, z], 1), lambda x, y, z: torch.cat([x, y, z], 1), a, b, c)
    check(lambda x, y: stack([x, y], 0), lambda x, y: torch.stack([x, y], 0), a, a * 2)
    check(lambda x: x.split([2, 5], 0), lambda x: x.split([2, 5], 0), b)
    check(lambda x: x.split(3, 1), lambda x: x.split(3, 1), b)
    check(lambda x: x.chunk(4, 1), lambda x: x.chunk(4, 1), b)
    cond = r(7, 13, seed=9) > 0
    check(lambda x, y: where(cond, x, y), lambda x, y: torch.where(cond, x, y), b, r(1, 13))
    check(lambda x, y: ops.maximum(x, y), torch.maximum, b, r(7, 13, seed=5))
    check(lambda x, y: ops.minimum(x, y), torch.minimum, b, r(7, 13, seed=5))


def test_reused_input_accumulates():
    f = lambda a: (a * a + a.exp() * a).sum(0) / (a + 3)  # noqa: E731
    check(f, f, r(7, 13, positive=True))


def test_comparisons_carry_no_gradient():
    a = Tensor(r(3, 4), requires_grad=True)
    for m in (a > 0, a >= 0, a < 0, a <= 0, a == a, a != 1.0):
        assert m.dtype == torch.bool and not m.requires_grad


def test_to_dtype_is_differentiable():
    check(
        lambda a: (a.to(torch.float32) * 2).to(torch.float64),
        lambda a: (a.to(torch.float32) * 2).to(torch.float64),
        r(7, 13),
        rtol=1e-6,
    )


def test_shape_errors_name_both_shapes():
    a, b = Tensor(r(7, 13)), Tensor(r(5, 13))
    with pytest.raises(ValueError, match=r"\(7, 13\).*\(5, 13\)"):
        a + b
    with pytest.raises(ValueError, match=r"\(7, 13\).*\(5, 13\)"):
        a @ b
    with pytest.raises(ValueError, match=r"\(13, 7\).*\(5, 13\)"):
        cat([a.T, b], 1)
