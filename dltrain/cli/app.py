"""Typer app, global options and the error boundary (exit codes, no tracebacks)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import DltrainError


def _flags_without_type() -> None:
    """Typer's rich help prints '<bool>' beside flags (--quiet, --help), which take no
    value; show them bare, as Click and argparse do."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover  (another Typer layout: keep its help as it is)
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion for the user's shell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train neural networks from YAML specs.",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
STATE = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        out.print(f"dltrain {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    allow_nonfinite: bool = typer.Option(
        False,
        "--allow-nonfinite",
        help="Load checkpoints whose weights hold NaN/Inf (to inspect a diverged run).",
    ),
) -> None:
    STATE["debug"] = debug
    if allow_nonfinite:
        from ..run.inference import LOAD_OPTIONS

        LOAD_OPTIONS.allow_nonfinite = True


def set_option(help: str = "Override a config key: --set train.epochs=3 (repeatable).") -> Any:
    """The `--set KEY=VALUE` option every command that reads a config takes."""
    return typer.Option(None, "--set", metavar="KEY=VALUE", help=help)


def guarded(fn: F) -> F:
    """Turn DltrainError into its message and exit code; never a traceback for user errors."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DltrainError as e:
            if STATE["debug"]:
                raise
            rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") != "1" else "0"
            who = f"rank {rank}: " if rank != "0" else ""  # one of several processes
            lines = str(e).splitlines() or ([] if getattr(e, "said", False) else ["error"])
            for line in lines:
                err.print(f"[bold red]error:[/] {escape(who + line)}", markup=True, highlight=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except OSError as e:  # the last resort: I/O paths raise DltrainIOError themselves
            if STATE["debug"]:
                raise
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            err.print(f"[bold red]error:[/] I/O error{where}: {e.strerror or e}", markup=True)
            raise typer.Exit(6) from None

    return wrapper  # type: ignore[return-value]


def main() -> int:
    try:
        app()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
