"""Small file-system helpers shared by the CLI and the engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import DltrainIOError


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename: readers never see a
    half-written file. OSError becomes exit code 6 naming the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DltrainIOError(f"cannot write {path}: {e.strerror}") from None


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def npy_bytes(array: Any) -> bytes:
    """A numpy array as .npy file contents (float32, never pickled objects)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()
