"""Crash safety through the real CLI: failing and killed saves, corrupted checkpoints,
non-finite training, untrusted files, signals."""

import os
import pickle
import signal
import subprocess
import sys

import pytest

from dltrain.engine import checkpoint as ck
from tests.cli.helpers import cli_env, dltrain, dltrain_here, wait_for_file

CONFIG = """\
name: small
seed: 1
data:
  train: {type: synthetic, samples: 400, features: 10, classes: 3}
  validation_split: 0.25
model:
  input_shape: [10]
  layers:
    - {type: Dense, units: 16, activation: relu}
    - {type: Dropout, rate: 0.2}
    - {type: Dense, units: 3, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: {type: sgd, learning_rate: 0.05, momentum: 0.9}
metrics: [accuracy]
train: {epochs: 4, batch_size: 16, gradient_accumulation_steps: 2}
checkpoint: {every_steps: 4, keep_last: 2}
logging: {tensorboard: false}
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(CONFIG)
    return p


def _final(run):
    names = ck.list_checkpoints(run / "checkpoints")
    last = run / "checkpoints" / names[-1]
    ck.verify(last)
    return {f: (last / f).read_bytes() for f in ("model.safetensors", "optimizer.safetensors")}


@pytest.fixture
def reference(tmp_path, cfg):
    assert dltrain("train", str(cfg), "-q", "--run-dir", "ref", cwd=tmp_path).returncode == 0
    return tmp_path / "ref"


@pytest.mark.parametrize(
    "action,text", [("enospc", "No space left on device"), ("eacces", "Permission denied")]
)
def test_failed_save_exits_6_and_keeps_the_previous_checkpoint(tmp_path, cfg, action, text):
    env = {
        "DLTRAIN_TEST_FAULT": f"write:optimizer.safetensors:{action}",
        "DLTRAIN_TEST_FAULT_SKIP": "1",
    }
    res = dltrain("train", str(cfg), "-q", "--run-dir", "r", cwd=tmp_path, env=env)
    assert res.returncode == 6, res.stderr
    assert f"cannot save checkpoint r/checkpoints/step-00000008: {text}" in res.stderr
    assert "the previous checkpoint is intact" in res.stderr
    root = tmp_path / "r" / "checkpoints"
    assert ck.list_checkpoints(root) == ["step-00000004"]
    assert not [x for x in root.iterdir() if x.name.startswith(".tmp")]
    ck.verify(root / "step-00000004")


@pytest.mark.parametrize(
    "point",
    [
        pytest.param("write:model.safetensors", marks=pytest.mark.slow),
        pytest.param("manifest", marks=pytest.mark.slow),
        "rename",  # the last moment of a save; the other two points run under -m slow
    ],
)
def test_kill_during_save_then_resume_is_bit_exact(tmp_path, cfg, reference, point):
    env = {"DLTRAIN_TEST_FAULT": f"{point}:kill", "DLTRAIN_TEST_FAULT_SKIP": "2"}
    res = dltrain("train", str(cfg), "-q", "--run-dir", "r", cwd=tmp_path, env=env)
    assert res.returncode == -signal.SIGKILL
    root = tmp_path / "r" / "checkpoints"
    assert [x for x in root.iterdir() if x.name.startswith(".tmp")]
    res = dltrain("train", str(cfg), "-q", "--run-dir", "r", "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "left by an interrupted save" in res.stderr
    assert not [x for x in root.iterdir() if x.name.startswith(".tmp")]
    assert _final(tmp_path / "r") == _final(reference)


def test_corrupted_checkpoints_exit_4_and_resume_skips_them(tmp_path, cfg, reference):
    root = reference / "checkpoints"
    names = ck.list_checkpoints(root)
    newest = root / names[-1]
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-2] ^= 0x55
    (newest / "model.safetensors").write_bytes(bytes(data))
    res = dltrain_here("evaluate", str(newest), "--data", "validation", cwd=tmp_path)
    assert res.returncode == 4
    assert "model.safetensors: contents do not match the manifest's sha256" in res.stderr
    res = dltrain_here(
        "train",
        str(cfg),
        "-q",
        "--run-dir",
        "ref",
        "--resume",
        "--set",
        "train.epochs=5",
        "--allow-config-change",
        "train.epochs",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert f"skipping checkpoint: ref/checkpoints/{newest.name}/model.safetensors" in res.stderr
    (root / names[0] / ck.MANIFEST).unlink(missing_ok=True)
    res = dltrain_here("evaluate", "nothing-here", cwd=tmp_path)
    assert res.returncode == 4 and "no such run directory or checkpoint" in res.stderr


def test_non_finite_training_exits_5_with_a_report(tmp_path, cfg):
    res = dltrain_here(
        "train",
        str(cfg),
        "-q",
        "--run-dir",
        "r",
        "--set",
        "optimizer.learning_rate=1e12",
        "--set",
        "optimizer.momentum=0.99",
        cwd=tmp_path,
    )
    assert res.returncode == 5, res.stderr
    assert "non-finite loss or gradient at step" in res.stderr
    assert "learning rate 1e+12" in res.stderr and "training samples of that step: [" in res.stderr
    root = tmp_path / "r" / "checkpoints"
    import torch

    for name in ck.list_checkpoints(root):
        ck.verify(root / name)
        for t in ck.read_tensors(root / name / "model.safetensors").values():
            assert torch.isfinite(t).all()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_and_torch_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "model.pt").write_bytes(pickle.dumps(_Evil(marker)))
    res = dltrain_here("evaluate", "model.pt", cwd=tmp_path)
    assert res.returncode == 4 and "is a Python pickle; dltrain never unpickles" in res.stderr
    import torch

    torch.save({"w": torch.zeros(1)}, tmp_path / "weights.safetensors")
    res = dltrain_here("predict", "weights.safetensors", "-i", "x.npz", "-o", "p.npy", cwd=tmp_path)
    assert res.returncode == 4 and "zip archive" in res.stderr
    # a pickle planted inside a checkpoint: the manifest catches it before anything is read
    assert not marker.exists()


def test_pickle_planted_in_a_checkpoint_never_runs(tmp_path, cfg, reference):
    marker = tmp_path / "pwned"
    ckpt = reference / "checkpoints" / ck.list_checkpoints(reference / "checkpoints")[-1]
    (ckpt / "model.safetensors").write_bytes(pickle.dumps(_Evil(marker)))
    res = dltrain_here("evaluate", str(ckpt), "--data", "validation", cwd=tmp_path)
    assert res.returncode == 4
    ck_manifest = ckpt / ck.MANIFEST
    ck_manifest.unlink()  # even without a manifest to catch it
    res = dltrain_here("evaluate", str(ckpt), cwd=tmp_path)
    assert res.returncode == 4
    assert not marker.exists()


def test_two_sigints_stop_at_once_and_leave_no_partial_checkpoint(tmp_path, cfg):
    env = cli_env()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dltrain",
            "train",
            str(cfg),
            "-q",
            "--run-dir",
            "r",
            "--set",
            "train.epochs=200",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for_file(tmp_path / "r" / "config.yaml", p)  # setup done: training has started
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err.decode()
    root = tmp_path / "r" / "checkpoints"
    assert not [x for x in root.iterdir() if x.name.startswith(".tmp")]
    for name in ck.list_checkpoints(root):
        ck.verify(root / name)


def test_resume_on_other_software_versions_warns(tmp_path, cfg, reference):
    import json

    root = reference / "checkpoints"
    name = ck.list_checkpoints(root)[-1]
    files = {p.name: p.read_bytes() for p in (root / name).iterdir() if p.name != ck.MANIFEST}
    state = json.loads(files["state.json"])
    state["torch"] = "1.0.0"
    files["state.json"] = json.dumps(state).encode()
    ck.commit(root, name, files)  # a valid checkpoint, as saved by another torch
    res = dltrain_here(
        "train",
        str(cfg),
        "-q",
        "--run-dir",
        "ref",
        "--resume",
        "--set",
        "train.epochs=5",
        "--allow-config-change",
        "train.epochs",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "torch 1.0.0" in res.stderr and "bit-exact continuation is not promised" in res.stderr
