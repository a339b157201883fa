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

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CheckpointError, DltrainIOError

FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
NAME = re.compile(r"^step-(\d{8,})$")
MAX_HEADER = 100 * 1024 * 1024

Log = Callable[[str], None]


# -- fault injection (tests only) --------------------------------------------------------------
_FAULT_HITS: dict[str, int] = {}


def _fault(point: str) -> None:
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


def commit(root: Path, name: str, files: dict[str, bytes]) -> Path:
    """Write `files` as checkpoint root/name atomically; OSError becomes exit code 6."""
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
        raise DltrainIOError(
            f"cannot save checkpoint {final}: {e.strerror or e} ({where}); "
            "the previous checkpoint is intact"
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


def list_checkpoints(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME.match(p.name))


# -- reading -----------------------------------------------------------------------------------
def sniff(path: Path, data: bytes) -> None:
    """Refuse pickles and torch archives by their content, whatever the file is called."""
    head = data[:4]
    if head[:1] == b"\x80" and len(data) > 1 and data[1] in range(2, 6):
        raise CheckpointError(
            f"{path} is a Python pickle; dltrain never unpickles (loading "
            "a pickle can run arbitrary code). Provide a dltrain checkpoint "
            "directory or a .safetensors file"
        )
    if head == b"PK\x03\x04":
        raise CheckpointError(
            f"{path} is a zip archive (a torch.save file?), which holds "
            "pickled code; dltrain never loads those. Convert the weights to "
            "safetensors or give a dltrain checkpoint directory"
        )


def check_safetensors(path: Path, data: bytes) -> None:
    """Validate the safetensors header against the file before the library allocates."""
    sniff(path, data)
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated ({len(data)} bytes), not a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise CheckpointError(
            f"{path}: safetensors header claims {n} bytes but the file has "
            f"{len(data)}; the file is truncated or corrupt"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a mapping")
    body = len(data) - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offs = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) for o in offs)
            or not 0 <= offs[0] <= offs[1] <= body
        ):
            raise CheckpointError(
                f"{path}: tensor '{key}' has data offsets {offs} outside the "
                f"{body}-byte data section; the file is corrupt"
            )


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
    check_safetensors(path, data)
    try:
        return st_load(data)
    except Exception as e:  # the library's own checks: report, never crash
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None


def verify(ckpt: Path) -> dict[str, Any]:
    """Check the manifest: format version, and size and sha256 of every file."""
    mpath = ckpt / MANIFEST
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: not a checkpoint directory")
    try:
        manifest = json.loads(mpath.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(
            f"{ckpt}: no {MANIFEST}; the checkpoint is incomplete (an "
            "interrupted save?) or not a dltrain checkpoint"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise CheckpointError(f"{mpath}: unreadable or corrupt manifest") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT_VERSION:
        raise CheckpointError(
            f"{mpath}: checkpoint format version {fmt!r}; this dltrain reads "
            f"version {FORMAT_VERSION}"
        )
    for fname, info in manifest.get("files", {}).items():
        path = ckpt / fname
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: listed in the manifest but missing") from None
        if len(data) != info["size"]:
            raise CheckpointError(
                f"{path}: {len(data)} bytes, the manifest says {info['size']} (truncated?)"
            )
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise CheckpointError(
                f"{path}: contents do not match the manifest's sha256 (corrupted on disk?)"
            )
    return manifest


def read_state(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ckpt / 'state.json'}: unreadable ({e})") from None


def newest_valid(root: Path, warn: Log) -> Path | None:
    """The newest checkpoint that verifies; broken ones are skipped with a warning."""
    for name in reversed(list_checkpoints(root)):
        try:
            verify(root / name)
            return root / name
        except CheckpointError as e:
            warn(f"skipping checkpoint: {e}")
    return None


def resolve(path: str | Path) -> Path:
    """A run directory, a checkpoints directory or a checkpoint -> a verified checkpoint.

    A run directory gives its best checkpoint if one is marked, else the newest."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such run directory or checkpoint")
    if p.is_file():
        sniff(p, p.open("rb").read(8))
        raise CheckpointError(
            f"{p} is a file; give a run directory or a checkpoint directory "
            "(runs/NAME or runs/NAME/checkpoints/step-...)"
        )
    if (p / MANIFEST).exists() or NAME.match(p.name):
        verify(p)
        return p
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    best = root / "BEST"
    if best.is_file():
        name = best.read_text().strip()
        if NAME.match(name) and (root / name).is_dir():
            verify(root / name)
            return root / name
    names = list_checkpoints(root)
    if not names:
        raise CheckpointError(f"{p}: no checkpoints found (has the run saved one yet?)")
    verify(root / names[-1])
    return root / names[-1]


def mark_best(root: Path, name: str) -> None:
    tmp = root / ".BEST.tmp"
    _write_synced(tmp, (name + "\n").encode())
    os.replace(tmp, root / "BEST")
    _fsync_dir(root)


def read_state_dict(ckpt: Path, state: dict[str, Any]) -> dict[str, Any]:
    """A verified checkpoint as `Trainer.load_state_dict` takes it: each safetensors file's
    tensors under its stem (model, optimizer, trainer, ...), and the JSON under `state`."""
    out: dict[str, Any] = {"state": state}
    for path in sorted(ckpt.glob("*.safetensors")):
        out[path.stem] = read_tensors(path)
    return out
