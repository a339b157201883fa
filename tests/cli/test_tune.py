"""`dltrain tune`: Optuna studies of real runs, checked through Optuna's own API on the study
storage, TensorBoard's reader and the trials' run directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT, cli_env, dltrain, wait_for_file

optuna = pytest.importorskip("optuna")

IRIS = str(ROOT / "configs" / "iris.yaml")
SPACE = """\
metric: val_accuracy
direction: maximize
params:
  optimizer.learning_rate: {loguniform: [0.001, 0.1]}
  model.layers[0].units: {int: [4, 32]}
pruner: {type: none}
"""


def _study(study_dir: Path, name: str = "iris") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}")


def _own_is_no_better(tmp_path: Path, epochs: list[str], study: optuna.Study) -> None:
    own = tmp_path / "own"
    r = dltrain("train", IRIS, "--run-dir", str(own), "-q", *epochs, env={"DLTRAIN_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert study.best_value >= max(m["val_accuracy"] for m in _metrics(own))


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("n", [3, pytest.param(8, marks=pytest.mark.slow)])
def test_study_two_jobs_best_config_reproduces(tmp_path: Path, n: int) -> None:
    """n trials, two at a time: the intervals overlap in the storage, every trial is a run
    directory, the baseline (the config's own values) is trial 0, the best is at least as
    good as the config trained on its own, and best.yaml trains to the best trial's value."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    sd = tmp_path / "study"
    epochs = ["--set", "train.epochs=4", "--set", "callbacks=[]"]
    r = dltrain(
        "tune", IRIS, "--space", str(space), "--study-dir", str(sd), "--trials", str(n),
        "--jobs", "2", "--json", *epochs,
        env={"DLTRAIN_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    study = _study(sd)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * n
    assert res["counts"]["complete"] == n and len(res["trials"]) == n
    # concurrency: two trials ran at the same time
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans
    # trial 0 is the config's own values
    assert trials[0].params == {"optimizer.learning_rate": 0.01, "model.layers[0].units": 16}
    assert trials[0].user_attrs.get("baseline") is True
    # each trial is a normal run whose config holds the trial's values
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        assert (run / "checkpoints").is_dir()
        cfg = (run / "config.yaml").read_text()
        assert f"units: {t.params['model.layers[0].units']}" in cfg
        assert max(m["val_accuracy"] for m in _metrics(run)) == pytest.approx(t.value, abs=0)
    best = res["best"]
    assert best["number"] == study.best_trial.number and best["value"] == study.best_value
    assert best["params"] == study.best_trial.params
    # the config on its own does no better than the study's best (trial 0 is the config's
    # own values, so this is checked once, in the slow 8-trial study)
    if n >= 8:
        _own_is_no_better(tmp_path, epochs, study)
    # best.yaml: ready to train, and it reproduces the best trial's metric
    again = tmp_path / "again"
    r = dltrain("train", best["config"], "--run-dir", str(again), "-q",
                env={"DLTRAIN_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _metrics(again) == _metrics(Path(best["run_dir"]))
    # TensorBoard's HPARAMS view: one session per trial with its parameters and result
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    sessions = sorted((sd / "tensorboard").iterdir())
    assert [p.name for p in sessions] == [f"trial-{i:04d}" for i in range(n)]
    acc = EventAccumulator(str(sessions[0]))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["model.layers[0].units"].number_value == 16
    assert acc.Scalars("hparam/val_accuracy")[0].value == pytest.approx(trials[0].value)
    # running the same command again continues the study: nothing new to do
    from typer.testing import CliRunner

    from dltrain.cli import app

    args = ["tune", IRIS, "--space", str(space), "--study-dir", str(sd), "--trials", str(n)]
    res2 = CliRunner().invoke(app, [*args, *epochs])
    assert res2.exit_code == 0, res2.output
    assert len(_study(sd).get_trials()) == n
    assert "best: trial" in res2.output


def test_pruner_stops_divergent_trials_early(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "metric: val_accuracy\n"
        "params:\n"
        "  optimizer.learning_rate: {choice: [0.01, 0.00001]}\n"
        "sampler: {type: random, seed: 3}\n"
        "pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 1}\n"
    )
    sd = tmp_path / "study"
    r = dltrain(
        "tune", IRIS, "--space", str(space), "--study-dir", str(sd), "--trials", "4",
        "--jobs", "2", "--set", "train.epochs=5", "--set", "callbacks=[]",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    trials = _study(sd).get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) > 0, r.stderr
    for t in pruned:
        assert t.params["optimizer.learning_rate"] == 0.00001
        epochs = len(_metrics(Path(t.user_attrs["run_dir"])))
        assert 2 <= epochs < 5  # ran its warm-up, then stopped early with a checkpoint
        assert list((Path(t.user_attrs["run_dir"]) / "checkpoints").glob("step-*"))
    assert "pruned" in r.stderr


@pytest.mark.slow
def test_kill_9_mid_study_then_again_finishes_exactly(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    sd = tmp_path / "study"
    cmd = [sys.executable, "-m", "dltrain", "tune", IRIS, "--space", str(space),
           "--study-dir", str(sd), "--trials", "3", "--set", "train.epochs=40"]  # fmt: skip
    env = cli_env(DLTRAIN_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # a sign that trial 1 is training: its first epoch's line
        wait_for_file(sd / "trials" / "trial-0001" / "metrics.jsonl", proc, nonempty=True)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    trials = _study(sd).get_trials()
    S = optuna.trial.TrialState
    complete = [t for t in trials if t.state == S.COMPLETE]
    assert len(complete) == 3
    failed = [t for t in trials if t.state == S.FAIL]
    assert [t.user_attrs["outcome"] for t in failed] == ["interrupted"]
    assert failed[0].number == 1
    # retried with the same parameters under a new number; no run counted twice
    retry = [t for t in complete if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    assert len({t.user_attrs["run_dir"] for t in complete}) == 3
    assert not [t for t in trials if t.state == S.RUNNING]


BAD = [
    ("params:\n  optimizer.learning_rat: {loguniform: [0.001, 0.1]}\n", "2:3", "learning_rate"),
    ("params:\n  optimizer.learning_rate: {loguniform: [0.1, 0.001]}\n", "2:", "below high"),
    ("params:\n  model.layers[0].units: {choice: []}\n", "2:", "at least 1 item"),
    ("params:\n  model.layers[0].units: {uniform: [4, 32]}\n", "2:3", "valid integer"),
    ("params:\n  model.layers[0].units: {int: [4, many]}\n", "2:", "valid integer"),
    ("params:\n  model.layers[0].units: {choice: [8, relu]}\n", "2:3", "valid integer"),
    ("params:\n  model.layers[7].units: {int: [4, 8]}\n", "2:3", "not an index"),
    ("metric: val_acc\nparams:\n  model.layers[0].units: {int: [4, 8]}\n", "1:9", "val_accuracy"),
    ("params:\n  model.layers[0].units: {int: [4, 8], choice: [1]}\n", "2:", "exactly one"),
    ("params: {}\n", "1:9", "at least 1"),
    ("param:\n  model.layers[0].units: {int: [4, 8]}\n", "1:1", "unknown key 'param'"),
]


@pytest.mark.parametrize("text,where,what", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_space_is_a_config_error_at_its_line(
    tmp_path: Path, text: str, where: str, what: str
) -> None:
    from typer.testing import CliRunner

    from dltrain.cli import app

    space = tmp_path / "space.yaml"
    space.write_text(text)
    sd = tmp_path / "study"
    res = CliRunner().invoke(app, ["tune", IRIS, "--space", str(space), "--study-dir", str(sd)])
    assert res.exit_code == 2, res.output
    assert f"space.yaml:{where}" in res.output and what in res.output, res.output
    assert not sd.exists()  # nothing written


def test_pruner_and_sampler_choices_build_optunas_own():
    from dltrain.run.tune import make_sampler
    from dltrain.run.tune_trial import make_pruner
    from dltrain.spec.tune import PrunerSpec, SamplerSpec

    hb = make_pruner(PrunerSpec(type="hyperband", min_resource=2).model_dump(), 9)
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    assert (hb._min_resource, hb._max_resource) == (2, 9)
    med = make_pruner(PrunerSpec(n_warmup_steps=2).model_dump(), 9)
    assert isinstance(med, optuna.pruners.MedianPruner) and med._n_warmup_steps == 3  # epochs
    assert isinstance(
        make_pruner(PrunerSpec(type="none").model_dump(), 9), optuna.pruners.NopPruner
    )
    tpe = make_sampler(SamplerSpec(seed=4).model_dump(), 4)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert isinstance(
        make_sampler(SamplerSpec(type="random").model_dump(), 4), optuna.samplers.RandomSampler
    )
