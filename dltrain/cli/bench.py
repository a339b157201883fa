"""`dltrain bench`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import ConfigError
from .app import app, guarded, out


@app.command()
@guarded
def bench(
    config: Path = typer.Argument(..., help="Config file."),
    steps: int = typer.Option(50, "--steps", help="Timed steps (after 10 warm-up)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    precision: str = typer.Option(
        None,
        "--precision",
        help="fp32, bf16-mixed or fp16-mixed (default: the config's train.precision).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Time full training steps (forward, backward, optimizer) of a config here."""
    from ..engine.bench import bench as run_bench
    from ..engine.precision import PRECISIONS
    from ..run.host import setup_training_process
    from ..run.train import pick_device
    from ..spec import load

    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    setup_training_process()  # as `dltrain train` runs (threads, freed memory kept)
    res = run_bench(load(str(config)), steps, 10, str(pick_device(device)), precision)
    if as_json:
        print(json.dumps(res))
        return
    out.print(
        f"{res['config']} on {res['device']} ({res['threads']} threads), {res['precision']}, batch "
        f"{res['batch_size']}: {res['ms_per_step']:.3f} ms/step (forward "
        f"{res['forward_ms']:.3f}, backward {res['backward_ms']:.3f}, optimizer "
        f"{res['optimizer_ms']:.3f})"
    )
