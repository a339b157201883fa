"""Resuming a run: which checkpoint every process resumes from, and whether the config
still describes the run that was saved (a setting added to the schema after the run was
saved counts as its default; operational settings may change)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..engine.distributed import World
from ..errors import CheckpointError, ConfigError
from ..spec import RunSpec

Log = Callable[[str], None]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: d}


_ABSENT = object()


def _default_at(spec: Any, key: str) -> Any:
    """The schema's default for a dotted key of `spec` (a setting added after a run was
    saved, e.g. train.precision), in its JSON form; _ABSENT if there is none."""
    *path, name = key.split(".")
    obj = spec
    for part in path:
        obj = getattr(obj, part, None)
    fields = getattr(type(obj), "model_fields", {})
    if name not in fields or fields[name].is_required():
        return _ABSENT
    value = fields[name].get_default(call_default_factory=True)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def config_changes(
    old: dict[str, Any], new: dict[str, Any], spec: Any = None
) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every setting that differs; with the new `spec`, a key the old
    config lacks counts as its schema default (configs saved before it existed)."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) == b.get(k):
            continue
        if k not in a and spec is not None and _default_at(spec, k) == b.get(k):
            continue
        out.append((k, a.get(k), b.get(k)))
    return out


# settings of how a run is executed, not of what it computes: a resume may change them
OPERATIONAL = (
    "train.distributed.optimizer_sharding",  # the checkpoint format is the same either way
    "train.distributed.check_every_steps",
    "train.distributed.timeout_seconds",
)


def check_resumable(
    spec: RunSpec, state: dict[str, Any], ckpt: Path, allow: Sequence[str], log: Log
) -> None:
    free = [*allow, *OPERATIONAL]
    changes = [
        c
        for c in config_changes(state["spec"], spec.model_dump(mode="json"), spec)
        if not any(c[0] == a or c[0].startswith(a + ".") for a in free)
    ]
    if changes:
        lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, a, b in changes)
        raise ConfigError(
            f"the config differs from the run being resumed ({ckpt}):\n"
            f"{lines}\nrevert it, or allow a change with --allow-config-change KEY"
        )
    if state["dltrain"] != __version__ or state["torch"] != torch.__version__:
        log(
            f"warning: resuming a run saved with dltrain {state['dltrain']} / torch "
            f"{state['torch']} on dltrain {__version__} / torch {torch.__version__}; "
            "bit-exact continuation is not promised across versions"
        )


def agreed_checkpoint(world: World, root: Path, ckpt: Path | None) -> Path | None:
    """Rank 0's choice of checkpoint, told to every rank (its name as bytes in a tensor),
    and each rank's check that it can read it."""
    if not world.active:
        return ckpt
    buf = torch.zeros(64, dtype=torch.uint8, device=world.device())
    if world.is_main and ckpt is not None:
        raw = ckpt.name.encode()
        buf[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    world.all_reduce_(buf, "max")  # rank 0 alone writes a name: the max is its name
    chosen = bytes(buf.cpu().tolist()).rstrip(b"\0").decode()
    if not chosen:
        return None
    path = root / chosen
    if not world.is_main and not path.is_dir():
        raise CheckpointError(
            f"rank {world.rank} cannot see {path}, the checkpoint rank 0 resumes from; on "
            "several machines the run directory must be on a file system they share"
        )
    return path
