"""`dltrain train`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

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
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        metavar="N",
        help="Data-parallel processes on this machine (torch.distributed; one GPU each when "
        "there are GPUs, else the CPU cores split). For several machines use torchrun.",
    ),
) -> None:
    """Train a model; writes a run directory with checkpoints, TensorBoard logs, metrics."""
    from ..run.train import train_run
    from ..spec import load
    from .progress import PlainProgress, RichProgress

    spec = load(str(config), set_ or [])
    if nproc > 1:
        _launch(nproc, spec, config, set_ or [], run_dir, resume, allow or [], quiet)
        return
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
    if os.environ.get("RANK", "0") == "0":  # one process, or rank 0 of several
        out.print(f"run directory: {rdir}  (tensorboard --logdir {rdir / 'tensorboard'})")


def _launch(
    nproc: int,
    spec: Any,
    config: Path,
    sets: list[str],
    run_dir: Path | None,
    resume: bool,
    allow: list[str],
    quiet: bool,
) -> None:
    """Check the config once here, then start the processes (each reloads it)."""
    from ..engine.checks import check_run
    from ..engine.distributed import launched_size
    from ..errors import ConfigError
    from ..run.launch import launch_local
    from ..run.train import check_distributable

    if launched_size() > 1:
        raise ConfigError(
            "--nproc starts its own processes; under torchrun set --nproc_per_node instead"
        )
    check_run(spec)
    check_distributable(spec, nproc)
    args = [str(config)] + [a for s in sets for a in ("--set", s)]
    args += ["--run-dir", str(run_dir)] if run_dir else []
    args += ["--resume"] if resume else []
    args += [a for k in allow for a in ("--allow-config-change", k)]
    args += ["--quiet"] if quiet else []
    launch_local(nproc, args)  # rank 0 prints the run directory
