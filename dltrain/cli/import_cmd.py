"""`dltrain import`: a run from weights, without training."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, err, guarded, out, set_option


@app.command("import")
@guarded
def import_(
    weights: Path = typer.Argument(
        ...,
        help="Weights: a Keras .weights.h5/.keras/.h5 file, a .safetensors file, a run, a "
        "checkpoint or a bundle.",
    ),
    config: Path = typer.Argument(..., help="Config whose model the weights fit."),
    output: Path = typer.Option(..., "--output", "-o", help="The run directory to create."),
    set_: list[str] = set_option(),
    partial: bool = typer.Option(
        False,
        "--partial",
        help="Allow layers the file does not hold (they keep fresh weights) and unused "
        "entries; by default every layer with weights must load and every entry be used.",
    ),
) -> None:
    """Make a run from trained weights, e.g. converted from Keras, so `evaluate`, `predict`,
    `export` (and `train --resume`, to fine-tune) work on it."""
    from ..run.train import train_run
    from ..spec import load
    from ..spec.schema import LoadWeightsSpec

    spec = load(str(config), set_ or [])
    rdir = train_run(
        str(config),
        run_dir=str(output),
        log=lambda m: err.print(m, markup=False),
        spec=spec,
        import_weights=LoadWeightsSpec(path=str(weights.absolute()), strict=not partial),
    )
    out.print(f"run directory: {rdir}")
