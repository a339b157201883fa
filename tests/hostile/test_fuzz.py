"""Hypothesis fuzzing of configs, checkpoints and predict inputs (tests/hostile/fuzz_targets.py),
run in a subprocess under RLIMIT_AS so that a failure can never take the machine down: a
bounded number of examples in the default suite, thousands under `-m slow`."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from tests.cli.helpers import ROOT
from tests.hostile.runner import MEMORY_LIMIT


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def fuzz(examples: int, timeout: float) -> str:
    env = dict(
        os.environ, PYTHONPATH=str(ROOT), DLTRAIN_FUZZ_EXAMPLES=str(examples), DLTRAIN_THREADS="1"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "",
            "tests/hostile/fuzz_targets.py",
            "--hypothesis-show-statistics",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "3 passed" in proc.stdout, proc.stdout[-3000:]
    return proc.stdout


def test_fuzz_bounded():
    fuzz(20, 600)


@pytest.mark.slow
def test_fuzz_thousands():
    print(fuzz(1000, 3600))
