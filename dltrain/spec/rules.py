"""Rules that span sections of a run spec (data vs model vs task vs loss), checked after
validation; each issue points at the key to change."""

from __future__ import annotations

from typing import Any

from .errors import Issue, SpecError
from .schema import RunSpec


def cross_check(spec: RunSpec, src: Any) -> None:
    """Rules that span sections (each issue at the key to change)."""
    issues: list[Issue] = []
    d, m = spec.data, spec.model
    text = d.train.type == "text"
    texts = ("text", "text_folder")
    label_loss = {
        "int": "sparse_categorical_crossentropy",
        "categorical": "categorical_crossentropy",
        "binary": "binary_crossentropy",
    }
    for key in ("train", "validation", "test"):
        mode = getattr(getattr(d, key), "label_mode", None)
        if mode is not None and spec.loss.type != label_loss[mode]:
            issues.append(
                Issue(
                    src.loc(("data", key, "label_mode")),
                    f"label_mode: {mode} gives labels for loss: {label_loss[mode]}, but the "
                    f"loss is {spec.loss.type}; change one of them",
                )
            )
    for key in ("validation", "test"):
        other = getattr(d, key)
        if (
            other is not None
            and other.type != d.train.type
            and (other.type in texts or d.train.type in texts)
        ):
            issues.append(
                Issue(
                    src.loc(("data", key, "type")),
                    f"data.{key} is '{other.type}' but data.train is '{d.train.type}'; use the "
                    "same kind of source",
                )
            )
    if (spec.task == "gan") != (spec.gan is not None):
        issues.append(
            Issue(
                src.loc(("task",) if spec.gan is None else ("gan",)),
                "task: gan and a `gan` section (the discriminator) go together",
            )
        )
    if spec.task == "gan":
        checks: tuple[tuple[bool, tuple[str, ...], str], ...] = (
            (spec.loss.type != "binary_crossentropy", ("loss",), "loss: binary_crossentropy"),
            (
                spec.train.gradient_accumulation_steps != 1,
                ("train", "gradient_accumulation_steps"),
                "gradient_accumulation_steps: 1",
            ),
            (
                d.validation is not None or d.validation_split > 0,
                ("data",),
                "no validation data (a GAN has no held-out score to watch)",
            ),
            (text, ("data", "train", "type"), "images or vectors, not text"),
            (
                spec.train.precision == "fp16-mixed",
                ("train", "precision"),
                "precision fp32 or bf16-mixed (fp16-mixed's loss scaling is for one loss)",
            ),
        )
        for bad, where, msg in checks:
            if bad:
                issues.append(Issue(src.loc(where), f"task: gan trains with {msg}"))
    if d.train.type in texts:
        if m.input_dtype != "int64" or len(m.input_shape) != 1:
            issues.append(
                Issue(
                    src.loc(("model", "input_shape")),
                    "a text source gives sequences of token ids: set model.input_shape to "
                    "[steps] and model.input_dtype to int64",
                )
            )
    for i, metric in enumerate(spec.metrics):
        ce = ("sparse_categorical_crossentropy", "categorical_crossentropy")
        if metric.type == "perplexity" and spec.loss.type not in ce:
            issues.append(
                Issue(
                    src.loc(("metrics", i)),
                    f"perplexity is exp(cross-entropy); the loss is "
                    f"{spec.loss.type}. Use a cross-entropy loss or drop the metric",
                )
            )
    if d.train.type == "text_folder" and spec.task != "classification":
        issues.append(
            Issue(
                src.loc(("task",)),
                "a text folder's subfolders are classes: task must be classification",
            )
        )
    if text:
        if spec.task != "classification":
            issues.append(
                Issue(
                    src.loc(("task",)),
                    "a text source trains a language model: task must "
                    "be classification (the next token)",
                )
            )
    if issues:
        raise SpecError(issues)
