"""Load a verified checkpoint with its own spec and preprocessing; predict raw inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from ..data.prepare import Preprocessor
from ..engine import checkpoint as ck
from ..engine.layers.base import RunContext, keras_shape, to_channels_last
from ..engine.model import Model, compile_model
from ..engine.tensor import Tensor, no_grad
from ..engine.train.losses import build_loss
from ..errors import CheckpointError
from ..spec import RunSpec


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
    ckpt = ck.resolve(path)
    state = ck.read_state(ckpt)
    try:
        spec = RunSpec.model_validate(state["spec"])
    except (KeyError, ValidationError) as e:
        raise CheckpointError(f"{ckpt}/state.json: the stored spec is unreadable ({e})") from None
    model = compile_model(spec.model, seed=spec.seed)
    try:
        model.load_state_tensors(ck.read_tensors(ckpt / "model.safetensors"))
    except ValueError as e:
        raise CheckpointError(f"{ckpt}/model.safetensors: {e}") from None
    return Loaded(ckpt, spec, model, Preprocessor.from_json(state["preprocessing"]), state)


def _load_bundle(p: Path) -> Loaded:
    import json

    ck.verify(p)
    try:
        spec = RunSpec.model_validate(json.loads((p / "spec.json").read_text()))
        pre = Preprocessor.from_json(json.loads((p / "preprocessing.json").read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{p}: unreadable bundle ({e})") from None
    model = compile_model(spec.model, seed=spec.seed)
    model.load_state_tensors(ck.read_tensors(p / "model.safetensors"))
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
