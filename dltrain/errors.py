"""Errors a user can act on, each with the exit code the CLI returns for it.

Exit codes: 2 config, 3 data, 4 checkpoint, 5 non-finite training, 6 I/O (a data-parallel
peer gone included).
"""

from __future__ import annotations


class DltrainError(Exception):
    """Base class: a message for the user and the process exit code."""

    exit_code = 1


class ConfigError(DltrainError):
    exit_code = 2


class DataError(DltrainError):
    exit_code = 3


class CheckpointError(DltrainError):
    exit_code = 4


class NonFiniteError(DltrainError):
    exit_code = 5


class DltrainIOError(DltrainError):
    exit_code = 6


class ExportError(DltrainError):
    """A model (or one of its layers) that the asked format cannot hold."""

    exit_code = 2


class DistributedError(DltrainIOError):
    """A data-parallel job that cannot go on: a peer process gone or not answering, a
    rendezvous that failed, processes that disagree."""
