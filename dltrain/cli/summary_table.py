"""The `dltrain summary` table."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from ..spec import ModelSpec
from .app import out


def summary_dict(spec: ModelSpec) -> dict[str, Any]:
    """The summary as data: each layer's name, type, Keras output shape, parameter count
    (buffers such as BN statistics included, as Keras counts them), inputs, trainable."""
    from ..engine.layers.base import keras_shape
    from ..engine.model import compile_model

    model = compile_model(spec, device="meta")
    names = ["input"] + [layer.name for layer in model.layers]
    layers = []
    for node in model.nodes:
        layer = node.layer
        layers.append(
            {
                "name": layer.name,
                "type": layer.spec.type,
                "output_shape": [None, *keras_shape(layer.output_shape)],
                "params": layer.param_count() + sum(b.numel() for b in layer.buffers.values()),
                "inputs": [names[j] for j in node.inputs],
                "trainable": bool(layer.spec.trainable),
            }
        )
    trainable, frozen = model.param_counts()
    return {
        "input_shape": [None, *spec.input_shape],
        "layers": layers,
        "total_params": trainable + frozen,
        "trainable_params": trainable,
        "non_trainable_params": frozen,
    }


def print_summary(spec: ModelSpec, as_json: bool = False) -> None:
    if as_json:
        out.print_json(json.dumps(summary_dict(spec)))
        return
    from ..engine.layers.base import keras_shape
    from ..engine.model import compile_model

    model = compile_model(spec, device="meta")
    graph = any(n.inputs != [i] for i, n in enumerate(model.nodes))
    table = Table(title="Model summary", title_justify="left")
    table.add_column("Layer (type)", overflow="fold")  # full names, never an ellipsis
    table.add_column("Output Shape")
    table.add_column("Param #", justify="right")
    if graph:
        table.add_column("Connected to")
    names = ["input"] + [layer.name for layer in model.layers]
    for node in model.nodes:
        layer = node.layer
        n = layer.param_count() + sum(b.numel() for b in layer.buffers.values())
        shape = "(None, " + ", ".join(str(d) for d in keras_shape(layer.output_shape)) + ")"
        row = [f"{layer.name} ({layer.spec.type})", shape, f"{n:,}"]
        if graph:
            row.append(", ".join(names[j] for j in node.inputs))
        table.add_row(*row)
    out.print(table)
    trainable, frozen = model.param_counts()
    out.print(f"Total params: {trainable + frozen:,}")
    out.print(f"Trainable params: {trainable:,}")
    out.print(f"Non-trainable params: {frozen:,}")
