"""A pre-flight estimate of what one training step needs, from a model compiled on the meta
device (shapes only, nothing allocated): weights, their gradients and the optimizer's
state, and each layer's output and its gradient for one batch. `check_memory` refuses a
model that cannot fit the machine, naming the layer that needs the most, before a single
weight is allocated (a config error, exit 2, never an allocator traceback)."""

from __future__ import annotations

import math
import os
from typing import Any

from ..spec.errors import Issue, SpecError
from ..spec.limits import MEMORY_FRACTION
from .model import Model

BYTES = 4  # float32


def optimizer_slots(o: Any) -> int:
    """Tensors of state per weight: Adam's two moments (three with AMSGrad), ..."""
    t = o.type
    if t in ("adam", "adamw"):
        return 3 if o.amsgrad else 2
    if t == "sgd":
        return 1 if o.momentum else 0
    if t == "rmsprop":
        return 1 + bool(o.momentum) + bool(o.centered)
    return 1  # adagrad's sum


def machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} PB"


def step_needs(model: Model, batch_size: int, slots: int) -> list[tuple[int, str, int]]:
    """(layer index, what, bytes) for every layer's weights and activations; index -1 is
    the input batch."""
    out = [(-1, "the input batch", math.prod(model.input_shape) * batch_size * BYTES)]
    for i, node in enumerate(model.nodes):
        layer = node.layer
        n = layer.param_count() + sum(b.numel() for b in layer.buffers.values())
        out.append((i, f"{n:,} weights", n * BYTES * (2 + slots)))
        act = math.prod(layer.output_shape) * batch_size
        out.append((i, f"activations of {act:,} values per batch", act * BYTES * 2))
    return out


def check_memory(spec: Any, model: Model, where: Any, batch_size: int, slots: int) -> None:
    """SpecError naming the largest need when a training step cannot fit in memory."""
    total_mem = machine_memory()
    if total_mem is None:
        return
    needs = step_needs(model, batch_size, slots)
    total = sum(b for _, _, b in needs)
    budget = MEMORY_FRACTION * total_mem
    if total <= budget:
        return
    i, what, most = max(needs, key=lambda x: x[2])
    if i < 0:
        label, loc = f"input_shape {list(spec.input_shape)}", where(("input_shape",))
    else:
        layer = model.nodes[i].layer
        label, loc = f"{layer.spec.type} '{layer.name}'", where(("layers", i))
    raise SpecError(
        [
            Issue(
                loc,
                f"{label} needs {human(most)} ({what}); one training step needs about "
                f"{human(total)} in all, and this machine has {human(total_mem)}. Make the "
                "layer smaller (or the batch)",
            )
        ]
    )
