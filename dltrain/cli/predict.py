"""`dltrain predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, guarded, out


@app.command()
@guarded
def predict(
    run: Path = typer.Argument(..., help="Run directory or checkpoint."),
    input: Path = typer.Option(
        ...,
        "--input",
        "-i",
        help="Raw inputs: .npz (one array or key x), .npy, .csv, an image or a folder of images.",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help=".npy for probabilities (or values); .csv for the predicted label too.",
    ),
) -> None:
    """Predict with a trained model on raw, unscaled inputs."""
    from ..run.evaluate import predict_file

    n = predict_file(str(run), str(input), str(output))
    out.print(f"wrote {n} predictions to {output}")
