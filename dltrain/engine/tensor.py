"""Tensor and tape: dltrain's reverse-mode autodiff core.

A `Tensor` wraps a `torch.Tensor` (any dtype, any device) used purely as storage and for
primitive math. Every differentiable op builds its result with `make(data, parents, vjp)`:
when gradients are enabled and a parent requires one, the result gets a `Node` holding the
parents and a closure `vjp(grad) -> tuple of parent grads` (the vector-Jacobian product).
The closure captures whatever the op saved for backward; `backward()` drops the closure as
soon as it has run, so saved tensors die with their backward step.

torch.autograd is never involved: torch tensors here never have `requires_grad` set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Union

import torch

VJP = Callable[[torch.Tensor], Sequence[torch.Tensor | None]]


class _GradMode:
    __slots__ = ("enabled",)

    def __init__(self) -> None:
        self.enabled = True


GRAD_MODE = _GradMode()


@contextmanager
def no_grad() -> Iterator[None]:
    """Record nothing inside the block (evaluation, optimizer updates)."""
    previous = GRAD_MODE.enabled
    GRAD_MODE.enabled = False
    try:
        yield
    finally:
        GRAD_MODE.enabled = previous


def is_grad_enabled() -> bool:
    return GRAD_MODE.enabled


class _HostReads:
    __slots__ = ("allowed",)

    def __init__(self) -> None:
        self.allowed = True


HOST_READS = _HostReads()


def may_read_back(t: torch.Tensor) -> bool:
    """Whether a validity check may read `t`'s values on the host (an out-of-range index, a
    target outside [0, 1]): on CPU, where that costs no device sync; never on a GPU, where
    it would stall the step. `device_like()` turns them off on CPU too."""
    return t.device.type == "cpu" and HOST_READS.allowed


@contextmanager
def device_like() -> Iterator[None]:
    """Run CPU steps as on a GPU: no value checks that read tensors back to the host
    (tests assert that a training step then reads nothing back)."""
    previous = HOST_READS.allowed
    HOST_READS.allowed = False
    try:
        yield
    finally:
        HOST_READS.allowed = previous


class Node:
    """One recorded op: its inputs and the closure computing their gradients."""

    __slots__ = ("parents", "vjp", "op")

    def __init__(self, parents: tuple[Tensor, ...], vjp: VJP, op: str) -> None:
        self.parents = parents
        self.vjp: VJP | None = vjp
        self.op = op


class Tensor:
    """A torch tensor plus the autodiff bookkeeping dltrain needs.

    `Tensor(t, requires_grad=True)` makes a leaf; ops on tensors return tensors that
    remember how they were made. `.data` is the torch tensor, `.grad` a torch tensor or None.
    """

    __slots__ = ("data", "grad", "requires_grad", "_node", "name", "grad_buffer", "__weakref__")
    __array_priority__ = 1000  # numpy defers binary ops to Tensor

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        elif not isinstance(data, torch.Tensor):
            data = torch.as_tensor(data)
        if data.requires_grad:  # a torch tensor from user code: keep torch.autograd out
            data = data.detach()
        if requires_grad and not (data.is_floating_point() or data.is_complex()):
            raise TypeError(f"only floating point tensors can require gradients, got {data.dtype}")
        self.data: torch.Tensor = data
        self.grad: torch.Tensor | None = None
        self.requires_grad = requires_grad
        self._node: Node | None = None
        self.name = name
        self.grad_buffer: torch.Tensor | None = None  # preallocated home of .grad (FlatParams)

    # -- plain properties, mirroring torch ---------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def ndim(self) -> int:
        return self.data.dim()

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def dim(self) -> int:
        return self.data.dim()

    def size(self, dim: int | None = None) -> Any:
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return self.data.numel()

    def __len__(self) -> int:
        return len(self.data)

    def item(self) -> Any:
        return self.data.item()

    def numpy(self) -> Any:
        return self.data.detach().cpu().numpy()

    def tolist(self) -> Any:
        return self.data.tolist()

    def detach(self) -> Tensor:
        """The same storage, cut off from the graph."""
        return _wrap(self.data)

    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """Device or dtype move; differentiable (the gradient moves back)."""
        src = self.data
        out = src.to(*args, **kwargs)
        if out is src:
            return self
        return make(out, (self,), lambda g: (g.to(device=src.device, dtype=src.dtype),), "to")

    def requires_grad_(self, flag: bool = True) -> Tensor:
        self.requires_grad = flag
        return self

    def zero_grad(self) -> None:
        if self.grad is not None:
            self.grad.zero_()

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{extra})"

    __hash__ = object.__hash__  # == is elementwise, so identity hashing must be explicit

    def __bool__(self) -> bool:
        return bool(self.data)

    if TYPE_CHECKING:  # bound by ops._bind at import; declared here for type checkers
        Operand = Union["Tensor", int, float, bool]

        def __add__(self, other: Operand) -> Tensor: ...
        def __radd__(self, other: Operand) -> Tensor: ...
        def __sub__(self, other: Operand) -> Tensor: ...
        def __rsub__(self, other: Operand) -> Tensor: ...
        def __mul__(self, other: Operand) -> Tensor: ...
        def __rmul__(self, other: Operand) -> Tensor: ...
        def __truediv__(self, other: Operand) -> Tensor: ...
        def __rtruediv__(self, other: Operand) -> Tensor: ...
        def __pow__(self, other: Operand) -> Tensor: ...
        def __rpow__(self, other: Operand) -> Tensor: ...
        def __matmul__(self, other: Tensor) -> Tensor: ...
        def __neg__(self) -> Tensor: ...
        def __getitem__(self, idx: Any) -> Tensor: ...
        def __lt__(self, other: Any) -> Tensor: ...
        def __le__(self, other: Any) -> Tensor: ...
        def __gt__(self, other: Any) -> Tensor: ...
        def __ge__(self, other: Any) -> Tensor: ...
        def __eq__(self, other: Any) -> Tensor: ...  # type: ignore[override]
        def __ne__(self, other: Any) -> Tensor: ...  # type: ignore[override]
        def exp(self) -> Tensor: ...
        def log(self) -> Tensor: ...
        def log1p(self) -> Tensor: ...
        def sqrt(self) -> Tensor: ...
        def abs(self) -> Tensor: ...
        def clamp(self, min: float | None = None, max: float | None = None) -> Tensor: ...
        def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor: ...
        def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor: ...
        def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor: ...
        def max(self, dim: Any = None, keepdim: bool = False) -> Tensor: ...
        def var(self, dim: Any = None, correction: int = 1, keepdim: bool = False) -> Tensor: ...
        def pow(self, other: Operand) -> Tensor: ...
        def matmul(self, other: Tensor) -> Tensor: ...
        def reshape(self, *shape: Any) -> Tensor: ...
        def view(self, *shape: Any) -> Tensor: ...
        def permute(self, *dims: Any) -> Tensor: ...
        def transpose(self, dim0: int, dim1: int) -> Tensor: ...
        def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor: ...
        def unsqueeze(self, dim: int) -> Tensor: ...
        def squeeze(self, dim: Any = None) -> Tensor: ...
        def expand(self, *shape: Any) -> Tensor: ...
        def contiguous(self) -> Tensor: ...
        def split(self, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]: ...
        def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]: ...
        def narrow(self, dim: int, start: int, length: int) -> Tensor: ...
        @property
        def T(self) -> Tensor: ...

    # -- backward ----------------------------------------------------------------------------
    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` that requires one.

        Without `gradient`, self must hold a single element (a loss). The graph is freed as
        it is walked unless `retain_graph=True`.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the ops that "
                "made it has requires_grad=True (or it was computed under no_grad())"
            )
        if gradient is None:
            if self.data.numel() != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a single-element tensor (a loss); "
                    f"this one has shape {tuple(self.shape)}. Pass gradient= of the same shape, "
                    f"or reduce it first (e.g. .sum() or .mean())"
                )
            gradient = torch.ones_like(self.data)
        else:
            gradient = gradient.data if isinstance(gradient, Tensor) else torch.as_tensor(gradient)
            if gradient.shape != self.data.shape:
                raise RuntimeError(
                    f"backward(): gradient has shape {tuple(gradient.shape)} but the tensor has "
                    f"shape {tuple(self.shape)}"
                )
            gradient = gradient.to(device=self.data.device, dtype=self.data.dtype)
        run_backward(self, gradient, retain_graph)


def _wrap(data: torch.Tensor) -> Tensor:
    """A Tensor around `data` without checks or graph (hot path)."""
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    out.requires_grad = False
    out._node = None
    out.name = None
    out.grad_buffer = None
    return out


def make(data: torch.Tensor, parents: tuple[Tensor, ...], vjp: VJP, op: str) -> Tensor:
    """Wrap an op's result, recording a node when a parent needs a gradient."""
    out = _wrap(data)
    if GRAD_MODE.enabled:
        for p in parents:
            if p.requires_grad:
                out.requires_grad = True
                out._node = Node(parents, vjp, op)
                break
    return out


