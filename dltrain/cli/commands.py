"""Imports every command module so each registers itself on the app."""

from . import config_cmds  # noqa: F401
