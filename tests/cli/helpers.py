"""Run the real `dltrain` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict:
    """The environment a `dltrain` subprocess gets in tests: the repo on PYTHONPATH, and no
    Triton interpreter (conftest sets it for the kernel tests; the CLI runs on CPU and
    starts as it does for users, without importing Triton)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TRITON_INTERPRET", None)
    env.update(extra)
    return env


def dltrain(
    *args: str, cwd: Path | str | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    full_env = cli_env()
    full_env.setdefault("DLTRAIN_THREADS", "2")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "dltrain", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(
    sign: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 180
) -> bool:
    """Wait for a sign from a running process (`sign()` turns true); polls. False if the
    process ends first; fails after `timeout` seconds."""
    import time

    t0 = time.monotonic()
    while not sign():
        if proc.poll() is not None:
            return False
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.01)
    return True


def wait_for_file(
    path: Path, proc: subprocess.Popen, timeout: float = 180, nonempty: bool = False
) -> None:
    """Wait for a file a running process writes (e.g. RUN/config.yaml, written once setup is
    done and training starts; with `nonempty`, once it holds something). Fails if the
    process ends first."""

    def there() -> bool:
        return path.exists() and (not nonempty or path.stat().st_size > 0)

    if not wait_for(there, proc, f"{path} appearing", timeout):
        raise AssertionError(f"the process ended ({proc.returncode}) before {path} appeared")


def dltrain_here(
    *args: str, cwd: Path | str | None = None, input: str | None = None
) -> subprocess.CompletedProcess:
    """`dltrain` run in this process (Typer's CliRunner), for commands whose checks need no
    process of their own (validate, init, summary): the same exit code, stdout and stderr
    as `dltrain(...)`, without a second of start-up per call."""
    from typer.testing import CliRunner

    from dltrain.cli import app

    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        res = CliRunner().invoke(app, list(args), input=input)
    finally:
        os.chdir(old)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return subprocess.CompletedProcess(list(args), res.exit_code, res.stdout, res.stderr)
