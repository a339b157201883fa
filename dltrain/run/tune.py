"""`dltrain tune`: hyperparameter search on Optuna.

The study lives in an Optuna storage (a SQLite file in the study directory unless
`--storage` names another database). This process is a coordinator: it checks the space
against the config before anything is written, asks the study for trials and runs each one
as a normal training run in its own process (`dltrain tune-trial`), up to `--jobs` at once.
A trial process reports every epoch's metric (the pruner may stop it at an epoch boundary)
and tells the study its own outcome, so a trial is never counted twice.

Counting: a trial is finished when it completed, was pruned, diverged (non-finite loss) or
made an invalid config; a trial stopped from outside (kill -9 of the coordinator, Ctrl-C) is
marked failed and its parameters are tried again, so `--trials N` ends with N finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DltrainError, DltrainIOError
from ..fsutil import RunLock, atomic_write_text, make_dir
from ..spec.tune import load_space
from .tune_space import check_space, distribution, own_values, setting
from .tune_trial import (
    COMPLETE,
    DIVERGED,
    ERROR,
    INTERRUPTED,
    INVALID,
    PRUNED,
    make_pruner,
    open_storage,
)

Log = Callable[[str], None]
DEFAULT_TRIALS = 10
FINISHED_OUTCOMES = (COMPLETE, PRUNED, DIVERGED, INVALID)


# -- the study ---------------------------------------------------------------------------------
@dataclass
class Running:
    number: int
    trial_id: int
    proc: subprocess.Popen[bytes]
    run_dir: Path
    started: float = field(default_factory=time.monotonic)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the coordinators of one study directory (blocking)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover
            pass
        yield
    finally:
        os.close(fd)


def _die_with_parent() -> None:  # pragma: no cover  (runs in the child before exec)
    """A trial process dies with its coordinator (Linux), so a killed study leaves no orphan
    training on; its trial is then failed and retried by the next `dltrain tune`."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def make_sampler(cfg: dict[str, Any], seed: int) -> Any:
    import optuna

    if cfg["type"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg["n_startup_trials"])


def _finished(t: Any) -> bool:
    import optuna

    s = t.state
    return s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) or (
        s == optuna.trial.TrialState.FAIL and t.user_attrs.get("outcome") in FINISHED_OUTCOMES
    )


def _worker_alive(study_dir: Path, worker: str) -> bool:
    host = socket.gethostname()
    if not worker.startswith(host + "-"):
        return True  # another machine's: it reports itself
    wdir = study_dir / "workers" / worker
    if not wdir.exists():
        return False
    try:
        with RunLock(wdir):
            return False
    except DltrainIOError:
        return True


