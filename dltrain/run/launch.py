"""`dltrain train --nproc N`: N local processes through torch.distributed's elastic launcher
(the machinery behind torchrun: c10d rendezvous on a free local port, worker monitoring).

When a process fails, the launcher ends the others and this reports the root cause: a
process killed by a signal first, then a user error (exit 2-5, whose message the process
printed itself), then whatever came first.
"""

from __future__ import annotations

import logging
import signal
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from ..errors import DistributedError, DltrainError


class JobFailed(DltrainError):
    """A data-parallel job that ended because one of its processes failed; exits with
    that process's code (its own message is already printed) or 6 for a lost process."""

    said = True  # with no message of its own, nothing more is printed

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def root_cause(failures: dict[int, Any], nproc: int) -> tuple[str, int]:
    """(message, exit code) for the launcher's per-rank failures (ProcessFailure-like:
    exitcode, pid, timestamp)."""
    ranks = sorted(failures, key=lambda r: (failures[r].timestamp, r))
    # the launcher ends the survivors with SIGTERM: those deaths are not the cause
    killed = [r for r in ranks if failures[r].exitcode < 0 and failures[r].exitcode != -15]
    ranks = [r for r in ranks if failures[r].exitcode != -15] or ranks
    resume = "; rerun with --resume to continue from the last checkpoint"
    if killed:
        r = killed[0]
        f = failures[r]
        return (
            f"process rank {r} of {nproc} (pid {f.pid}) was killed by "
            f"{_signal_name(f.exitcode)}; the job was stopped" + resume,
            DistributedError.exit_code,
        )
    codes = {r: failures[r].exitcode for r in ranks}
    stops = [r for r in ranks if codes[r] in (130, 143)]
    if stops and len(stops) == len(ranks):
        return "", codes[stops[0]]  # an asked stop: each process said what it saved
    user = [r for r in ranks if 2 <= codes[r] <= 5]
    r = min(user) if user else ranks[0]
    return (
        f"process rank {r} of {nproc} exited with code {codes[r]} (its message is above)"
        + ("" if user else resume),
        codes[r],
    )


def launch_local(nproc: int, train_args: Sequence[str]) -> None:
    """Run `python -m dltrain train TRAIN_ARGS` in `nproc` processes on this machine and
    wait for them; raises JobFailed when one fails."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.root.manager.loggerDict):  # its own report replaces theirs
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port, as torchrun --standalone
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "dltrain", "train", *train_args)
    except ChildFailedError as e:
        message, code = root_cause(e.failures, nproc)
        raise JobFailed(message, code) from None
    except SignalException as e:  # this launcher was asked to stop; the workers saved
        code = 130 if e.sigval == signal.SIGINT else 128 + int(e.sigval)
        raise JobFailed("", code) from None
