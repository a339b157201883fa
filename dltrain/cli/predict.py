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
    header: str = typer.Option(
        "auto",
        "--header",
        help="CSV input: auto (the first row is a header when it is not all numbers), "
        "true or false.",
    ),
) -> None:
    """Predict with a trained model on raw, unscaled inputs."""
    from ..errors import ConfigError
    from ..run.evaluate import predict_file

    if header not in ("auto", "true", "false"):
        raise ConfigError(f"--header {header}: use auto, true or false")
    n = predict_file(str(run), str(input), str(output), header)
    out.print(f"read {n} samples from {input}; wrote {n} predictions to {output}")
