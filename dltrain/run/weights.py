"""Transfer learning: start a model from trained weights, matched by layer name as Keras's
`load_weights(by_name=True)` does. Weights and buffers (batch-norm statistics) are named
`<layer>.<weight>` in checkpoints, bundles and .safetensors files alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..engine import checkpoint as ck
from ..engine.model import Model
from ..errors import ConfigError


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.is_file():
        return ck.read_tensors(path)
    if (path / "spec.json").exists():  # an exported bundle
        ck.verify(path)
        return ck.read_tensors(path / "model.safetensors")
    return ck.read_tensors(ck.resolve(path) / "model.safetensors")


def load_initial_weights(
    model: Model, spec: Any, cfg_dir: str, where: str, log: Callable[[str], None]
) -> None:
    """Copy the matching weights of `spec` (a LoadWeightsSpec) into the model in place."""
    from .keras_weights import is_keras_file, keras_tensors

    path = Path(spec.path if os.path.isabs(spec.path) else os.path.join(cfg_dir, spec.path))
    if is_keras_file(path):
        if not path.exists():
            raise ConfigError(f"{where}: {path} does not exist")
        tensors = keras_tensors(path, model, where)
    else:
        tensors = _read(path)
    own = model.state_tensors()
    by_layer: dict[str, list[str]] = {}
    for key in own:
        by_layer.setdefault(key.split(".", 1)[0], []).append(key)
    in_file = {k.split(".", 1)[0] for k in tensors}
    wanted = spec.layers if spec.layers is not None else sorted(set(by_layer) & in_file)
    problems = [
        f"layers names '{n}', which is not a layer with weights in the model"
        for n in wanted
        if n not in by_layer
    ] + [f"layers names '{n}', which {path} does not hold" for n in wanted if n not in in_file]
    if not wanted:
        problems.append(
            f"none of the model's layers ({', '.join(sorted(by_layer)) or 'none'}) is named in "
            f"{path}; give the layers the names they had there"
        )
    loaded, skipped = [], []
    for name in wanted:
        if name not in by_layer:
            continue  # reported above
        keys = by_layer[name]
        bad = [k for k in keys if k not in tensors or tensors[k].shape != own[k].shape]
        if bad:
            k = bad[0]
            have = tuple(tensors[k].shape) if k in tensors else "nothing"
            if spec.skip_mismatch:
                skipped.append(name)
                continue
            problems.append(
                f"layer '{name}': {k} is {tuple(own[k].shape)} in the model but {have} in "
                f"{path}; fix the layer or set skip_mismatch: true"
            )
            continue
        with torch.no_grad():
            for k in keys:
                own[k].copy_(tensors[k].to(own[k].dtype))
        loaded.append(name)
    done = {k for name in loaded for k in by_layer.get(name, [])}
    fresh = [n for n in by_layer if n not in loaded]  # in model order
    unused = sorted(k for k in tensors if k not in done)
    if spec.strict and (fresh or unused or skipped):
        problems.append(
            "strict: true, but "
            + "; ".join(
                part
                for part in (
                    f"layers keep fresh weights: {', '.join(fresh)}" if fresh else "",
                    f"entries of the file are unused: {_listed(unused)}" if unused else "",
                )
                if part
            )
        )
    if problems:
        raise ConfigError("\n".join(f"{where}: {p}" for p in problems))
    log(
        f"loaded the weights of {len(loaded)} layer(s) from {path}: {', '.join(loaded)}"
        + (f"; skipped (shapes differ): {', '.join(skipped)}" if skipped else "")
        + (f"; kept fresh weights: {', '.join(fresh)}" if fresh else "")
        + (f"; unused in the file: {_listed(unused)}" if unused else "")
    )


def _listed(keys: list[str], n: int = 8) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