class Tuner:
    def __init__(
        self,
        config: str,
        space_path: str,
        study_dir: Path,
        trials: int | None,
        timeout: float | None,
        storage: str | None,
        jobs: int,
        sets: Sequence[str],
        log: Log,
    ) -> None:
        self.config = os.path.abspath(config)
        self.sets = list(sets)
        self.space, sdoc = load_space(space_path)
        self.spec = check_space(self.config, self.sets, self.space, sdoc)
        sp = self.space
        self.metric = sp.metric
        if sp.direction is not None:
            self.direction = sp.direction
        else:
            from ..engine.train.schedules import mode_for

            self.direction = "maximize" if mode_for(sp.metric, "auto") == "max" else "minimize"
        self.target = trials or sp.trials or (None if (timeout or sp.timeout) else DEFAULT_TRIALS)
        self.timeout = timeout or sp.timeout
        self.jobs = jobs
        self.log = log
        self.study_dir = study_dir.resolve() if study_dir.exists() else study_dir.absolute()
        self.storage_url = storage or f"sqlite:///{self.study_dir / 'study.db'}"
        self.study_name = sp.study_name or self.spec.name
        self.seed = sp.sampler.seed if sp.sampler.seed is not None else self.spec.seed
        self.dists = {k: distribution(p) for k, p in sp.params.items()}
        self.running: dict[int, Running] = {}
        self.crashes = 0

    # -- storage -------------------------------------------------------------------------
    def open(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        make_dir(self.study_dir)
        make_dir(self.study_dir / "trials")
        self.storage = open_storage(self.storage_url)
        pruner = make_pruner(self.space.pruner.model_dump(), self.spec.train.epochs)
        try:
            self.study = optuna.create_study(
                storage=self.storage,
                study_name=self.study_name,
                direction=self.direction,
                pruner=pruner,
                load_if_exists=True,
            )
        except Exception as e:  # the database's own errors: unreachable, not a study...
            raise DltrainIOError(
                f"cannot open study '{self.study_name}' in {self.storage_url}: {e}"
            ) from None
        if self.study.direction.name.lower() != self.direction:
            raise ConfigError(
                f"study '{self.study_name}' in {self.storage_url} was created to "
                f"{self.study.direction.name.lower()} its metric; this space asks to "
                f"{self.direction}: use another study_name or --study-dir"
            )
        space_key = json.dumps(
            {k: p.model_dump(by_alias=True) for k, p in self.space.params.items()},
            sort_keys=True,
        )
        attrs = self.study.user_attrs
        if "space" not in attrs:
            self.study.set_user_attr("space", space_key)
            self.study.set_user_attr("metric", self.metric)
            self.study.set_user_attr("config", self.config)
        elif attrs["space"] != space_key or attrs.get("metric") != self.metric:
            raise ConfigError(
                f"study '{self.study_name}' in {self.storage_url} searches another space or "
                "metric; continue it with the same space file, or start a new study "
                "(another --study-dir or study_name)"
            )

    def _recover(self) -> None:
        """Fail (and queue again) trials left running by a coordinator that is gone."""
        import optuna

        for t in self.study.get_trials(deepcopy=False):
            if t.state != optuna.trial.TrialState.RUNNING or t.number in self.running:
                continue
            if _worker_alive(self.study_dir, str(t.user_attrs.get("worker", ""))):
                continue
            self.storage.set_trial_user_attr(t._trial_id, "outcome", INTERRUPTED)
            self.storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            self.log(f"trial {t.number} was interrupted (its coordinator is gone): queued again")

    def counts(self) -> dict[str, int]:
        import optuna

        S = optuna.trial.TrialState
        c = {"finished": 0, "complete": 0, "pruned": 0, "failed": 0, "running": 0}
        for t in self.study.get_trials(deepcopy=False):
            if _finished(t):
                c["finished"] += 1
            c["complete"] += t.state == S.COMPLETE
            c["pruned"] += t.state == S.PRUNED
            c["failed"] += t.state == S.FAIL
            c["running"] += t.state == S.RUNNING
        return c

    # -- trials --------------------------------------------------------------------------
    def _start(self) -> bool:
        """Ask for a trial and start its process; False when the study has enough."""
        with _file_lock(self.study_dir / ".ask.lock"):
            self._recover()
            c = self.counts()
            if self.target is not None and c["finished"] + c["running"] >= self.target:
                return False
            trials = self.study.get_trials(deepcopy=False)
            if not trials and self.space.baseline:
                own = own_values(self.spec, self.space)
                if own is not None:
                    self.study.enqueue_trial(own, user_attrs={"baseline": True})
            self.study.sampler = make_sampler(
                self.space.sampler.model_dump(), self.seed + len(trials)
            )
            trial = self.study.ask(self.dists)
            run_dir = self.study_dir / "trials" / f"trial-{trial.number:04d}"
            trial.set_user_attr("worker", self.worker)
            trial.set_user_attr("run_dir", str(run_dir))
        make_dir(run_dir)
        sets = [*self.sets, *(setting(k, v) for k, v in trial.params.items())]
        tf = {
            "config": self.config,
            "sets": sets,
            "run_dir": str(run_dir),
            "study_dir": str(self.study_dir),
            "storage": self.storage_url,
            "study_name": self.study_name,
            "trial_id": trial._trial_id,
            "number": trial.number,
            "metric": self.metric,
            "direction": self.direction,
            "params": trial.params,
            "pruner": self.space.pruner.model_dump(),
            "epochs": self.spec.train.epochs,
        }
        atomic_write_text(run_dir / "trial.json", json.dumps(tf, indent=1))
        env = dict(os.environ)
        env.setdefault("DLTRAIN_THREADS", str(max(1, (os.cpu_count() or 1) // self.jobs)))
        with open(run_dir / "tune.log", "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dltrain", "tune-trial", str(run_dir / "trial.json")],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self.running[trial.number] = Running(trial.number, trial._trial_id, proc, run_dir)
        shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in trial.params.items())
        self.log(f"trial {trial.number} started: {shown}")
        return True

    def _reap(self) -> None:
        import optuna

        for number, r in list(self.running.items()):
            code = r.proc.poll()
            if code is None:
                continue
            del self.running[number]
            t = self.study._storage.get_trial(r.trial_id)
            if t.state == optuna.trial.TrialState.RUNNING:  # died before it told the study
                self.storage.set_trial_user_attr(r.trial_id, "outcome", "crashed")
                self.storage.set_trial_user_attr(r.trial_id, "error", _tail(r.run_dir))
                self.storage.set_trial_state_values(r.trial_id, optuna.trial.TrialState.FAIL)
                t = self.study._storage.get_trial(r.trial_id)
            outcome = t.user_attrs.get("outcome", "crashed")
            secs = time.monotonic() - r.started
            c = self.counts()
            tally = (
                f"[{c['finished']}{'/' + str(self.target) if self.target else ''} finished, "
                f"{c['running']} running, {c['pruned']} pruned]"
            )
            if outcome == COMPLETE:
                self.log(
                    f"trial {number} complete: {self.metric}={t.value:.6g} ({secs:.1f} s) {tally}"
                )
            elif outcome == PRUNED:
                self.log(
                    f"trial {number} pruned after {t.user_attrs.get('epochs')} epoch(s) {tally}"
                )
            else:
                self.log(f"trial {number} {outcome}: {t.user_attrs.get('error', '')} {tally}")
            if outcome in (ERROR, "crashed") and code < 128:
                self.crashes += 1
                if outcome == ERROR or self.crashes >= 3:
                    e = DltrainError(
                        f"trial {number} failed (its log: {r.run_dir / 'tune.log'}): "
                        f"{t.user_attrs.get('error', '')}".rstrip(": ")
                    )
                    e.exit_code = code if 0 < code < 128 else 1
                    raise e

    def run(self) -> dict[str, Any]:
        self.open()
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        deadline = time.monotonic() + self.timeout if self.timeout else None
        with RunLock(self.study_dir / "workers" / self.worker):
            try:
                while True:
                    more = deadline is None or time.monotonic() < deadline
                    while more and len(self.running) < self.jobs:
                        if not self._start():
                            more = False
                    if not self.running:
                        if not more:
                            break
                        continue
                    time.sleep(0.2)
                    self._reap()
            finally:
                self._stop_children()
        return self.summary()

    def _stop_children(self) -> None:
        """On an error or Ctrl-C: the trial processes save and stop (SIGTERM), then are
        failed and queued again by the next run."""
        import signal

        for r in self.running.values():
            with contextlib.suppress(OSError):
                r.proc.send_signal(signal.SIGTERM)
        for r in self.running.values():
            try:
                r.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()

    # -- results -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        trials = []
        for t in self.study.get_trials(deepcopy=False):
            secs = (
                (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else None
            )
            trials.append(
                {
                    "number": t.number,
                    "state": t.state.name.lower(),
                    "outcome": t.user_attrs.get("outcome"),
                    "value": t.value,
                    "params": t.params,
                    "epochs": t.user_attrs.get("epochs"),
                    "seconds": secs,
                    "run_dir": t.user_attrs.get("run_dir"),
                }
            )
        out: dict[str, Any] = {
            "study": self.study_name,
            "storage": self.storage_url,
            "metric": self.metric,
            "direction": self.direction,
            "counts": self.counts(),
            "trials": trials,
            "best": None,
        }
        done = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if done:
            best = self.study.best_trial
            run_dir = str(best.user_attrs.get("run_dir"))
            best_yaml = self.study_dir / "best.yaml"
            write_best_config(Path(run_dir), best_yaml, best, self.metric, Path(self.config).parent)
            out["best"] = {
                "number": best.number,
                "value": best.value,
                "params": best.params,
                "run_dir": run_dir,
                "config": str(best_yaml),
            }
        return out


def write_best_config(run_dir: Path, dest: Path, trial: Any, metric: str, config_dir: Path) -> None:
    """The best trial's resolved config as a ready-to-train YAML (data paths made absolute,
    since the file lives in the study directory)."""
    try:
        doc = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DltrainIOError(f"cannot read the best trial's config in {run_dir}: {e}") from None
    data = doc.get("data") or {}
    for key in ("train", "validation", "test"):
        src = data.get(key)
        if isinstance(src, dict) and isinstance(src.get("path"), str):
            if not os.path.isabs(src["path"]):
                src["path"] = str((config_dir / src["path"]).resolve())
    params = ", ".join(f"{k}={fmt_value(v)}" for k, v in trial.params.items())
    head = (
        f"# best trial {trial.number} of a dltrain tune study: {metric}={trial.value:.6g}\n"
        f"# {params}\n# run: {run_dir}\n"
    )
    atomic_write_text(dest, head + yaml.safe_dump(doc, sort_keys=False))


def fmt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _tail(run_dir: Path, n: int = 600) -> str:
    try:
        with open(run_dir / "tune.log", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""
