"""Small file-system helpers shared by the CLI and the engine."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from pathlib import Path
from typing import Any

from .errors import DltrainIOError

# -- fault injection (tests only) --------------------------------------------------------------
_FAULT_HITS: dict[str, int] = {}


def fault(point: str) -> None:
    """DLTRAIN_TEST_FAULT=<point>:<enospc|eacces|erofs|kill> breaks a save at one step; with
    DLTRAIN_TEST_FAULT_SKIP=N the first N saves pass that point (tests only)."""
    spec = os.environ.get("DLTRAIN_TEST_FAULT")
    if not spec:
        return
    where, _, action = spec.rpartition(":")
    if where != point:
        return
    _FAULT_HITS[point] = _FAULT_HITS.get(point, 0) + 1
    if _FAULT_HITS[point] <= int(os.environ.get("DLTRAIN_TEST_FAULT_SKIP", "0")):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    code = {"enospc": errno.ENOSPC, "eacces": errno.EACCES, "erofs": errno.EROFS}[action]
    raise OSError(code, os.strerror(code), point)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename: readers never see a
    half-written file. OSError becomes exit code 6 naming the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # cleanup never masks the first error
            tmp.unlink(missing_ok=True)
        raise DltrainIOError(f"cannot write {path}: {e.strerror or e}") from None


def make_dir(path: Path) -> None:
    """mkdir -p; OSError becomes exit code 6 naming the path."""
    try:
        fault("mkdir")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DltrainIOError(f"cannot create {path}: {e.strerror or e}") from None


class RunLock:
    """One writer per run directory: an OS lock (flock) on RUN/.lock held for the whole run.
    A second writer is refused at once, naming the holder's PID; the lock dies with its
    holder, so a killed run never blocks the next one. Readers take no lock."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        make_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DltrainIOError(f"cannot create {self.path}: {e.strerror or e}") from None
        try:
            import fcntl
        except ImportError:  # pragma: no cover  (not POSIX: no lock)
            self.fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DltrainIOError(
                f"{self.path.parent} is being written by another dltrain process (PID "
                f"{holder}); wait for it to finish, or train into another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def npy_bytes(array: Any) -> bytes:
    """A numpy array as .npy file contents (float32, never pickled objects)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()
