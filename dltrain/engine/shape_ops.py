"""Shape and indexing ops with their VJPs: each gradient is the inverse rearrangement
(reshape back, inverse permutation, scatter into zeros for slices and indexing)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import torch

from .tensor import Tensor, make

Dims = int | Sequence[int] | None


def unbroadcast(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum g over the dimensions that broadcasting expanded, back to `shape`."""
    if g.shape == shape:
        return g
    lead = g.dim() - len(shape)
    dims = list(range(lead))
    dims += [lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1]
    if dims:
        g = g.sum(dims, keepdim=True)
    return g.reshape(shape)


def reshape(a: Tensor, *shape: Any) -> Tensor:
    A = a.data
    shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
    try:
        out = A.reshape(shape)
    except RuntimeError:
        raise ValueError(f"reshape: cannot view shape {tuple(A.shape)} as {shape}") from None
    return make(out, (a,), lambda g: (g.reshape(A.shape),), "reshape")


def permute(a: Tensor, *dims: Any) -> Tensor:
    dims = tuple(dims[0]) if len(dims) == 1 and not isinstance(dims[0], int) else dims
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d % len(dims)] = i
    return make(a.data.permute(dims), (a,), lambda g: (g.permute(inverse),), "permute")


def transpose(a: Tensor, dim0: int, dim1: int) -> Tensor:
    return make(
        a.data.transpose(dim0, dim1), (a,), lambda g: (g.transpose(dim0, dim1),), "transpose"
    )


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    A = a.data
    return make(A.flatten(start_dim, end_dim), (a,), lambda g: (g.reshape(A.shape),), "flatten")


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    A = a.data
    return make(A.unsqueeze(dim), (a,), lambda g: (g.reshape(A.shape),), "unsqueeze")


def squeeze(a: Tensor, dim: Dims = None) -> Tensor:
    A = a.data
    out = A.squeeze() if dim is None else A.squeeze(dim if isinstance(dim, int) else tuple(dim))
    return make(out, (a,), lambda g: (g.reshape(A.shape),), "squeeze")


def expand(a: Tensor, *shape: Any) -> Tensor:
    A = a.data
    shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
    return make(A.expand(shape), (a,), lambda g: (unbroadcast(g, A.shape),), "expand")


def contiguous(a: Tensor) -> Tensor:
    return make(a.data.contiguous(), (a,), lambda g: (g,), "contiguous")


def _is_basic_index(idx: Any) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


def getitem(a: Tensor, idx: Any) -> Tensor:
    A = a.data
    if isinstance(idx, Tensor):
        idx = idx.data
    elif isinstance(idx, tuple):
        idx = tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    out = A[idx]

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        full = torch.zeros_like(A)
        if _is_basic_index(idx) or (isinstance(idx, torch.Tensor) and idx.dtype == torch.bool):
            full[idx] = g
        elif isinstance(idx, torch.Tensor):  # integer rows, repeats summed
            full.index_add_(0, idx.reshape(-1), g.reshape(-1, *A.shape[1:]))
        else:
            full.index_put_(tuple(torch.as_tensor(i) for i in idx), g, accumulate=True)
        return (full,)

    return make(out, (a,), vjp, "getitem")


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = tuple(tensors)
    datas = [t.data for t in tensors]
    try:
        out = torch.cat(datas, dim)
    except RuntimeError:
        shapes = ", ".join(str(tuple(d.shape)) for d in datas)
        raise ValueError(f"cat along dim {dim}: shapes {shapes} differ off that dim") from None
    sizes = [d.shape[dim] for d in datas]
    return make(out, tensors, lambda g: g.split(sizes, dim), "cat")


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = tuple(tensors)
    datas = [t.data for t in tensors]
    try:
        out = torch.stack(datas, dim)
    except RuntimeError:
        shapes = ", ".join(str(tuple(d.shape)) for d in datas)
        raise ValueError(f"stack needs equal shapes, got {shapes}") from None
    return make(out, tensors, lambda g: g.unbind(dim), "stack")


def flip(a: Tensor, dims: Sequence[int]) -> Tensor:
    """Reverse the order along dims; the gradient is flipped back."""
    dims = tuple(dims)
    return make(a.data.flip(dims), (a,), lambda g: (g.flip(dims),), "flip")


def narrow(a: Tensor, dim: int, start: int, length: int) -> Tensor:
    A = a.data

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        full = torch.zeros_like(A)
        full.narrow(dim, start, length).copy_(g)
        return (full,)

    return make(A.narrow(dim, start, length), (a,), vjp, "narrow")


def split(a: Tensor, split_size: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    n = a.data.shape[dim]
    if isinstance(split_size, int):
        sizes = [min(split_size, n - s) for s in range(0, n, split_size)]
    else:
        sizes = list(split_size)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n} along dim {dim}")
    starts = [builtins.sum(sizes[:i]) for i in range(len(sizes))]
    return tuple(narrow(a, dim, s, k) for s, k in zip(starts, sizes))


def chunk(a: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    n = a.data.shape[dim]
    return split(a, -(-n // chunks), dim)
