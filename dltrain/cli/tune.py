"""`dltrain tune` (hyperparameter search on Optuna) and the hidden `dltrain tune-trial`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from .app import app, err, guarded, out, set_option


@app.command()
@guarded
def tune(
    config: Path = typer.Argument(..., help="Config file to search around."),
    space: Path = typer.Option(..., "--space", help="Search space YAML (see the README)."),
    study_dir: Path = typer.Option(
        ..., "--study-dir", help="Where the trials' run directories, study.db and best.yaml go."
    ),
    trials: int = typer.Option(
        None, "--trials", min=1, help="Trials to finish, counting the study's earlier ones."
    ),
    timeout: float = typer.Option(
        None, "--timeout", min=0.001, help="Seconds after which no new trial starts."
    ),
    storage: str = typer.Option(
        None,
        "--storage",
        help="Optuna storage URL (default: sqlite in the study directory; e.g. "
        "postgresql://... for a study shared by many machines).",
    ),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Trials run at once (processes)."),
    set_: list[str] = set_option("Override a config key for every trial (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Search hyperparameters: each trial is a normal run; the study lives in an Optuna
    storage, so running the command again continues it."""
    from ..run.tune import Tuner

    tuner = Tuner(
        str(config),
        str(space),
        study_dir,
        trials,
        timeout,
        storage,
        jobs,
        set_ or [],
        log=lambda m: err.print(m, markup=False),
    )
    res = tuner.run()
    if as_json:
        out.print_json(json.dumps(res))
        return
    _table(res)


def _table(res: dict[str, Any]) -> None:
    from rich.table import Table

    from ..run.tune import fmt_value

    c = res["counts"]
    t = Table(
        title=f"study {res['study']}: {res['metric']} ({res['direction']}), "
        f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
    )
    names = sorted({k for tr in res["trials"] for k in tr["params"]})
    short = [k.rsplit(".", 1)[-1] for k in names]
    if len(set(short)) < len(short):
        short = names
    for col in ["#", "state", res["metric"], *short, "epochs", "time"]:
        t.add_column(col, justify="right" if col not in ("state",) else "left")
    best = res["best"]["number"] if res["best"] else None
    for tr in res["trials"]:
        state = tr["outcome"] or tr["state"]
        value = "" if tr["value"] is None else f"{tr['value']:.6g}"
        params = [fmt_value(tr["params"].get(k, "")) for k in names]
        secs = "" if tr["seconds"] is None else f"{tr['seconds']:.1f} s"
        mark = "*" if tr["number"] == best else ""
        t.add_row(f"{tr['number']}{mark}", state, value, *params, str(tr["epochs"] or ""), secs)
    out.print(t)
    if res["best"]:
        b = res["best"]
        out.print(f"best: trial {b['number']}, {res['metric']}={b['value']:.6g}")
        out.print(f"best config: {b['config']}  (dltrain train {b['config']})")
        out.print(f"best run: {b['run_dir']}")


@app.command("tune-trial", hidden=True)
@guarded
def tune_trial(trial_file: Path = typer.Argument(...)) -> None:
    """One trial of a study (started by `dltrain tune`)."""
    from ..run.tune_trial import run_trial
    from .progress import PlainProgress

    code = run_trial(trial_file, PlainProgress(), log=lambda m: err.print(m, markup=False))
    raise typer.Exit(code)
