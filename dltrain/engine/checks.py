"""Checks that need both the model and the rest of the run spec (output vs loss and task)."""

from __future__ import annotations

from typing import Any

from ..spec import RunSpec
from ..spec.errors import Issue, SpecError
from .layers.base import keras_shape
from .memory import check_memory, optimizer_slots
from .model import Model, compile_model

CLASSIFICATION_LOSSES = (
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "kl_divergence",
)
REGRESSION_LOSSES = ("mean_squared_error", "mean_absolute_error", "huber")


def check_run(spec: RunSpec, meta: bool = False) -> Model:
    """Compile the model (on the meta device: shapes only) and check it fits the loss and
    the machine's memory; with meta=False, then compile it for real."""
    model = compile_model(spec.model, seed=spec.seed, device="meta")
    slots = optimizer_slots(spec.optimizer)
    check_memory(spec.model, model, _where(spec.model), spec.train.batch_size, slots)
    if spec.gan is not None:
        d = spec.gan.discriminator
        disc = compile_model(d, seed=spec.seed + 1, device="meta")
        check_memory(d, disc, _where(d), spec.train.batch_size, slots)
    _check_fit(spec, model, meta)
    return model if meta else compile_model(spec.model, seed=spec.seed, device="cpu")


def _where(model_spec: Any) -> Any:
    src = model_spec._source
    return lambda path: src.loc(path) if src else None


def _check_fit(spec: RunSpec, model: Model, meta: bool) -> None:
    """The model's output against the loss, the task and the data."""
    src = spec.model._source
    last = len(spec.model.layers) - 1
    where = src.loc(("layers", last)) if src else None
    out = model.output_shape
    loss = spec.loss.type
    problems: list[str] = []
    text = spec.data.train.type == "text"
    if spec.task == "gan":
        problems += _gan_problems(spec, model, meta)
    elif text:
        problems += _language_model_problems(spec, model)
    elif len(out) != 1 and spec.task == "classification":
        problems.append(
            f"the model's output has shape {keras_shape(out)} per sample, but "
            f"{loss} needs a flat (units,) output; add a Flatten or "
            "GlobalAveragePooling2D before the final Dense layers"
        )
    elif spec.task == "classification":
        if spec.data.train.type == "text_folder":
            problems += _embedding_problems(model, spec.data.train.vocabulary_size)
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
        want = tuple(getattr(src, "targets", None) or [1])
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


def _language_model_problems(spec: RunSpec, model: Model) -> list[str]:
    """A text source: one class per step, every token id within the model's tables."""
    out, vocab = model.output_shape, getattr(spec.data.train, "vocabulary_size", 0)
    steps = spec.model.input_shape[0]
    if spec.loss.type != "sparse_categorical_crossentropy":
        return [
            f"a language model's targets are token ids: use sparse_categorical_crossentropy, "
            f"not {spec.loss.type}"
        ]
    if len(out) != 2 or out[1] != steps:
        return [
            f"a language model predicts the next token at each of the {steps} steps: the "
            f"output must be ({steps}, {vocab}), got {keras_shape(out)} (recurrent layers "
            "need return_sequences: true)"
        ]
    problems = []
    if out[0] < vocab:
        problems.append(
            f"the last layer has {out[0]} units but data.train.vocabulary_size is "
            f"{vocab}; make them equal"
        )
    return problems + _embedding_problems(model, vocab)


def _embedding_problems(model: Model, vocab: int) -> list[str]:
    """Every embedding table holds every token id of the text source."""
    problems = []
    for layer in model.layers:
        size = getattr(layer.spec, "input_dim", None) or getattr(
            layer.spec, "vocabulary_size", None
        )
        if size is not None and size < vocab:
            problems.append(
                f"layer '{layer.name}' embeds {size} token ids but "
                f"data.train.vocabulary_size is {vocab}; make them equal"
            )
    return problems


def _gan_problems(spec: RunSpec, generator: Model, meta: bool) -> list[str]:
    """The generator's output is the discriminator's input; the discriminator gives one
    logit (or a sigmoid probability)."""
    assert spec.gan is not None  # the schema pairs task: gan with a gan section
    disc = compile_model(spec.gan.discriminator, spec.seed + 1, device="meta" if meta else "cpu")
    g_out = keras_shape(generator.output_shape)
    d_in = tuple(spec.gan.discriminator.input_shape)
    problems = []
    if g_out != d_in:
        problems.append(
            f"the generator makes {list(g_out)} samples but the discriminator's input_shape "
            f"is {list(d_in)}; make them equal"
        )
    if disc.output_shape != (1,) or disc.final_activation not in (None, "linear", "sigmoid"):
        problems.append(
            f"the discriminator must end in one logit (Dense(1), no activation or sigmoid), "
            f"got output {list(keras_shape(disc.output_shape))} "
            f"({disc.final_activation or 'linear'})"
        )
    return problems
