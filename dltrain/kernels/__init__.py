"""Fused kernels: each op has a Triton implementation for CUDA and a torch reference with the
same signature, which the kernel tests compare it with. `use_triton(t)` tells the engine
whether to take the Triton path (CUDA tensors); otherwise it runs its own ops.

DLTRAIN_KERNELS=reference keeps CUDA on the engine's own ops (debugging, comparisons);
DLTRAIN_KERNELS=triton forces Triton even for CPU tensors, which runs them under Triton's
interpreter when TRITON_INTERPRET=1 (how the tests check kernels without a GPU).
"""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def mode() -> str:
    m = os.environ.get("DLTRAIN_KERNELS", "auto")
    if m not in ("auto", "reference", "triton"):
        raise ValueError(f"DLTRAIN_KERNELS={m!r}: use auto, reference or triton")
    return m


def use_triton(t: torch.Tensor) -> bool:
    m = mode()
    if m == "reference" or not triton_available():
        return False
    if m == "triton":
        return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    return t.is_cuda
