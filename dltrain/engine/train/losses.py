"""Keras losses on the engine. A softmax (sigmoid) output followed by its cross-entropy is
computed from the logits, as Keras does, for numerical stability."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import functional as F
from .. import ops
from ..model import Model
from ..tensor import Tensor

EPS = 1e-7  # Keras's clip for probabilities


@dataclass
class Loss:
    fn: Callable[[Tensor, torch.Tensor], Tensor]
    logits: bool  # call the model with logits=True


def build_loss(spec, model: Model) -> Loss:
    """The training objective for a run spec's `loss` and its compiled model."""
    ls = spec.loss
    t = ls.type
    final = model.final_activation
    if t in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        smoothing = getattr(ls, "label_smoothing", 0.0)
        if ls.from_logits or final == "softmax":
            return Loss(
                lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing),
                logits=final == "softmax",
            )

        def ce_probs(out: Tensor, y: torch.Tensor) -> Tensor:
            logp = ops.log(out.clamp(EPS, 1 - EPS))
            if y.is_floating_point():
                return -(logp * Tensor(y)).sum(1).mean()
            n = out.shape[1]
            tgt = torch.full((len(y), n), smoothing / n, dtype=out.dtype, device=out.device)
            tgt.scatter_(1, y.view(-1, 1), 1 - smoothing + smoothing / n)
            return -(logp * Tensor(tgt)).sum(1).mean()

        return Loss(ce_probs, logits=False)
    if t == "binary_crossentropy":
        eps = ls.label_smoothing

        def target(y: torch.Tensor, like: Tensor) -> torch.Tensor:
            y = y.to(like.dtype).reshape(like.shape)
            return y * (1 - eps) + 0.5 * eps

        if ls.from_logits or final == "sigmoid":
            return Loss(
                lambda out, y: F.binary_cross_entropy_with_logits(out, target(y, out)),
                logits=final == "sigmoid",
            )
        return Loss(
            lambda out, y: F.binary_cross_entropy(out.clamp(EPS, 1 - EPS), target(y, out)),
            logits=False,
        )
    if t == "kl_divergence":

        def kld(out: Tensor, y: torch.Tensor) -> Tensor:
            logp = F.log_softmax(out, 1) if final == "softmax" else ops.log(out.clamp(EPS, 1))
            return F.kl_div(logp, y.to(out.dtype), reduction="batchmean")

        return Loss(kld, logits=final == "softmax")

    def regression(fn):
        return lambda out, y: fn(out, Tensor(y.to(out.dtype).reshape(out.shape)))

    if t == "mean_squared_error":
        return Loss(regression(F.mse_loss), logits=False)
    if t == "mean_absolute_error":
        return Loss(regression(F.l1_loss), logits=False)
    if t == "huber":
        return Loss(regression(lambda a, b: F.huber_loss(a, b, delta=ls.delta)), logits=False)
    raise ValueError(f"unknown loss {t}")
