"""Primitive tensor ops and their vector-Jacobian products, bound as `Tensor` methods.

Each op computes its value with torch and hands `make` a closure mapping the upstream
gradient g to one gradient per input (None where the input needs none). Broadcasting is
undone by `unbroadcast`, which sums g back to an input's shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from . import precision
from .shape_ops import (  # noqa: F401  (re-exported: ops.cat, ops.split, ...)
    cat,
    chunk,
    contiguous,
    expand,
    flatten,
    flip,
    getitem,
    narrow,
    permute,
    reshape,
    split,
    squeeze,
    stack,
    transpose,
    unbroadcast,
    unsqueeze,
)
from .tensor import Tensor, make

Scalar = int | float | bool


def _check_broadcast(a: torch.Tensor, b: torch.Tensor, op: str) -> None:
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together"
        ) from None


def as_tensor(x: Any, like: Tensor) -> Tensor:
    """Python numbers and torch tensors become constants on `like`'s device."""
    if isinstance(x, Tensor):
        return x
    return Tensor(torch.as_tensor(x, dtype=like.dtype, device=like.device))


# -- elementwise binary ops -------------------------------------------------------------------
def add(a: Tensor, b: Tensor | Scalar) -> Tensor:
    if not isinstance(b, Tensor):
        return make(a.data + b, (a,), lambda g: (g,), "add")
    A, B = a.data, b.data
    _check_broadcast(A, B, "add")
    return make(A + B, (a, b), lambda g: (unbroadcast(g, A.shape), unbroadcast(g, B.shape)), "add")


def sub(a: Tensor, b: Tensor | Scalar) -> Tensor:
    if not isinstance(b, Tensor):
        return make(a.data - b, (a,), lambda g: (g,), "sub")
    A, B = a.data, b.data
    _check_broadcast(A, B, "sub")
    return make(A - B, (a, b), lambda g: (unbroadcast(g, A.shape), unbroadcast(-g, B.shape)), "sub")


def mul(a: Tensor, b: Tensor | Scalar) -> Tensor:
    if not isinstance(b, Tensor):
        return make(a.data * b, (a,), lambda g: (g * b,), "mul")
    A, B = a.data, b.data
    _check_broadcast(A, B, "mul")

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        ga = unbroadcast(g * B, A.shape) if a.requires_grad else None
        gb = unbroadcast(g * A, B.shape) if b.requires_grad else None
        return ga, gb

    return make(A * B, (a, b), vjp, "mul")


def div(a: Tensor, b: Tensor | Scalar) -> Tensor:
    if not isinstance(b, Tensor):
        return make(a.data / b, (a,), lambda g: (g / b,), "div")
    A, B = a.data, b.data
    _check_broadcast(A, B, "div")
    out = A / B

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # d(a/b)/da = 1/b ; d(a/b)/db = -a/b^2 = -out/b
        ga = unbroadcast(g / B, A.shape) if a.requires_grad else None
        gb = unbroadcast(-g * out / B, B.shape) if b.requires_grad else None
        return ga, gb

    return make(out, (a, b), vjp, "div")


def rsub(a: Tensor, b: Scalar) -> Tensor:
    return make(b - a.data, (a,), lambda g: (-g,), "rsub")


def rdiv(a: Tensor, b: Scalar) -> Tensor:
    A = a.data
    out = b / A
    return make(out, (a,), lambda g: (-g * out / A,), "rdiv")  # d(b/a)/da = -b/a^2


def pow(a: Tensor, b: Tensor | Scalar) -> Tensor:
    A = a.data
    if not isinstance(b, Tensor):
        # d a^b / da = b a^(b-1)
        return make(A**b, (a,), lambda g: (g * b * A ** (b - 1),), "pow")
    B = b.data
    _check_broadcast(A, B, "pow")
    out = A**B

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        ga = unbroadcast(g * B * A ** (B - 1), A.shape) if a.requires_grad else None
        # d a^b / db = a^b ln a (0 where a == 0, as torch defines it)
        gb = None
        if b.requires_grad:
            gb = unbroadcast(g * torch.where(A == 0, 0.0, out * torch.log(A)), B.shape)
        return ga, gb

    return make(out, (a, b), vjp, "pow")


