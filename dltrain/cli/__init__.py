"""The `dltrain` command line: one command per module, each thin."""

from __future__ import annotations

import sys

from . import commands  # noqa: F401  (registers every command on `app` at import)
from .app import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
