"""One writer per run directory: a second `dltrain train` into a run that is being trained
is refused at once (exit 6) naming the holder's PID; a killed holder never blocks."""

from __future__ import annotations

import signal
import subprocess
import sys

from dltrain.fsutil import RunLock
from tests.cli.helpers import cli_env, dltrain, wait_for_file

CONFIG = """\
data: {train: {type: synthetic, samples: 2000, features: 20, classes: 3}}
model: {input_shape: [20], layers: [{type: Dense, units: 64, activation: relu},
        {type: Dense, units: 3, activation: softmax}]}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1000, batch_size: 8}
logging: {tensorboard: false}
"""


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
        lock = tmp_path / "R" / ".lock"
        wait_for_file(lock, first, nonempty=True)  # the first run's sign: its PID in the lock
        assert lock.read_text().strip() == str(first.pid)
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
