"""`dltrain train`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .app import app, err, guarded, out, set_option


@app.command()
@guarded
def train(
    config: Path = typer.Argument(..., help="Config file."),
    set_: list[str] = set_option(),
    run_dir: Path = typer.Option(None, "--run-dir", help="Run directory (default runs/<name>)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest valid checkpoint in the run directory."
    ),
    allow: list[str] = typer.Option(
        None,
        "--allow-config-change",
        metavar="KEY",
        help="A key that may differ from the resumed run (repeatable).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Plain log lines, no progress bar."),
) -> None:
    """Train a model; writes a run directory with checkpoints, TensorBoard logs, metrics."""
    from ..run.train import train_run
    from ..spec import load
    from .progress import PlainProgress, RichProgress

    spec = load(str(config), set_ or [])
    interactive = sys.stdout.isatty() and not quiet
    progress = RichProgress(spec.train.batch_size) if interactive else PlainProgress()
    rdir = train_run(
        str(config),
        run_dir=str(run_dir) if run_dir else None,
        resume=resume,
        allow_changes=allow or [],
        progress=progress,
        log=lambda m: err.print(m),
        spec=spec,
    )
    out.print(f"run directory: {rdir}  (tensorboard --logdir {rdir / 'tensorboard'})")
