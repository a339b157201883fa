"""Imports every command module so each registers itself on the app."""

from . import config_cmds, evaluate, export, predict, train  # noqa: F401
