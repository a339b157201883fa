"""Checks that need both the model and the rest of the run spec (output vs loss and task)."""

from __future__ import annotations

from ..spec import RunSpec
from ..spec.errors import Issue, SpecError
from .layers.base import keras_shape
from .model import Model, compile_model

CLASSIFICATION_LOSSES = (
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "kl_divergence",
)
REGRESSION_LOSSES = ("mean_squared_error", "mean_absolute_error", "huber")


def check_run(spec: RunSpec, meta: bool = False) -> Model:
    """Compile the model (on the meta device: shapes only) and check it fits the loss."""
    model = compile_model(spec.model, seed=spec.seed, device="meta" if meta else "cpu")
    src = spec.model._source
    last = len(spec.model.layers) - 1
    where = src.loc(("layers", last)) if src else None
    out = model.output_shape
    loss = spec.loss.type
    problems: list[str] = []
    if len(out) != 1 and spec.task == "classification":
        problems.append(
            f"the model's output has shape {keras_shape(out)} per sample, but "
            f"{loss} needs a flat (units,) output; add a Flatten or "
            "GlobalAveragePooling2D before the final Dense layers"
        )
    elif spec.task == "classification":
        if loss not in CLASSIFICATION_LOSSES:
            problems.append(
                f"task 'classification' needs a classification loss (one of "
                f"{', '.join(CLASSIFICATION_LOSSES)}), not {loss}"
            )
        elif loss == "binary_crossentropy" and out[0] != 1:
            problems.append(
                f"binary_crossentropy needs 1 output unit (a sigmoid), the model "
                f"has {out[0]}; or use sparse_categorical_crossentropy"
            )
        elif loss != "binary_crossentropy" and out[0] < 2:
            problems.append(
                f"{loss} needs one output unit per class (2 or more); for two "
                "classes with 1 unit use binary_crossentropy"
            )
    elif loss not in REGRESSION_LOSSES:
        problems.append(
            f"task 'regression' needs a regression loss (one of "
            f"{', '.join(REGRESSION_LOSSES)}), not {loss}"
        )
    if problems:
        loss_loc = spec._source.loc(("loss",)) if spec._source else None
        raise SpecError([Issue(where if len(out) != 1 else loss_loc, p) for p in problems])
    src = spec.data.train
    if spec.task == "regression" and getattr(src, "type", None) == "synthetic":
        want = tuple(src.targets or [1])
        if want != keras_shape(out):
            raise SpecError(
                [
                    Issue(
                        spec._source.loc(("data", "train")) if spec._source else None,
                        f"synthetic targets have shape {list(want)} per "
                        f"sample but the model outputs {list(keras_shape(out))}; "
                        "set data.train.targets",
                    )
                ]
            )
    return model