def rpow(a: Tensor, base: Scalar) -> Tensor:
    out = torch.pow(base, a.data)
    return make(out, (a,), lambda g: (g * out * math.log(base),), "rpow")  # d c^a = c^a ln c


def matmul(a: Tensor, b: Tensor) -> Tensor:
    a, b = precision.lower(a), precision.lower(b)
    A, B = a.data, b.data
    if A.dim() == 0 or B.dim() == 0:
        raise ValueError("matmul: both operands need at least one dimension")
    if A.shape[-1] != B.shape[-2 if B.dim() > 1 else 0]:
        raise ValueError(
            f"matmul: shapes {tuple(A.shape)} and {tuple(B.shape)} do not line up "
            f"({A.shape[-1]} != {B.shape[-2 if B.dim() > 1 else 0]})"
        )

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # out = A B:  dA = g B^T,  dB = A^T g (1-D operands act as a row / a column)
        a2 = A.unsqueeze(0) if A.dim() == 1 else A
        b2 = B.unsqueeze(-1) if B.dim() == 1 else B
        batch = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g2 = g.reshape(*batch, a2.shape[-2], b2.shape[-1])
        ga = gb = None
        if a.requires_grad:
            ga = unbroadcast(g2 @ b2.transpose(-1, -2), a2.shape).reshape(A.shape)
        if b.requires_grad:
            gb = unbroadcast(a2.transpose(-1, -2) @ g2, b2.shape).reshape(B.shape)
        return ga, gb

    return make(A @ B, (a, b), vjp, "matmul")


def maximum(a: Tensor, b: Tensor) -> Tensor:
    A, B = a.data, b.data
    _check_broadcast(A, B, "maximum")
    out = torch.maximum(A, B)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # ties split the gradient evenly, as torch does
        wa = (A > B).to(g.dtype) + 0.5 * (A == B).to(g.dtype)
        return unbroadcast(g * wa, A.shape), unbroadcast(g * (1 - wa), B.shape)

    return make(out, (a, b), vjp, "maximum")


def minimum(a: Tensor, b: Tensor) -> Tensor:
    return -maximum(-a, -b)


def where(cond: Tensor | torch.Tensor, a: Tensor, b: Tensor | Scalar) -> Tensor:
    C = cond.data if isinstance(cond, Tensor) else cond
    b = as_tensor(b, a)
    A, B = a.data, b.data
    out = torch.where(C, A, B)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zero = torch.zeros((), dtype=g.dtype, device=g.device)
        return (
            unbroadcast(torch.where(C, g, zero), A.shape),
            unbroadcast(torch.where(C, zero, g), B.shape),
        )

    return make(out, (a, b), vjp, "where")


# -- elementwise unary ops --------------------------------------------------------------------
def neg(a: Tensor) -> Tensor:
    return make(-a.data, (a,), lambda g: (-g,), "neg")


def exp(a: Tensor) -> Tensor:
    out = a.data.exp()
    return make(out, (a,), lambda g: (g * out,), "exp")  # d e^x = e^x


def log(a: Tensor) -> Tensor:
    A = a.data
    return make(A.log(), (a,), lambda g: (g / A,), "log")  # d ln x = 1/x


def log1p(a: Tensor) -> Tensor:
    A = a.data
    return make(A.log1p(), (a,), lambda g: (g / (1 + A),), "log1p")


def sqrt(a: Tensor) -> Tensor:
    out = a.data.sqrt()
    return make(out, (a,), lambda g: (g / (2 * out),), "sqrt")  # d sqrt x = 1/(2 sqrt x)


def abs(a: Tensor) -> Tensor:
    A = a.data
    return make(A.abs(), (a,), lambda g: (g * A.sign(),), "abs")


