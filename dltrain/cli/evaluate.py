"""`dltrain evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .app import app, guarded, out


@app.command()
@guarded
def evaluate(
    run: Path = typer.Argument(..., help="Run directory or checkpoint."),
    data: str = typer.Option(
        "test",
        "--data",
        help="test, validation, train, an .npz file with arrays x and y, or a file or folder "
        "like the training data's (a CSV with its label column, a class-subfolder folder of "
        "images or texts; class names map onto the run's)",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object of metric name to value."
    ),
) -> None:
    """Metrics of a trained model on the test split (else validation), per-class report."""
    from ..run.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(str(run), data)
    if as_json:
        print(json.dumps(res.metrics))
        return
    table = Table(title=f"{res.split}: {res.n} samples ({res.checkpoint})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in res.metrics.items():
        table.add_row(k, f"{v:.4f}")
    out.print(table)
    if res.per_class:
        rep = Table(title="per class", title_justify="left")
        for c in ("class", "precision", "recall", "f1", "support"):
            rep.add_column(c, justify="right")
        for row in res.per_class:
            rep.add_row(
                row["class"],
                f"{row['precision']:.3f}",
                f"{row['recall']:.3f}",
                f"{row['f1']:.3f}",
                str(row["support"]),
            )
        out.print(rep)
        cm = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
        cm.add_column("")
        for name in res.class_names:
            cm.add_column(name[:8], justify="right")
        for name, counts in zip(res.class_names, res.confusion):
            cm.add_row(name[:8], *[str(v) for v in counts])
        out.print(cm)
