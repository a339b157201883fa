#!/usr/bin/env python3
"""Set up dltrain in a virtual environment (.venv) and run its main job or its tests.

    python3 dev.py train     # set up, train configs/digits_cnn.yaml, evaluate it
    python3 dev.py test      # set up, run the test suite (extra arguments go to pytest)

Only Python 3.10+ is needed. torch is installed first on its own (DLTRAIN_TORCH, default
torch==2.13.0, a CPU build here) so the dependency resolver never pulls a CUDA build.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def sh(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def setup() -> None:
    if not PY.exists():
        venv.create(VENV, with_pip=True)
    torch_req = os.environ.get("DLTRAIN_TORCH", "torch==2.13.0")
    stamp = VENV / ".dltrain-setup"
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + torch_req.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == key:
        return
    sh(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", torch_req)
    sh(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", ".[dev]")
    stamp.write_text(key)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("train", "test", "setup"):
        print(__doc__)
        return 2
    setup()
    try:
        if argv[0] == "train":
            run = f"runs/digits_cnn-{time.strftime('%Y%m%d-%H%M%S')}"
            sh(PY, "-m", "dltrain", "train", "configs/digits_cnn.yaml", "--run-dir", run, *argv[1:])
            sh(PY, "-m", "dltrain", "evaluate", run)
        elif argv[0] == "test":
            sh(PY, "-m", "pytest", "-q", *argv[1:])
    except subprocess.CalledProcessError as e:
        return e.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
