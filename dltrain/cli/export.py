"""`dltrain export`."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, guarded, out


@app.command()
@guarded
def export(
    run: Path = typer.Argument(..., help="Run directory or checkpoint."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or safetensors."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="model.onnx, or a directory for the safetensors bundle."
    ),
) -> None:
    """Export a trained model with its preprocessing: ONNX (opset 17) or a safetensors bundle."""
    from ..export import export_checkpoint

    path = export_checkpoint(str(run), fmt, str(output))
    out.print(f"wrote {path}")
