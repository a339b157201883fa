"""Data-parallel training: `dltrain train --nproc 2` (gloo on CPU, torch.distributed's
elastic launcher) against one process with the same global batch.

Bounds reached (float32, 30 steps, relative to each tensor's largest magnitude): MLP with
SGD 3e-7 (bound 1e-6); MLP with Adam 4.0e-6 (Adam divides by sqrt(v), so a last-bit
difference in a near-zero gradient becomes a learning-rate-sized step; bound 1e-5); CNN
with synchronised BatchNormalization and SGD 1.0e-6 (bound 1e-5: a last-bit difference
can also change which of two tied inputs a max pool picks, and with a large learning rate
the difference grows step by step: 7.7e-7 after one step at lr 0.05, 2.5e-3 after 30).
The difference is summation order only: one process sums 32 rows in one matmul, two sum
16 + 16.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dltrain.run.launch import root_cause

from .helpers import ROOT, cli_env, dltrain, dltrain_here, wait_for

CFG = str(ROOT / "configs" / "digits_mlp.yaml")
CNN = str(ROOT / "configs" / "digits_cnn.yaml")
SHORT = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=30", "-q"]
ONE_THREAD = {"DLTRAIN_THREADS": "1"}
SGD = "{type: sgd, learning_rate: 0.05, momentum: 0.9}"
SGD_CNN = "{type: sgd, learning_rate: 0.01, momentum: 0.9}"


def _newest(run: Path) -> Path:
    return max((run / "checkpoints").glob("step-*"))


def _tensors(run: Path, what: str = "model") -> dict[str, torch.Tensor]:
    return load_file(str(_newest(run) / f"{what}.safetensors"))


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in a)


def _two(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    res = dltrain("train", *args, "--nproc", "2", cwd=cwd, env=ONE_THREAD, timeout=300)
    assert res.returncode == 0, res.stderr
    return res


# the default run trains 2 processes in the resume test below (the MLP with ZeRO-1)
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "config,extra,bound",
    [
        pytest.param(CFG, ["--set", f"optimizer={SGD}"], 1e-6, marks=SLOW),
        pytest.param(CFG, [], 1e-5, marks=SLOW),
        pytest.param(CFG, ["--set", "train.distributed.optimizer_sharding=true"], 1e-5, marks=SLOW),
        pytest.param(
            CNN,
            ["--set", "train.sync_batch_norm=true", "--set", f"optimizer={SGD_CNN}"],
            1e-5,
            marks=SLOW,
        ),
    ],
    ids=["mlp_sgd", "mlp_adam", "mlp_zero1", "cnn_sync_bn"],
)
def test_two_processes_train_as_one(tmp_path, config, extra, bound):
    one, two = tmp_path / "one", tmp_path / "two"
    res = dltrain_here("train", config, *SHORT, *extra, "--run-dir", str(one))
    assert res.returncode == 0, res.stderr
    res = _two(
        config,
        *SHORT,
        *extra,
        "--run-dir",
        str(two),
        "--set",
        "train.distributed.check_every_steps=10",
        cwd=tmp_path,
    )
    assert "data-parallel: 2 processes (gloo), " in res.stderr
    assert res.stdout.count("run directory:") == 1  # rank 0 alone reports and writes
    assert _newest(one).name == _newest(two).name == "step-00000030"
    assert _worst(_tensors(two), _tensors(one)) < bound
    assert _worst(_tensors(two, "optimizer"), _tensors(one, "optimizer")) < 100 * bound
    # logged metrics are the global batch's (reduced over the processes)
    import json

    a = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [x.keys() for x in a] == [x.keys() for x in b]
    assert b[-1]["loss"] == pytest.approx(a[-1]["loss"], rel=1e-5)
    assert b[-1]["accuracy"] == pytest.approx(a[-1]["accuracy"], abs=1e-3)
    _same_validation(two, one, rel=10 * bound)
    assert not (two / "checkpoints" / ".lock").exists()


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the launcher's worker with RANK=rank (its environment says)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher and f"RANK={rank}".encode() in env:
            return int(d.name)
    return None


def _start(cmd: list[str], root: Path, cwd: Path) -> subprocess.Popen:
    """Start a training job and wait for its sign of life: a checkpoint this attempt
    committed (both ranks are training then)."""
    before = {c.name for c in root.glob("step-*")} if root.is_dir() else set()
    p = subprocess.Popen(
        cmd,
        env=cli_env(**ONE_THREAD),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def new() -> bool:
        return root.is_dir() and bool({c.name for c in root.glob("step-*")} - before)

    if not wait_for(new, p, "a new checkpoint"):
        pytest.fail(f"the run ended before its first checkpoint: {p.communicate()}")
    return p


def _kill_rank_1(p: subprocess.Popen) -> None:
    """kill -9 the job's rank 1: the job ends at once (exit 6) naming it, no hang."""
    assert wait_for(lambda: _rank_pid(p.pid, 1) is not None, p, "rank 1")
    pid = _rank_pid(p.pid, 1)
    assert pid is not None
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 6, err
    assert f"process rank 1 of 2 (pid {pid}) was killed by SIGKILL" in err, err
    assert "--resume" in err and "Traceback" not in err
    assert time.monotonic() - t0 < 30