def accumulate_leaf(leaf: Tensor, grad: torch.Tensor) -> None:
    """leaf.grad += grad, in place when a buffer exists (flat gradient buffers rely on it)."""
    if grad.shape != leaf.data.shape:
        raise RuntimeError(
            f"internal: gradient of shape {tuple(grad.shape)} for a leaf of shape "
            f"{tuple(leaf.shape)}"
        )
    if leaf.grad is None:
        if leaf.grad_buffer is not None:  # its slot in a flat buffer: copy, no memset needed
            leaf.grad = leaf.grad_buffer.copy_(grad)
        else:  # a fresh copy: the incoming grad may be shared with another input of the op
            leaf.grad = grad.to(
                dtype=leaf.data.dtype, copy=True, memory_format=torch.contiguous_format
            )
    else:
        leaf.grad.add_(grad)


def _topological(root: Tensor) -> list[Tensor]:
    """Non-leaf tensors reachable from root, each after every tensor that uses it.

    Depth-first post-order, reversed. A tensor is marked when it is expanded, not when it
    is pushed: one pushed early by a consumer may be reached again through a longer path
    (a residual branch), and it must finish after everything on that path."""
    order: list[Tensor] = []
    done: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in done:
            continue
        done.add(id(t))
        stack.append((t, True))
        node = t._node
        assert node is not None
        for p in node.parents:
            if p._node is not None and id(p) not in done:
                stack.append((p, False))
    order.reverse()
    return order


def run_backward(root: Tensor, gradient: torch.Tensor, retain_graph: bool) -> None:
    if root._node is None:
        accumulate_leaf(root, gradient)
        return
    order = _topological(root)
    grads: dict[int, torch.Tensor] = {id(root): gradient}
    for i, t in enumerate(order):
        order[i] = None  # type: ignore[call-overload]  # let t die once processed
        g = grads.pop(id(t), None)
        if g is None:
            continue
        node = t._node
        assert node is not None
        if node.vjp is None:
            raise RuntimeError(
                f"backward() through a graph that was already freed (op '{node.op}'): the first "
                "backward() released it. Call backward(retain_graph=True) the first time if you "
                "need a second pass, or recompute the forward"
            )
        parent_grads = node.vjp(g)
        parents = node.parents
        if not retain_graph:
            node.vjp = None
            node.parents = ()
        for p, pg in zip(parents, parent_grads):
            if pg is None or not p.requires_grad:
                continue
            if p._node is None:
                accumulate_leaf(p, pg)
            else:
                if pg.dtype != p.data.dtype:  # a gradient has its tensor's type (autocast)
                    pg = pg.to(p.data.dtype)
                key = id(p)
                prev = grads.get(key)
                grads[key] = pg if prev is None else prev + pg
