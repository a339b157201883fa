"""One trial of `dltrain tune`: a normal training run in its own process, which reports each
epoch's metric to the study (so the pruner can stop it at an epoch boundary) and tells the
study its outcome itself, so a trial is counted once whatever happens to the coordinator.

The coordinator writes RUN/trial.json and starts `dltrain tune-trial RUN/trial.json`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..engine.train.callbacks import Callback
from ..engine.train.schedules import improved
from ..errors import ConfigError, DltrainError, DltrainIOError, NonFiniteError

# what a finished trial process tells the study (user attribute "outcome")
COMPLETE, PRUNED, DIVERGED, INVALID, ERROR, INTERRUPTED = (
    "complete",
    "pruned",
    "diverged",
    "invalid",
    "error",
    "interrupted",
)
TRIAL_FILE_LIMIT = 1 << 20


class TrialFile(BaseModel):
    """RUN/trial.json, written by the coordinator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str
    sets: list[str]
    run_dir: str
    study_dir: str
    storage: str
    study_name: str
    trial_id: int
    number: int
    metric: str
    direction: Literal["maximize", "minimize"]
    params: dict[str, Any]
    pruner: dict[str, Any]
    epochs: int


def read_trial_file(path: Path) -> TrialFile:
    try:
        with open(path, "rb") as f:
            raw = f.read(TRIAL_FILE_LIMIT + 1)
    except OSError as e:
        raise DltrainIOError(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) > TRIAL_FILE_LIMIT:
        raise ConfigError(f"{path} is larger than {TRIAL_FILE_LIMIT} bytes")
    try:
        return TrialFile.model_validate_json(raw)
    except ValueError as e:
        raise ConfigError(f"{path} is not a dltrain trial file: {e}") from None


class TunePruning(Callback):
    """Reports the metric after every epoch and stops the run when the pruner says so (the
    epoch's checkpoint is still written: it acts before the writers)."""

    def __init__(self, trial: Any, metric: str, direction: str, prune: bool) -> None:
        self.trial, self.metric, self.prune = trial, metric, prune
        self.mode = "max" if direction == "maximize" else "min"
        self.best: float | None = None
        self.pruned_at: int | None = None
        self.epochs = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.metric not in logs:
            raise ConfigError(
                f"the search metric '{self.metric}' is not in this run's epoch logs "
                f"({', '.join(sorted(logs))})"
            )
        value = logs[self.metric]
        self.epochs = epoch + 1
        if not math.isfinite(value):
            raise NonFiniteError(f"{self.metric} is {value} at epoch {epoch + 1}")
        if improved(value, self.best, self.mode, self.metric):
            self.best = value
        self.trial.report(value, epoch + 1)
        if self.prune and self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.trainer.stop_training = True
            self.trainer.message(f"pruned after epoch {epoch + 1} ({self.metric}={value:.4g})")


def make_pruner(cfg: dict[str, Any], epochs: int) -> Any:
    import optuna

    kind = cfg.get("type", "none")
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg["n_startup_trials"], n_warmup_steps=cfg["n_warmup_steps"] + 1
        )
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg["min_resource"],
            max_resource=max(epochs, cfg["min_resource"]),
            reduction_factor=cfg["reduction_factor"],
        )
    return optuna.pruners.NopPruner()


def open_storage(url: str) -> Any:
    """An Optuna RDB storage; SQLite waits for its lock instead of failing at once, since
    the coordinator and every trial process write to the same file."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as e:  # sqlalchemy's errors are many; each means "cannot open it"
        raise DltrainIOError(f"cannot open the study storage {url}: {e}") from None


def run_trial(path: Path, progress: Callback | None = None, log: Any = print) -> int:
    """Train one trial and tell the study its outcome; returns the exit code."""
    import optuna

    from .train import train_run

    tf = read_trial_file(path)
    storage = open_storage(tf.storage)
    study = optuna.load_study(
        study_name=tf.study_name,
        storage=storage,
        pruner=make_pruner(tf.pruner, tf.epochs),
    )
    trial = optuna.trial.Trial(study, tf.trial_id)
    cb = TunePruning(trial, tf.metric, tf.direction, tf.pruner.get("type", "none") != "none")
    outcome, code, why = COMPLETE, 0, ""
    try:
        train_run(
            tf.config,
            tf.sets,
            run_dir=tf.run_dir,
            progress=progress,
            log=log,
            extra_callbacks=[cb],
        )
    except NonFiniteError as e:
        outcome, code, why = DIVERGED, e.exit_code, str(e)
    except ConfigError as e:
        outcome, code, why = INVALID, e.exit_code, str(e)
    except DltrainError as e:
        code, why = e.exit_code, str(e)
        outcome = INTERRUPTED if code >= 128 else ERROR
    if why:
        log(f"error: {why}")
    trial.set_user_attr("outcome", outcome)
    trial.set_user_attr("epochs", cb.epochs)
    if why:
        trial.set_user_attr("error", why[-2000:])
    if outcome == COMPLETE and cb.pruned_at is not None:
        outcome = PRUNED
        trial.set_user_attr("outcome", outcome)
        study.tell(tf.number, state=optuna.trial.TrialState.PRUNED)
    elif outcome == COMPLETE and cb.best is not None:
        study.tell(tf.number, cb.best)
    else:
        study.tell(tf.number, state=optuna.trial.TrialState.FAIL)
    if outcome in (COMPLETE, PRUNED):
        _hparams(tf, cb.best, outcome)
    return code


def _hparams(tf: TrialFile, value: float | None, outcome: str) -> None:
    """The trial's parameters and result for TensorBoard's HPARAMS view across trials."""
    from ..engine.train.tblog import TBLogger

    tb = TBLogger(Path(tf.study_dir) / "tensorboard" / f"trial-{tf.number:04d}", None)
    try:
        metrics = {tf.metric: float("nan") if value is None else value}
        tb.hparams({**tf.params, "trial": tf.number, "outcome": outcome}, metrics)
    finally:
        tb.close()
