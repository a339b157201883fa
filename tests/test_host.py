"""dltrain.run.host: a training process keeps freed memory for reuse, so a step's large
temporaries cost no page faults; DLTRAIN_MALLOC=default leaves glibc's behaviour. Each case
runs the CNN of configs/bench in a fresh process (malloc settings are process-wide)."""

import subprocess
import sys

import pytest

from tests.cli.helpers import ROOT, cli_env

SCRIPT = f"""
import resource
from dltrain.run.host import keep_freed_memory
from dltrain.engine.bench import Stepper
from dltrain.spec import load
kept = keep_freed_memory()
step = Stepper(load({str(ROOT / "configs/bench/cnn.yaml")!r}))
for _ in range(4):  # warm-up: the heap's pages get touched once
    step()
faults = []
for _ in range(9):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(kept, sorted(faults)[len(faults) // 2])
"""


def faults_per_step(**env: str) -> tuple[str, int]:
    """Whether the settings took, and the median page faults of a step after warm-up (the
    median: the heap may still grow once by its 64 MB pad in a late step, ~1,000 faults,
    which is a one-off, not a per-step cost)."""
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=cli_env(DLTRAIN_THREADS="2", **env),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    kept, n = out.stdout.split()
    return kept, int(n)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_a_training_step_reuses_freed_memory_without_page_faults():
    kept, n = faults_per_step()
    assert kept == "True" and n < 100, n
    kept, n = faults_per_step(DLTRAIN_MALLOC="default")
    assert kept == "False" and n > 2_000, n  # glibc's defaults: ~17,000 fresh pages a step
