"""Mixed precision: which ops run in a lower precision, and loss scaling for float16.

`autocast(torch.bfloat16)` is dltrain's counterpart of `torch.autocast`: inside it the ops
whose cost is a matrix product (linear, matmul, convolutions, transposed convolutions,
attention, oneDNN's LSTM) take their float32 inputs and weights cast to the lower type and
return it; softmax, the losses and reductions take lower-precision inputs cast up to
float32; normalisation runs aten's mixed kernels (a bfloat16 input with float32 weights,
float32 statistics); elementwise ops run in the type they are given, and a sum of a
float32 and a bfloat16 tensor is float32 (torch's promotion), so a residual stream that
starts in float32 stays float32. Parameters, gradients and the optimizer stay float32: a
cast is an ordinary node of the tape, and the engine gives every gradient its tensor's
type (`tensor.run_backward`), so a weight's bfloat16 gradient lands in its float32 slot of
the flat buffer.

float16 has a narrow exponent: its small gradients underflow unless the loss is scaled up
before backward and the gradient scaled back down after (`LossScaler`, dynamic as
`torch.amp.GradScaler`: a step whose gradient is not finite is skipped and halves the
scale; `growth_interval` finite steps in a row double it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .tensor import Tensor, make

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16-mixed": torch.bfloat16,
    "fp16-mixed": torch.float16,
}
LOWER = (torch.bfloat16, torch.float16)


class _Autocast:
    __slots__ = ("dtype",)

    def __init__(self) -> None:
        self.dtype: torch.dtype | None = None


AUTOCAST = _Autocast()


@contextmanager
def autocast(dtype: torch.dtype | None) -> Iterator[None]:
    """Run matrix products in `dtype` (bfloat16 or float16) inside the block; None: off."""
    if dtype is not None and dtype not in LOWER:
        raise ValueError(f"autocast takes torch.bfloat16 or torch.float16, got {dtype}")
    previous = AUTOCAST.dtype
    AUTOCAST.dtype = dtype
    try:
        yield
    finally:
        AUTOCAST.dtype = previous


def compute_dtype() -> torch.dtype | None:
    return AUTOCAST.dtype


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A recorded cast whose backward passes the gradient on: the engine converts it to the
    input's type where it lands (one conversion, into the flat buffer for a weight)."""
    return make(t.data.to(dtype), (t,), lambda g: (g,), "cast")


def lower(t: Tensor | None) -> Any:
    """`t` in the autocast type when autocast is on and `t` is float32; else `t`."""
    d = AUTOCAST.dtype
    if d is None or t is None or t.data.dtype != torch.float32:
        return t
    return _cast(t, d)


def full(t: Tensor) -> Tensor:
    """`t` in float32 when autocast is on and `t` is in a lower type; else `t`."""
    if AUTOCAST.dtype is None or t.data.dtype not in LOWER:
        return t
    return _cast(t, torch.float32)


class LossScaler:
    """Dynamic loss scaling for float16 (the rules of torch.amp.GradScaler)."""

    def __init__(
        self,
        enabled: bool,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        self.enabled = enabled
        self.scale = init_scale if enabled else 1.0
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.skipped = 0  # steps skipped for a non-finite gradient (all of this run)

    def update(self, finite: bool) -> bool:
        """After unscaling a step's gradient: whether to apply it; adjusts the scale."""
        if not self.enabled:
            return True
        if not finite:
            self.scale *= self.backoff_factor
            self.good_steps = 0
            self.skipped += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0
        return True

    def state_dict(self) -> dict[str, float | int]:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped = int(state.get("skipped", 0))
