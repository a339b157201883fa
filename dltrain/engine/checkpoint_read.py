"""Reading checkpoints, bundles and weight files: every byte is untrusted input.

MANIFEST.json and state.json are parsed with schemas; a manifest may list only plain files
of its own checkpoint, each a regular file once symlinks are resolved, staying inside it,
its size checked before it is read and bounded by the machine's memory, then its sha256.
BEST must name a checkpoint of the same run. Pickles and torch archives are refused by
their content; a safetensors header is checked against the file before the library
allocates anything; weights must have the model's dtypes and be finite.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as st_load

from ..errors import CheckpointError

FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
NAME = re.compile(r"^step-(\d{8,})$")
MAX_HEADER = 100 * 1024 * 1024

Log = Callable[[str], None]


def list_checkpoints(root: Path) -> list[str]:
    """The committed checkpoints of a run: real directories named step-N (a symlink to
    another run's checkpoint is not one of them)."""
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if NAME.match(p.name) and p.is_dir() and not p.is_symlink()
    )


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


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: int
    files: dict[str, _Entry]


class _State(BaseModel):
    """The part of state.json that loading reads; the rest is the trainer's (checked there)."""

    model_config = ConfigDict(extra="allow")
    global_step: int = Field(ge=0)
    epoch: int = Field(ge=0)
    batch: int = Field(ge=0)
    spec: dict[str, Any]
    preprocessing: dict[str, Any]
    dltrain: str
    torch: str


# a file a manifest may list: a plain name in the checkpoint itself
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
REQUIRED = ("model.safetensors", "state.json")
MAX_MANIFEST = 1 << 20


def max_file_bytes() -> int:
    """The largest checkpoint file read into memory: half the machine's memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def read_regular(path: Path, limit: int, inside: Path | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (checked before reading), that
    stays inside `inside` once symlinks are resolved; CheckpointError otherwise."""
    real = Path(os.path.realpath(path))
    if inside is not None and Path(os.path.realpath(inside)) not in real.parents:
        raise CheckpointError(f"{path} points outside {inside}; refusing to read it")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path} is not a regular file (a device, pipe or directory)")
    if st.st_size > limit:
        raise CheckpointError(f"{path} is {st.st_size:,} bytes, more than {limit:,} allowed")
    try:
        with open(real, "rb") as f:
            data = f.read(st.st_size + 1)  # (read(n) reserves n bytes up front)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
    if len(data) != st.st_size:
        raise CheckpointError(f"{path} changed size while being read")
    return data


