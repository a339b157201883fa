"""Kernel tests run the Triton path under the interpreter on CPU (TRITON_INTERPRET=1, set in
conftest) and on CUDA when present (tests marked gpu)."""

import importlib.util
import os

import pytest
import torch

# Triton is Linux-only (the dev extra installs it there); elsewhere these tests skip
HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1" and HAVE_TRITON
needs_interpreter = pytest.mark.skipif(
    not INTERPRET,
    reason="Triton kernels on CPU tensors need Triton and TRITON_INTERPRET=1 (set where there "
    "is no GPU)",
)
DEVICES = [
    pytest.param("cpu", marks=needs_interpreter),
    pytest.param("cuda", marks=pytest.mark.gpu),
]
# documented tolerances: fp32 kernels vs fp32 references; bf16 on GPU vs an fp32 reference
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def dtypes(device):
    return [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])


def rand(*shape, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=g).to(device=device, dtype=dtype)


def close(a, b, dtype=torch.float32):
    torch.testing.assert_close(a.float(), b.float(), **TOL[dtype])
