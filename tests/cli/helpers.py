"""Run the real `dltrain` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dltrain(
    *args: str, cwd: Path | str | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
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
