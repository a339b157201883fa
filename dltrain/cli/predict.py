"""`dltrain predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, guarded, out


@app.command()
@guarded
def predict(
    run: Path = typer.Argument(..., help="Run directory or checkpoint."),
    input: str = typer.Option(
        None,
        "--input",
        "-i",
        help="Raw inputs: .npz (one array or key x), .npy, .csv, an image or a folder of "
        "images; for a text model a .txt file (a sample per line) or a folder of .txt files; "
        "- reads standard input (CSV rows, or text lines).",
    ),
    text: list[str] = typer.Option(
        None,
        "--text",
        metavar="TEXT",
        help="A text to classify (repeatable), for models that read text.",
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
    if (input is None) == (not text):
        raise ConfigError(
            "give the inputs with --input FILE (or -i - for standard input) or --text"
        )
    notes: list[str] = []
    n = predict_file(str(run), input or "", str(output), header, text or None, notes)
    src = "--text" if text else ("standard input" if input == "-" else input)
    extra = f" ({'; '.join(notes)})" if notes else ""
    out.print(f"read {n} samples from {src}{extra}; wrote {n} predictions to {output}")