def clamp(a: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    A = a.data
    out = A.clamp(min, max)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        keep = torch.ones_like(A, dtype=torch.bool)
        if min is not None:
            keep &= A >= min
        if max is not None:
            keep &= A <= max
        return (g * keep,)

    return make(out, (a,), vjp, "clamp")


# -- reductions -------------------------------------------------------------------------------
Dims = int | Sequence[int] | None


def _dims(dim: Dims, nd: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(nd))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted(d % nd if nd else 0 for d in dims))


def _expand_back(g: torch.Tensor, shape: torch.Size, dims: tuple[int, ...], keepdim: bool):
    if not keepdim:
        for d in dims:
            g = g.unsqueeze(d)
    return g.expand(shape)


def sum(a: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    a = precision.full(a)  # reductions in float32 under autocast
    A = a.data
    dims = _dims(dim, A.dim())
    out = A.sum(dims, keepdim=keepdim) if dims else A.clone()
    return make(out, (a,), lambda g: (_expand_back(g, A.shape, dims, keepdim),), "sum")


def mean(a: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    a = precision.full(a)  # reductions in float32 under autocast
    A = a.data
    dims = _dims(dim, A.dim())
    n = math.prod(A.shape[d] for d in dims)
    out = A.mean(dims, keepdim=keepdim) if dims else A.clone()
    return make(out, (a,), lambda g: (_expand_back(g / n, A.shape, dims, keepdim),), "mean")


def amax(a: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    A = a.data
    dims = _dims(dim, A.dim())
    out = A.amax(dims, keepdim=True) if dims else A.clone()

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        # the gradient goes to the maxima, split evenly among ties (as torch.amax)
        hit = (A == out).to(g.dtype)
        count = hit.sum(dims, keepdim=True) if dims else hit
        return (_expand_back(g, A.shape, dims, keepdim) * hit / count,)

    return make(out if keepdim or not dims else out.squeeze(dims), (a,), vjp, "amax")


def var(a: Tensor, dim: Dims = None, correction: int = 1, keepdim: bool = False) -> Tensor:
    a = precision.full(a)  # reductions in float32 under autocast
    A = a.data
    dims = _dims(dim, A.dim())
    n = math.prod(A.shape[d] for d in dims)
    out = A.var(dims, correction=correction, keepdim=keepdim)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        # d var / dx_i = 2 (x_i - mean) / (n - correction)
        centered = A - A.mean(dims, keepdim=True)
        return (_expand_back(g, A.shape, dims, keepdim) * centered * (2.0 / (n - correction)),)

    return make(out, (a,), vjp, "var")


# -- binding ----------------------------------------------------------------------------------
def _cmp(op: str) -> Any:
    def f(self: Tensor, other: Any) -> Tensor:
        o = other.data if isinstance(other, Tensor) else other
        return Tensor(getattr(self.data, op)(o))

    return f


def _bind() -> None:
    """Attach the ops to Tensor (declared for type checkers in tensor.py)."""
    methods: dict[str, Any] = {
        "__add__": add,
        "__radd__": lambda self, o: add(self, o),
        "__sub__": sub,
        "__rsub__": lambda self, o: rsub(self, o) if not isinstance(o, Tensor) else sub(o, self),
        "__mul__": mul,
        "__rmul__": lambda self, o: mul(self, o),
        "__truediv__": div,
        "__rtruediv__": lambda self, o: (
            rdiv(self, o) if not isinstance(o, Tensor) else div(o, self)
        ),
        "__pow__": pow,
        "__rpow__": lambda self, o: rpow(self, o),
        "__matmul__": matmul,
        "__neg__": neg,
        "__getitem__": getitem,
        "view": reshape,
        "max": amax,
        "pow": pow,
        "T": property(lambda self: transpose(self, -2, -1)),
    }
    for name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
        methods[name] = _cmp(name)
    for f in (
        exp,
        log,
        log1p,
        sqrt,
        abs,
        clamp,
        sum,
        mean,
        amax,
        var,
        reshape,
        permute,
        transpose,
        flatten,
        unsqueeze,
        squeeze,
        expand,
        contiguous,
        split,
        chunk,
        matmul,
        narrow,
    ):
        methods[f.__name__] = f
    for name, m in methods.items():
        setattr(Tensor, name, m)


_bind()