def _cmd(run: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "dltrain", "train", *args, "--run-dir", str(run), "--nproc", "2"]


def test_a_killed_rank_ends_the_job(tmp_path):
    run = tmp_path / "run"  # 40 epochs: still training when the kill lands
    cmd = _cmd(run, CFG, "-q", "--set", "checkpoint.every_steps=10")
    _kill_rank_1(_start(cmd, run / "checkpoints", tmp_path))


@pytest.mark.slow  # the default run kills a rank (above) and resumes across process counts
def test_stop_and_kill_then_resume_is_bit_exact(tmp_path):
    """SIGTERM to the launcher: every rank stops after the same step, rank 0 saves (143).
    Then kill -9 of rank 1. Each time `--resume` continues, and the end is bit-identical
    to an uninterrupted 2-process run."""
    args = [CFG, "-q", "--set", "train.epochs=6", "--set", "checkpoint.every_steps=10"]
    ref = tmp_path / "ref"
    _two(*args, "--run-dir", str(ref), cwd=tmp_path)
    run = tmp_path / "run"
    root = run / "checkpoints"
    cmd = _cmd(run, *args, "--resume")  # --resume starts a run that is not there yet
    p = _start(cmd, root, tmp_path)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert err.count("stopped by SIGTERM; saved step-") == 1, err  # rank 0 says it, once
    _kill_rank_1(_start(cmd, root, tmp_path))
    subprocess.run(cmd, env=cli_env(**ONE_THREAD), cwd=tmp_path, check=True, capture_output=True)
    assert _newest(run).name == _newest(ref).name
    for what in ("model", "optimizer", "trainer"):
        a, b = _tensors(run, what), _tensors(ref, what)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in b), what  # bit-exact
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6  # every epoch once


def test_a_checkpoint_resumes_with_another_number_of_processes(tmp_path):
    """1 process, then 2 (ZeRO-1: the saved state is scattered; BatchNormalization
    synchronised over the global batch), then 1 again (the state was gathered into the
    single-process format): as one uninterrupted process."""
    common = [
        CNN,
        "-q",
        "--set",
        "train.steps_per_epoch=10",
        "--set",
        "train.distributed.optimizer_sharding=true",
        "--set",
        "train.sync_batch_norm=true",
        "--set",
        f"optimizer={SGD_CNN}",
        "--set",
        "optimizer.clipnorm=0.5",  # sharded: the whole gradient's norm from every slice
    ]
    ref = tmp_path / "ref"
    assert (
        dltrain_here("train", *common, "--set", "train.epochs=3", "--run-dir", str(ref)).returncode
        == 0
    )
    run = tmp_path / "run"
    more = ["--run-dir", str(run), "--resume", "--allow-config-change", "train.epochs"]
    res = dltrain_here("train", *common, "--set", "train.epochs=1", *more)
    assert res.returncode == 0, res.stderr
    # replicas compared every 3 steps; a resume may change such a setting without a flag
    check = ["--set", "train.distributed.check_every_steps=3"]
    _two(*common, "--set", "train.epochs=2", *more, *check, cwd=tmp_path)
    assert _newest(run).name == "step-00000020"
    res = dltrain_here("train", *common, "--set", "train.epochs=3", *more)
    assert res.returncode == 0, res.stderr
    assert _newest(run).name == _newest(ref).name == "step-00000030"
    assert _worst(_tensors(run), _tensors(ref)) < 1e-5
    assert _worst(_tensors(run, "optimizer"), _tensors(ref, "optimizer")) < 1e-3
    # epoch 2's validation: each process evaluated its half, the sums were all-reduced
    _same_validation(run, ref, rel=1e-5)


