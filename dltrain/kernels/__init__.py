"""Fused kernels: one file per op, each with its Triton kernels, launchers and a torch
reference of the same signature. `dispatch(triton_fn, reference_fn)` makes the one entry
point the engine calls: Triton for CUDA tensors, the reference everywhere else, so the
reference *is* the CPU path (where an aten call is fastest on CPU, the reference is that
call) and the kernel tests compare the two.

The mode is read once, from DLTRAIN_KERNELS at import (`set_mode` / `using` change it):
auto (Triton on CUDA), reference (never Triton: debugging, comparisons), triton (also for
CPU tensors, which runs the kernels in Triton's interpreter when TRITON_INTERPRET=1: how
the tests check them without a GPU).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import torch

from ..errors import ConfigError

MODES = ("auto", "reference", "triton")
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def triton_available() -> bool:
    """Triton is importable and can run a kernel here: on a CUDA machine, or under its CPU
    interpreter (TRITON_INTERPRET=1). Elsewhere it is not even imported, which saves about
    a second of every command's start-up."""
    if not (_INTERPRET or torch.cuda.is_available()):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _checked(m: str) -> str:
    if m not in MODES:
        raise ConfigError(f"DLTRAIN_KERNELS={m!r}: use auto, reference or triton")
    return m


_MODE = _checked(os.environ.get("DLTRAIN_KERNELS", "auto"))


def mode() -> str:
    return _MODE


def set_mode(m: str) -> None:
    global _MODE
    _MODE = _checked(m)


@contextmanager
def using(m: str) -> Iterator[None]:
    """Run a block with another dispatch mode (tests, comparisons)."""
    old = _MODE
    set_mode(m)
    try:
        yield
    finally:
        set_mode(old)


def use_triton(t: torch.Tensor) -> bool:
    if _MODE == "reference" or not triton_available():
        return False
    if _MODE == "triton":
        return t.is_cuda or _INTERPRET
    return t.is_cuda


P = ParamSpec("P")
R = TypeVar("R")


def dispatch(
    triton_fn: Callable[P, R],
    reference_fn: Callable[P, R],
    fits: Callable[..., bool] | None = None,
) -> Callable[P, R]:
    """One entry point with the reference's signature: `triton_fn` when the first argument
    takes the Triton path (and `fits(*args)` says the kernel handles these arguments), else
    `reference_fn`."""

    @functools.wraps(reference_fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        first: Any = args[0]
        if use_triton(first) and (fits is None or fits(*args, **kwargs)):
            return triton_fn(*args, **kwargs)
        return reference_fn(*args, **kwargs)

    return call
