"""Compare a dltrain computation with the same computation under torch.autograd.

`check(fn_engine, fn_torch, *inputs)` runs both on copies of the inputs (torch tensors; the
floating ones get gradients), feeds both the same random upstream gradient, and checks the
forward values and every input's gradient to a relative tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dltrain.engine import Tensor


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != {tuple(b.shape)}")
    both_nan = torch.isnan(a) & torch.isnan(b)
    if not torch.equal(torch.isnan(a), torch.isnan(b)):
        raise AssertionError("NaN in one result only")
    a, b = a[~both_nan], b[~both_nan]
    if a.numel() == 0:
        return 0.0
    scale = max(b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / scale


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def check(
    fn_engine: Callable[..., Any],
    fn_torch: Callable[..., Any],
    *inputs: torch.Tensor,
    grad: tuple[bool, ...] | None = None,
    rtol: float = 1e-10,
    seed: int = 918273,
) -> None:
    """Assert fn_engine(*Tensors) matches fn_torch(*tensors) in value and gradients."""
    flags = grad or tuple(t.is_floating_point() for t in inputs)
    eng_in = [Tensor(t.clone(), requires_grad=f) for t, f in zip(inputs, flags)]
    tor_in = [t.clone().requires_grad_(f) for t, f in zip(inputs, flags)]
    eng_out = _as_tuple(fn_engine(*eng_in))
    tor_out = _as_tuple(fn_torch(*tor_in))
    assert len(eng_out) == len(tor_out)
    gen = torch.Generator().manual_seed(seed)  # not the inputs' seeds: g == x is degenerate
    ups = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in tor_out]
    for i, (e, t) in enumerate(zip(eng_out, tor_out)):
        err = rel_err(e.data, t)
        assert err <= rtol, f"output {i}: relative error {err:.3g} > {rtol}"
    # scalar objective sum_i <out_i, up_i> on both sides
    eng_obj = sum(
        ((e * Tensor(u)).sum() for e, u in zip(eng_out, ups)),
        Tensor(torch.zeros((), dtype=ups[0].dtype)),
    )
    tor_obj = sum((t * u).sum() for t, u in zip(tor_out, ups))
    if not any(flags) or not tor_obj.requires_grad:
        return
    eng_obj.backward()
    wanted = [t for t, f in zip(tor_in, flags) if f]
    tor_grads = torch.autograd.grad(tor_obj, wanted, allow_unused=True)
    k = 0
    for j, (e, f) in enumerate(zip(eng_in, flags)):
        if not f:
            continue
        tg = tor_grads[k]
        k += 1
        if tg is None:
            tg = torch.zeros_like(e.data)
        assert e.grad is not None, f"input {j}: dltrain gave no gradient"
        err = rel_err(e.grad, tg)
        assert err <= rtol, f"input {j}: gradient relative error {err:.3g} > {rtol}"
