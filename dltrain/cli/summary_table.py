"""The `dltrain summary` table."""

from __future__ import annotations

from rich.table import Table

from ..spec import ModelSpec
from .app import out


def print_summary(spec: ModelSpec) -> None:
    from ..engine.layers.base import keras_shape
    from ..engine.model import compile_model

    model = compile_model(spec, device="meta")
    graph = any(n.inputs != [i] for i, n in enumerate(model.nodes))
    table = Table(title="Model summary", title_justify="left")
    table.add_column("Layer (type)")
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
