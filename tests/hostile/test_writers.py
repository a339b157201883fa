"""One writer per run directory: a second `dltrain train` into a run that is being trained
is refused at once (exit 6) naming the holder's PID; a killed holder never blocks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from dltrain.fsutil import RunLock
from tests.cli.helpers import cli_env, dltrain

CONFIG = """\
data: {train: {type: synthetic, samples: 2000, features: 20, classes: 3}}
model: {input_shape: [20], layers: [{type: Dense, units: 64, activation: relu},
        {type: Dense, units: 3, activation: softmax}]}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1000, batch_size: 8}
logging: {tensorboard: false}
"""


def _holder_pid(lock, proc, deadline=120.0) -> str:
    """Wait for the first run's sign: its PID written into the lock file."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        if lock.exists() and lock.read_text().strip():
            return lock.read_text().strip()
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)  # polling for the sign, not waiting a fixed time
    raise AssertionError("the first run never took its lock")


def test_second_writer_is_refused_and_a_dead_holder_never_blocks(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG)
    env = cli_env(DLTRAIN_THREADS="1")
    first = subprocess.Popen(
        [sys.executable, "-m", "dltrain", "train", "c.yaml", "-q", "--run-dir", "R"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid = _holder_pid(tmp_path / "R" / ".lock", first)
        assert pid == str(first.pid)
        second = dltrain("train", "c.yaml", "-q", "--run-dir", "R", cwd=tmp_path)
        assert second.returncode == 6, second.stderr
        assert f"PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
        # readers need no lock
        listing = dltrain("validate", "c.yaml", cwd=tmp_path)
        assert listing.returncode == 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with RunLock(tmp_path / "R"):  # the lock died with its holder
        pass