def parse_tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    check_safetensors(path, data)
    try:
        return st_load(data)
    except Exception as e:  # the library's own checks: report, never crash
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file (bounded, regular, checked before the library allocates)."""
    return parse_tensors(path, read_regular(path, max_file_bytes()))


def _manifest(ckpt: Path) -> _Manifest:
    mpath = ckpt / MANIFEST
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: not a checkpoint directory")
    if not mpath.exists():
        raise CheckpointError(
            f"{ckpt}: no {MANIFEST}; the checkpoint is incomplete (an "
            "interrupted save?) or not a dltrain checkpoint"
        )
    raw = read_regular(mpath, MAX_MANIFEST, ckpt)
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{mpath}: unreadable or corrupt manifest") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt != FORMAT_VERSION:
        raise CheckpointError(
            f"{mpath}: checkpoint format version {fmt!r}; this dltrain reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        manifest = _Manifest.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise CheckpointError(f"{mpath}: invalid manifest at '{where}': {first['msg']}") from None
    for name in manifest.files:
        if not FILE_NAME.match(name) or name == MANIFEST:
            raise CheckpointError(
                f"{mpath}: lists {name!r}; a manifest names plain files of its own checkpoint"
            )
    missing = [f for f in REQUIRED if f not in manifest.files]
    if missing and not (ckpt / "spec.json").exists():  # bundles hold no state.json
        raise CheckpointError(f"{mpath}: does not list {', '.join(missing)}; not a checkpoint")
    return manifest


def verify(ckpt: Path) -> dict[str, Any]:
    """Check the manifest (a schema: format version, plain names, sizes, sha256) and every
    file it lists: a regular file inside the checkpoint, its size checked before it is
    read, then its hash."""
    manifest = _manifest(ckpt)
    limit = max_file_bytes()
    for fname, info in manifest.files.items():
        path = ckpt / fname
        if info.size > limit:
            raise CheckpointError(f"{path}: the manifest says {info.size:,} bytes, too large")
        try:
            size = os.stat(os.path.realpath(path)).st_size
        except FileNotFoundError:
            raise CheckpointError(f"{path}: listed in the manifest but missing") from None
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
        if size != info.size:
            raise CheckpointError(
                f"{path}: {size} bytes, the manifest says {info.size} (truncated?)"
            )
        data = read_regular(path, info.size, ckpt)
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise CheckpointError(
                f"{path}: contents do not match the manifest's sha256 (corrupted on disk?)"
            )
    return manifest.model_dump()


def read_state(ckpt: Path) -> dict[str, Any]:
    """state.json of a verified checkpoint, checked against its schema."""
    path = ckpt / "state.json"
    raw = read_regular(path, max_file_bytes(), ckpt)
    try:
        doc = json.loads(raw)
        _State.model_validate(doc)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not JSON text") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the top"
        raise CheckpointError(f"{path}: invalid at '{where}': {first['msg']}") from None
    return dict(doc)


def newest_valid(root: Path, warn: Log) -> Path | None:
    """The newest checkpoint that verifies; broken ones are skipped with a warning."""
    for name in reversed(list_checkpoints(root)):
        try:
            verify(root / name)
            read_state(root / name)
            return root / name
        except CheckpointError as e:
            warn(f"skipping checkpoint: {e}")
    return None


def _best(root: Path, warn: Log) -> str | None:
    """The name in BEST, when it names a checkpoint of this run; else None (with a warning)."""
    path = root / "BEST"
    if not path.exists() and not path.is_symlink():
        return None
    try:
        name = read_regular(path, 64, root).decode("ascii").strip()
    except (CheckpointError, UnicodeDecodeError):
        warn(f"{path} is unreadable; using the newest checkpoint")
        return None
    if name not in list_checkpoints(root):
        warn(f"{path} names {name!r}, not a checkpoint of this run; using the newest")
        return None
    return name


def resolve(path: str | Path, warn: Log | None = None) -> Path:
    """A run directory, a checkpoints directory or a checkpoint -> a verified checkpoint.

    A run directory gives its best checkpoint if one is marked, else the newest."""
    warn = warn or (lambda m: None)
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such run directory or checkpoint")
    if p.is_file():
        if stat.S_ISREG(os.stat(p).st_mode):
            with open(p, "rb") as f:
                sniff(p, f.read(8))
        raise CheckpointError(
            f"{p} is a file; give a run directory or a checkpoint directory "
            "(runs/NAME or runs/NAME/checkpoints/step-...)"
        )
    if (p / MANIFEST).exists() or NAME.match(p.name):
        verify(p)
        return p
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    best = _best(root, warn)
    if best is not None:
        verify(root / best)
        return root / best
    names = list_checkpoints(root)
    if not names:
        raise CheckpointError(f"{p}: no checkpoints found (has the run saved one yet?)")
    verify(root / names[-1])
    return root / names[-1]


def check_weights(
    ckpt: Path, tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor], finite: bool
) -> None:
    """Weights as the model holds them: the same dtypes, and (unless allowed) finite."""
    for k, t in tensors.items():
        want = own.get(k)
        if want is not None and t.dtype != want.dtype:
            raise CheckpointError(
                f"{ckpt}: weight '{k}' is {t.dtype} in the file, {want.dtype} in the model"
            )
        if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"{ckpt}: weight '{k}' holds NaN or Inf; pass --allow-nonfinite to load it "
                "anyway (e.g. to inspect a diverged run)"
            )


def read_state_dict(ckpt: Path, state: dict[str, Any]) -> dict[str, Any]:
    """A verified checkpoint as `Trainer.load_state_dict` takes it: each safetensors file its
    manifest lists, under its stem (model, optimizer, trainer, ...), and the JSON under
    `state`."""
    out: dict[str, Any] = {"state": state}
    for name in _manifest(ckpt).files:
        if name.endswith(".safetensors"):
            out[name[: -len(".safetensors")]] = read_tensors(ckpt / name)
    return out
