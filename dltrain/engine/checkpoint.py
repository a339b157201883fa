"""Crash-safe checkpoints: safetensors + JSON, committed atomically, verified on every load.

A checkpoint is a directory `step-00000120/` holding model.safetensors, optimizer.safetensors,
trainer.safetensors, state.json and MANIFEST.json (format version, size and sha256 of every
other file). It is written into a temporary directory beside it, every file fsynced, the
manifest written last, then renamed into place and the parent fsynced: a crash leaves either
the whole checkpoint or a `.tmp-*` directory that the next start removes.

Nothing here unpickles. Files are recognised by content: a pickle or a torch zip archive is
refused whatever its name; a safetensors header is checked against the file size before
anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from ..errors import DltrainIOError
from ..fsutil import fault as _fault

# reading lives in checkpoint_read; `checkpoint.verify(...)` etc. stay one namespace
from .checkpoint_read import (
    FORMAT_VERSION,
    MANIFEST,
    NAME,
    Log,
    check_safetensors,
    check_weights,
    list_checkpoints,
    newest_valid,
    read_regular,
    read_state,
    read_state_dict,
    read_tensors,
    resolve,
    sniff,
    verify,
)


# -- writing -----------------------------------------------------------------------------------
def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def commit(root: Path, name: str, files: dict[str, bytes], what: str = "checkpoint") -> Path:
    """Write `files` as checkpoint (or bundle) root/name atomically; OSError becomes exit
    code 6."""
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        manifest: dict[str, Any] = {"format": FORMAT_VERSION, "files": {}}
        for fname, data in files.items():
            _fault(f"write:{fname}")
            _write_synced(tmp / fname, data)
            manifest["files"][fname] = {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        _fault("manifest")
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(tmp)
        _fault("rename")
        old = None
        if final.exists():  # the same step saved again: swap, never delete first
            old = root / f".tmp-old-{name}-{os.getpid()}"
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        where = e.filename if isinstance(e.filename, str) and os.sep in e.filename else str(final)
        kept = (
            "the previous checkpoint is intact" if what == "checkpoint" else "nothing was written"
        )
        raise DltrainIOError(
            f"cannot save {what} {final}: {e.strerror or e} ({where}); {kept}"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def clean_leftovers(root: Path, log: Log) -> None:
    """Remove temporary directories a crashed save left behind."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith(".tmp-") and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            log(f"removed {p}, left by an interrupted save")


def prune(root: Path, keep_last: int, keep: set[str]) -> None:
    """Delete all but the newest `keep_last` committed checkpoints and those in `keep`."""
    names = sorted(list_checkpoints(root))
    for name in names[:-keep_last] if keep_last else names:
        if name not in keep:
            shutil.rmtree(root / name, ignore_errors=True)


def mark_best(root: Path, name: str) -> None:
    tmp = root / ".BEST.tmp"
    _write_synced(tmp, (name + "\n").encode())
    os.replace(tmp, root / "BEST")
    _fsync_dir(root)


__all__ = [
    "Log",
    "FORMAT_VERSION",
    "MANIFEST",
    "NAME",
    "check_safetensors",
    "check_weights",
    "clean_leftovers",
    "commit",
    "list_checkpoints",
    "mark_best",
    "newest_valid",
    "prune",
    "read_regular",
    "read_state",
    "read_state_dict",
    "read_tensors",
    "resolve",
    "sniff",
    "tensors_bytes",
    "verify",
]
