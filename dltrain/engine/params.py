"""Parameters and gradients as views into one flat buffer per device and dtype.

With one buffer, zeroing gradients is one memset, the optimizer update is a handful of
whole-buffer ops (or one fused kernel), and a data-parallel all-reduce is one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .tensor import Tensor


class FlatParams:
    """Owns `data` and `grad` buffers; each parameter's `.data` / `.grad` is a view."""

    def __init__(self, params: Sequence[Tensor], extra: int = 0) -> None:
        """`extra` slots follow the gradient in one allocation (`grad_and_extra`): small
        flags a data-parallel step all-reduces in the same call as the gradient."""
        params = list(params)
        if not params:
            raise ValueError("FlatParams needs at least one parameter")
        dev, dt = params[0].device, params[0].dtype
        for p in params:
            if p.device != dev or p.dtype != dt:
                raise ValueError(
                    f"one flat buffer holds one device and dtype; got {p.device}/{p.dtype} "
                    f"next to {dev}/{dt}"
                )
        total = sum(p.numel() for p in params)
        self.params = params
        self.data = torch.empty(total, dtype=dt, device=dev)
        self.grad_and_extra = torch.zeros(total + extra, dtype=dt, device=dev)
        self.grad = self.grad_and_extra[:total]
        self.extra = self.grad_and_extra[total:]
        offset = 0
        for p in params:
            n = p.numel()
            view = self.data[offset : offset + n].view(p.shape)
            view.copy_(p.data)
            p.data = view
            p.grad_buffer = self.grad[offset : offset + n].view(p.shape)
            p.grad = p.grad_buffer
            offset += n

    def zero_grad(self) -> None:
        """Mark every gradient empty; backward copies the first contribution into the
        buffer (no memset, no read of zeros)."""
        for p in self.params:
            p.grad = None

    def sync_grads(self) -> None:
        """Make `grad` hold every parameter's gradient: zero the slots nobody wrote, copy in
        gradients that were assigned from outside."""
        for p in self.params:
            buf = p.grad_buffer
            assert buf is not None  # every parameter has its slot (set in __init__)
            if p.grad is None:
                buf.zero_()
            elif p.grad is not buf:
                buf.copy_(p.grad)
            p.grad = buf

    def __len__(self) -> int:
        return self.data.numel()
