"""Imports every command module so each registers itself on the app."""

from . import (  # noqa: F401
    bench,
    config_cmds,
    evaluate,
    export,
    generate,
    import_cmd,
    predict,
    train,
    tune,
)