def _same_validation(run: Path, ref: Path, rel: float) -> None:
    """Every epoch's validation loss and metrics in `run` are those of `ref`."""
    import json

    def val(d: Path) -> list[dict]:
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k.startswith("val_")} for x in lines]

    a, b = val(run), val(ref)
    assert len(a) == len(b) and all(x.keys() == y.keys() and "val_loss" in x for x, y in zip(a, b))
    for x, y in zip(a, b):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=rel, abs=1e-3 if "accuracy" in k else 0), k


def test_config_errors_are_found_before_any_process_starts(tmp_path):
    res = dltrain_here("train", CFG, "--nproc", "3", "--run-dir", str(tmp_path / "r"))
    assert res.returncode == 2
    assert "batch_size 32 is the global batch and must split evenly over the 3" in res.stderr
    assert not (tmp_path / "r").exists()
    gan = str(ROOT / "configs" / "dcgan_digits.yaml")
    res = dltrain_here("train", gan, "--nproc", "2", "--run-dir", str(tmp_path / "g"))
    assert res.returncode == 2 and "GAN trains in one process" in res.stderr


def test_a_rendezvous_that_fails_is_a_clear_error(tmp_path):
    """A process told to join a group whose address answers nothing (torchrun's variables
    set by hand): exit 6 naming the address, within the configured timeout."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **ONE_THREAD,
        "WORLD_SIZE": "2",
        "RANK": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    res = dltrain(
        "train",
        CFG,
        "-q",
        "--set",
        "train.distributed.timeout_seconds=1",
        "--run-dir",
        str(tmp_path / "r"),
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert res.returncode == 6, res.stderr
    assert f"rank 1: rank 1 could not join the process group at 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def test_nproc_under_torchrun_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = dltrain_here("train", CFG, "--nproc", "2", "--run-dir", str(tmp_path / "r"))
    assert res.returncode == 2 and "under torchrun set --nproc_per_node" in res.stderr


class _Failure:
    def __init__(self, exitcode: int, t: float, pid: int = 7) -> None:
        self.exitcode, self.timestamp, self.pid = exitcode, t, pid


def test_the_root_cause_of_a_failed_job():
    # killed rank 1, rank 0 then lost its peer (6), the launcher ended the rest (SIGTERM)
    msg, code = root_cause({0: _Failure(6, 2), 1: _Failure(-9, 1), 2: _Failure(-15, 3)}, 3)
    assert "rank 1 of 3 (pid 7) was killed by SIGKILL" in msg and code == 6
    # a data error on rank 1 is the cause, not rank 0's lost peer that came first
    msg, code = root_cause({0: _Failure(6, 1), 1: _Failure(3, 2)}, 2)
    assert "rank 1 of 2 exited with code 3" in msg and code == 3
    # an asked stop (Ctrl-C): every process saved and said so
    assert root_cause({0: _Failure(130, 1), 1: _Failure(130, 1)}, 2) == ("", 130)


def test_a_diverging_run_stops_every_process_alike(tmp_path):
    """A non-finite gradient is agreed in the step's all-reduce (ZeRO-1: every slice's
    check): both ranks stop at the same step, exit 5, no hang."""
    res = dltrain(
        "train",
        CFG,
        "-q",
        "--nproc",
        "2",
        "--run-dir",
        str(tmp_path / "r"),
        "--set",
        "optimizer={type: sgd, learning_rate: 1.0e30}",
        "--set",
        "train.distributed.optimizer_sharding=true",
        cwd=tmp_path,
        env=ONE_THREAD,
        timeout=300,
    )
    assert res.returncode == 5, res.stderr
    steps = re.findall(r"non-finite loss or gradient at step (\d+)", res.stderr)
    assert steps and len(set(steps)) == 1, res.stderr  # the ranks that said it agree
    # whichever rank the launcher saw end first (it then ends the other with SIGTERM)
    assert re.search(r"process rank [01] of 2 exited with code 5", res.stderr), res.stderr
    assert "Traceback" not in res.stderr
