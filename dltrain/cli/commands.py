"""Imports every command module so each registers itself on the app."""

from . import bench, config_cmds, evaluate, export, generate, predict, train, tune  # noqa: F401
