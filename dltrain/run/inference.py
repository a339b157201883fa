"""Load a verified checkpoint with its own spec and preprocessing; predict raw inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from ..data.files import warn
from ..data.prepare import Preprocessor
from ..engine import checkpoint as ck
from ..engine.layers.base import RunContext, keras_shape, to_channels_last
from ..engine.model import Model, compile_model
from ..engine.tensor import Tensor, no_grad
from ..engine.train.losses import build_loss
from ..errors import CheckpointError
from ..spec import RunSpec


@dataclass
class LoadOptions:
    """How checkpoints are read (the CLI's global --allow-nonfinite sets it)."""

    allow_nonfinite: bool = False


LOAD_OPTIONS = LoadOptions()


@dataclass
class Loaded:
    path: Path
    spec: RunSpec
    model: Model
    pre: Preprocessor
    state: dict[str, Any]


def load_checkpoint(path: str | Path) -> Loaded:
    """A run directory, checkpoint or exported bundle -> the model and what it needs."""
    p = Path(path)
    if p.is_dir() and (p / "spec.json").exists():
        return _load_bundle(p)
    ckpt = ck.resolve(path, warn)
    state = ck.read_state(ckpt)
    try:
        spec = RunSpec.model_validate(state["spec"])
    except (KeyError, ValidationError) as e:
        raise CheckpointError(f"{ckpt}/state.json: the stored spec is unreadable ({e})") from None
    model = compile_model(spec.model, seed=spec.seed)
    load_weights_checked(model, ckpt)
    return Loaded(ckpt, spec, model, Preprocessor.from_json(state["preprocessing"]), state)


def load_weights_checked(model: Model, ckpt: Path) -> None:
    """model.safetensors of a verified checkpoint or bundle into `model`: every weight
    present, of the model's dtype, and finite unless --allow-nonfinite."""
    tensors = model.upgrade_keys(ck.read_tensors(ckpt / "model.safetensors"))
    ck.check_weights(ckpt, tensors, model.state_tensors(), not LOAD_OPTIONS.allow_nonfinite)
    try:
        model.load_state_tensors(tensors)
    except ValueError as e:
        raise CheckpointError(f"{ckpt}/model.safetensors: {e}") from None


def _load_bundle(p: Path) -> Loaded:
    import json

    ck.verify(p)
    try:
        spec = RunSpec.model_validate(json.loads(ck.read_regular(p / "spec.json", 1 << 20, p)))
        pre = Preprocessor.from_json(
            json.loads(ck.read_regular(p / "preprocessing.json", 1 << 26, p))
        )
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{p}: unreadable bundle ({e})") from None
    model = compile_model(spec.model, seed=spec.seed)
    load_weights_checked(model, p)
    return Loaded(p, spec, model, pre, {})


@no_grad()
def predict_array(
    loaded: Loaded, raw: np.ndarray, batch_size: int = 512, origin: str = "input"
) -> np.ndarray:
    """Raw inputs (as the user has them) -> probabilities (classification) or values."""
    x = torch.from_numpy(loaded.pre.apply(raw, origin))
    logits = build_loss(loaded.spec, loaded.model).logits
    outs = []
    run = RunContext(training=False)
    for i in range(0, len(x), batch_size):
        out = loaded.model(Tensor(x[i : i + batch_size]), run, logits=logits)
        out = loaded.model.probabilities(out) if logits else out
        outs.append(to_channels_last(out).data)  # image-like outputs as Keras users see them
    if not outs:
        return np.zeros((0,) + keras_shape(loaded.model.output_shape), dtype=np.float32)
    return torch.cat(outs).numpy()
