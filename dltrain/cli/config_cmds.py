"""`validate`, `summary`, `schema`, `init`: commands that read or write configs only."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import typer

from .app import app, guarded, out, set_option

SetOpt = set_option()


@app.command()
@guarded
def validate(
    config: Path = typer.Argument(..., help="Config file."), set_: list[str] = SetOpt
) -> None:
    """Check a config (schema, shapes) without training; writes nothing."""
    from ..spec import load

    spec = load(str(config), set_ or [])
    from ..engine.checks import check_run

    check_run(spec, meta=True)
    out.print(f"{config}: ok")


@app.command()
@guarded
def summary(
    config: Path = typer.Argument(..., help="Config file (only `model` is read)."),
    set_: list[str] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Layers, output shapes and parameter counts, like Keras's model.summary()."""
    from ..spec import load_model
    from .summary_table import print_summary

    print_summary(load_model(str(config), set_ or []), as_json)


@app.command()
def schema() -> None:
    """Print the JSON Schema of a config file (for editors and CI checks)."""
    from ..spec import json_schema

    out.print_json(json.dumps(json_schema()))


TEMPLATES = ("mlp", "cnn")


@app.command()
@guarded
def init(
    kind: str = typer.Argument("mlp", help="Starter: mlp or cnn."),
    output: Path = typer.Option(
        Path("config.yaml"), "-o", "--output", help="Where to write the config."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter config."""
    from ..errors import ConfigError, DltrainIOError
    from ..fsutil import atomic_write_text

    if kind not in TEMPLATES:
        raise ConfigError(f"unknown starter '{kind}'; choose one of: {', '.join(TEMPLATES)}")
    if output.exists() and not force:
        raise DltrainIOError(f"{output} exists; pass --force to overwrite it")
    text = resources.files("dltrain.templates").joinpath(f"{kind}.yaml").read_text()
    atomic_write_text(output, text)
    out.print(f"wrote {output}; try: dltrain train {output}")


@app.command()
def zoo() -> None:
    """The model zoo: named blocks a config uses as {type: Block, use: zoo:NAME, ...}."""
    from rich.table import Table

    from ..spec.blocks import zoo_blocks

    table = Table(title="model zoo", title_justify="left", show_lines=True)
    for col in ("use", "parameters (defaults)", "what it is"):
        table.add_column(col)
    for name, block in zoo_blocks().items():
        params = ", ".join(f"{k}: {v}" for k, v in (block.get("params") or {}).items())
        table.add_row(name, params or "-", block.get("description", ""))
    out.print(table)
