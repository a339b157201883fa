"""Exact resume: kill -9 at random moments, SIGTERM, and stop-after-epoch-k all end with
weights and optimizer state byte-identical to an uninterrupted run (CPU), with shuffling,
dropout, augmentation, a warmup schedule and gradient accumulation on. TensorBoard is read
back with its own EventAccumulator."""

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dltrain.engine import checkpoint as ck
from tests.cli.helpers import cli_env, dltrain, wait_for, wait_for_file

CONFIG = """\
name: resume
seed: 3
data:
  train: {type: builtin, name: digits}
  validation_split: 0.2
  rescale: 0.0625
  augment: {random_flip: horizontal, random_crop_padding: 1}
model:
  input_shape: [8, 8, 1]
  layers:
    - {type: Conv2D, filters: 8, kernel_size: 3, padding: same, activation: relu}
    - {type: BatchNormalization}
    - {type: MaxPooling2D}
    - {type: Flatten}
    - {type: Dropout, rate: 0.3}
    - {type: Dense, units: 10, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: {type: adam, learning_rate: 0.003, schedule: {type: constant, warmup_steps: 15}}
metrics: [accuracy]
train: {epochs: 16, batch_size: 16, gradient_accumulation_steps: 2, log_every_steps: 5}
checkpoint: {every_steps: 7, keep_last: 2}
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "resume.yaml"
    p.write_text(CONFIG)
    return p


def _final_files(run: Path) -> dict:
    last = run / "checkpoints" / ck.list_checkpoints(run / "checkpoints")[-1]
    ck.verify(last)
    return {f: (last / f).read_bytes() for f in ("model.safetensors", "optimizer.safetensors")}


def _train_cmd(cfg, run):
    env = cli_env(DLTRAIN_THREADS="1")
    return [
        sys.executable,
        "-m",
        "dltrain",
        "train",
        str(cfg),
        "-q",
        "--run-dir",
        str(run),
        "--resume",
    ], env


def _steps(tbdir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(
        str(tbdir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)], acc


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, shared by the module's tests (they compare against it)."""
    d = tmp_path_factory.mktemp("reference")
    cfg = d / "resume.yaml"
    cfg.write_text(CONFIG)
    run = d / "ref"
    res = dltrain("train", str(cfg), "-q", "--run-dir", str(run), env={"DLTRAIN_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    return run


def test_tensorboard_has_scalars_histograms_images(reference):
    steps, acc = _steps(reference / "tensorboard", "train/loss")
    tags = acc.Tags()
    assert steps == sorted(set(steps)) and steps[0] == 5
    for t in (
        "train/learning_rate",
        "epoch/loss",
        "epoch/val_loss",
        "epoch/val_accuracy",
        "epoch/epoch",
    ):
        assert t in tags["scalars"], t
    assert len(acc.Scalars("epoch/val_loss")) == 16
    assert any(t.startswith("weights/conv2d.kernel") for t in tags["histograms"])
    assert any(t.startswith("gradients/dense.kernel") for t in tags["histograms"])
    assert "samples/pred_true" in tags["images"] and "confusion_matrix" in tags["images"]
    assert any("config" in t for t in tags["tensors"])


def _kill_twice_then_finish(cfg: Path, run: Path, seed: int) -> None:
    cmd, env = _train_cmd(cfg, run)
    rng = random.Random(seed)
    kills = 0
    for _ in range(30):
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 2:
            # the sign: this attempt has committed 1-4 new checkpoints (every 7 steps) past
            # what was on disk; it is mid-step (or mid-save) again when the kill lands
            if _wait_for_new_checkpoints(run / "checkpoints", p, rng.randint(1, 4)):
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                continue
        p.wait()
        assert p.returncode == 0, p.stderr.read().decode()
        break
    else:
        pytest.fail("the run never finished")
    assert kills >= 2


def test_kill_9_at_random_moments_then_resume_is_bit_exact(tmp_path, cfg, reference):
    run = tmp_path / "killed"
    _kill_twice_then_finish(cfg, run, 11)
    assert _final_files(run) == _final_files(reference)
    ref_steps, _ = _steps(reference / "tensorboard", "train/loss")
    steps, _ = _steps(run / "tensorboard", "train/loss")
    assert steps == ref_steps  # each step once after the resumes
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 16


@pytest.mark.slow  # the default run kills fp32 runs (above); this adds bf16 arithmetic
def test_kill_9_then_resume_is_bit_exact_in_bf16_mixed(tmp_path):
    """The same in train.precision bf16-mixed: float32 master weights and optimizer state in
    the checkpoints, bfloat16 arithmetic replayed identically after each resume."""
    cfg = tmp_path / "bf16.yaml"
    cfg.write_text(CONFIG.replace("epochs: 16,", "epochs: 4, precision: bf16-mixed,"))
    ref = tmp_path / "ref"
    res = dltrain("train", str(cfg), "-q", "--run-dir", str(ref), env={"DLTRAIN_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    run = tmp_path / "killed"
    _kill_twice_then_finish(cfg, run, 5)
    files = _final_files(run)
    assert files == _final_files(ref)
    weights = load_file(
        str(
            ref / "checkpoints" / ck.list_checkpoints(ref / "checkpoints")[-1] / "model.safetensors"
        )
    )
    assert {t.dtype for t in weights.values()} == {torch.float32}


def _wait_for_new_checkpoints(root: Path, proc: subprocess.Popen, n: int) -> bool:
    """Wait until `n` checkpoints this process committed have appeared; False if it ends
    first."""

    def names() -> set[str]:
        try:
            return {c.name for c in root.iterdir() if c.name.startswith("step-")}
        except OSError:
            return set()

    before = names()
    return wait_for(lambda: len(names() - before) >= n, proc, f"{n} new checkpoints", 300)


def test_sigterm_saves_and_resume_is_bit_exact(tmp_path, cfg, reference):
    run = tmp_path / "term"
    cmd, env = _train_cmd(cfg, run)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_file(run / "config.yaml", p)  # setup done: training has started
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("the run finished before the signal")
    assert p.returncode == 143, err.decode()
    assert b"stopped by SIGTERM; saved" in err
    assert not [x for x in (run / "checkpoints").iterdir() if x.name.startswith(".tmp")]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert _final_files(run) == _final_files(reference)


@pytest.mark.slow  # resume is bit-exact by kill -9 and SIGTERM in the default suite
def test_stop_after_epoch_k_then_continue_is_bit_exact(tmp_path, cfg, reference):
    run = tmp_path / "k"
    res = dltrain(
        "train",
        str(cfg),
        "-q",
        "--run-dir",
        str(run),
        "--set",
        "train.epochs=4",
        env={"DLTRAIN_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr
    res = dltrain(
        "train",
        str(cfg),
        "-q",
        "--run-dir",
        str(run),
        "--resume",
        "--allow-config-change",
        "train.epochs",
        env={"DLTRAIN_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr
    assert _final_files(run) == _final_files(reference)
    final = load_file(
        str(
            run / "checkpoints" / ck.list_checkpoints(run / "checkpoints")[-1] / "model.safetensors"
        )
    )
    assert "batch_normalization.moving_mean" in final
