"""`dltrain generate`."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, guarded, out


@app.command()
@guarded
def generate(
    run: Path = typer.Argument(..., help="Run directory or checkpoint of a language model."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue."),
    length: int = typer.Option(200, "--length", "-n", help="Tokens to generate."),
    temperature: float = typer.Option(
        1.0, "--temperature", "-t", help="Sampling temperature; 0 picks the most likely token."
    ),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the k most likely (0: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling."),
) -> None:
    """Continue a prompt with a language model trained on a text source."""
    from ..run.generate import generate_text

    out.print(generate_text(str(run), prompt, length, temperature, top_k, seed), markup=False)
