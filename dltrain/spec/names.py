"""Keras 3's default layer names: the type in snake case, then a counter that starts with
no suffix (dense, dense_1, dense_2; conv2d_transpose, re_lu, batch_normalization_1), skipping
names the config gives explicitly so every name stays unique."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def snake(type_name: str) -> str:
    """'Conv2DTranspose' -> 'conv2d_transpose', 'ReLU' -> 're_lu' (Keras's to_snake_case)."""
    base = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", type_name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", base).lower()


def default_names(layers: Sequence[Any]) -> list[str]:
    """Each layer's name (specs or their JSON dicts, with `type` and `name`)."""
    return _names(layers, keras=True)


def legacy_names(layers: Sequence[Any]) -> list[str]:
    """The names dltrain 0.1 gave (dense_1, dense_2: the counter started at 1, explicit
    names not skipped), to read checkpoints it wrote."""
    return _names(layers, keras=False)


def _names(layers: Sequence[Any], keras: bool) -> list[str]:
    taken = {_get(ls, "name") for ls in layers if _get(ls, "name")} if keras else set()
    counts: dict[str, int] = {}
    out = []
    for ls in layers:
        name = _get(ls, "name")
        while not name:
            base = snake(_get(ls, "type"))
            n = counts.get(base, 0)
            counts[base] = n + 1
            if not keras:
                n += 1
            candidate = base if keras and n == 0 else f"{base}_{n}"
            name = None if candidate in taken else candidate
        taken.add(name)
        out.append(name)
    return out


def _get(ls: Any, key: str) -> Any:
    return ls.get(key) if isinstance(ls, dict) else getattr(ls, key, None)
