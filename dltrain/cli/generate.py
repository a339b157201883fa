"""`dltrain generate`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from .app import app, guarded, out


@app.command()
@guarded
def generate(
    run: Path = typer.Argument(..., help="Run directory or checkpoint of a generative model."),
    prompt: str = typer.Option(None, "--prompt", "-p", help="Language model: text to continue."),
    output: Path = typer.Option(
        None, "--output", "-o", help="GAN: write samples to a .png grid or a .npy array."
    ),
    length: int = typer.Option(
        None, "--length", "-n", help="Tokens to generate (default 200), or GAN samples (16)."
    ),
    temperature: float = typer.Option(
        1.0, "--temperature", "-t", help="Sampling temperature; 0 picks the most likely token."
    ),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the k most likely (0: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling."),
) -> None:
    """Continue a prompt with a language model, or draw samples from a GAN's generator."""
    from ..run.generate import generate_samples, generate_text

    if output is not None:
        n = generate_samples(str(run), 16 if length is None else length, seed, str(output))
        out.print(f"wrote {n} samples to {output}")
        return
    if prompt is None:
        raise ConfigError("give --prompt TEXT (language models) or --output FILE (GANs)")
    text = generate_text(
        str(run), prompt, 200 if length is None else length, temperature, top_k, seed
    )
    out.print(text, markup=False)
