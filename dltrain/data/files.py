"""Listing data folders: only regular files count; anything else is skipped with a warning
(a FIFO named .png would block a reader forever)."""

from __future__ import annotations

import os
import stat
import sys


def warn(text: str) -> None:
    """A warning about the data that does not stop a run (skipped files, ...)."""
    sys.stderr.write(f"warning: {text}\n")


def regular_files(folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Paths of the regular files in `folder` with one of `extensions`, sorted."""
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.lower().endswith(extensions):
            continue
        path = os.path.join(folder, name)
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            regular = False
        if regular:
            out.append(path)
        else:
            warn(f"skipping {path}: not a regular file")
    return out


def check_regular(path: str) -> None:
    """DataError unless `path` is a regular file (opening a FIFO would block forever)."""
    from ..errors import DataError

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{path} is not a regular file (a pipe, device or directory?)")
