"""`dltrain predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, err, guarded, out


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
        "for an audio model a .wav/.flac/.ogg file, a folder of them or a .txt list of paths; "
        "- reads standard input (CSV rows, or text lines).",
    ),
    text: list[str] = typer.Option(
        None,
        "--text",
        metavar="TEXT",
        help="A text to classify (repeatable), for models that read text.",
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help=".npy for probabilities (or values); .csv for the predicted label too (and the "
        "file of each input). Without it the predictions are printed.",
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
    dest = str(output) if output is not None else None
    n, rows = predict_file(str(run), input or "", dest, header, text or None, notes)
    src = "--text" if text else ("standard input" if input == "-" else input)
    extra = f" ({'; '.join(notes)})" if notes else ""
    if output is None:
        from rich.table import Table

        table = Table()
        table.add_column("input", overflow="fold")  # whole paths, wrapped, never cut
        table.add_column("prediction")
        table.add_column("probability", justify="right")
        table.add_column("next most likely")
        for row in rows:
            table.add_row(*row)
        out.print(table)
        err.print(f"read {n} samples from {src}{extra}")
        return
    out.print(f"read {n} samples from {src}{extra}; wrote {n} predictions to {output}")
