"""SimpleRNN, LSTM, GRU, Bidirectional and 1-D global pooling in Keras's vocabulary.

Inside the engine a sequence is (N, features, steps), channels-first like every rank-2
sample; a recurrent layer reads it as (N, steps, features) and hands back the same layout.
Weights use torch's layout and gate order (kernel (G*units, features), recurrent_kernel
(G*units, units)); parameter counts are Keras's: LSTM and SimpleRNN have one bias, GRU
(reset_after) has an input and a recurrent bias.
"""

from __future__ import annotations

import torch

from .. import functional as F
from .. import ops
from ..tensor import Tensor
from .base import BuildContext, Layer, RunContext, Shape, ShapeError, need_rank, register


def _keep_mask(
    shape: tuple[int, ...], p: float, like: torch.Tensor, gen: torch.Generator | None
) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability p, else 1 / (1 - p)."""
    m = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p, generator=gen)
    return m.mul_(1.0 / (1.0 - p))


class _Recurrent(Layer):
    gates = 1

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 2, "sequence (steps, features)")
        s = self.spec
        d, steps = shape
        u, g = s.units, self.gates * s.units
        self.add_param("kernel", (g, d), s.kernel_initializer, d, g, ctx)
        self.add_param("recurrent_kernel", (g, u), s.recurrent_initializer, u, g, ctx)
        if s.use_bias:
            b = self.add_param("bias", (g,), s.bias_initializer, d, g, ctx)
            if getattr(s, "unit_forget_bias", False) and str(ctx.device) != "meta":
                b.data[u : 2 * u] = 1.0  # the forget gate is the second of i, f, g, o
            if self.gates == 3:  # GRU's recurrent bias, inside the reset gate's product
                self.add_param("recurrent_bias", (g,), s.bias_initializer, u, g, ctx)
        return (u, steps) if s.return_sequences else (u,)

    def sequence(self, x: Tensor, run: RunContext, reverse: bool) -> Tensor:
        """(N, T, D) -> (N, T, units), output[:, t] the state after reading x_t."""
        s = self.spec
        h_mask = None
        if run.training and s.dropout > 0:  # one mask per sequence over the features
            x = x * Tensor(
                _keep_mask((x.shape[0], 1, x.shape[2]), s.dropout, x.data, run.generator)
            )
        if run.training and s.recurrent_dropout > 0:
            h_mask = _keep_mask((x.shape[0], s.units), s.recurrent_dropout, x.data, run.generator)
        return self.run(x, reverse, h_mask, run.mask)

    def run(
        self, x: Tensor, reverse: bool, h_mask: torch.Tensor | None, mask: torch.Tensor | None
    ) -> Tensor:
        raise NotImplementedError

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        back = self.spec.go_backwards
        y = self.sequence(xs[0].permute(0, 2, 1), run, back)
        if not self.spec.return_sequences:
            return y[:, 0] if back else y[:, -1]
        if back:  # Keras returns the steps in reading order
            y = ops.flip(y, [1])
        return y.permute(0, 2, 1)

    @property
    def activation(self) -> str | None:
        return None  # the state's activation is inside the recurrence

    def _gates_kw(self, reverse: bool, h_mask: torch.Tensor | None) -> dict:
        s = self.spec
        return dict(
            activation=s.activation,
            recurrent_activation=s.recurrent_activation,
            reverse=reverse,
            h_mask=h_mask,
        )

    def _w(self) -> tuple[Tensor, Tensor, Tensor | None]:
        p = self.params
        return p["kernel"], p["recurrent_kernel"], p.get("bias")


@register("SimpleRNN")
class SimpleRNN(_Recurrent):
    def run(
        self, x: Tensor, reverse: bool, h_mask: torch.Tensor | None, mask: torch.Tensor | None
    ) -> Tensor:
        return F.rnn(
            x,
            *self._w(),
            activation=self.spec.activation,
            reverse=reverse,
            h_mask=h_mask,
            mask=mask,
        )


@register("LSTM")
class LSTM(_Recurrent):
    gates = 4

    def run(
        self, x: Tensor, reverse: bool, h_mask: torch.Tensor | None, mask: torch.Tensor | None
    ) -> Tensor:
        return F.lstm(x, *self._w(), **self._gates_kw(reverse, h_mask), mask=mask)


@register("GRU")
class GRU(_Recurrent):
    gates = 3

    def run(
        self, x: Tensor, reverse: bool, h_mask: torch.Tensor | None, mask: torch.Tensor | None
    ) -> Tensor:
        return F.gru(
            x,
            *self._w(),
            self.params.get("recurrent_bias"),
            **self._gates_kw(reverse, h_mask),
            mask=mask,
        )


@register("Bidirectional")
class Bidirectional(Layer):
    """Keras's Bidirectional: the wrapped layer and a copy reading backwards, outputs merged
    step by step (the backward outputs re-aligned with the input steps)."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        inner = self.spec.layer.model_copy(update={"trainable": self.spec.trainable})
        cls = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}[inner.type]
        self.directions = []
        for side in ("forward", "backward"):
            layer = cls(inner, f"{self.name}.{side}")
            out = layer.build(shapes, ctx)
            for k, p in layer.params.items():
                self.params[f"{side}_{k}"] = p
            self.directions.append(layer)
        if self.spec.merge_mode != "concat":
            return out
        return (2 * out[0],) + out[1:]

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0].permute(0, 2, 1)
        fwd, bwd = (
            d.sequence(x, run, reverse) for d, reverse in zip(self.directions, (False, True))
        )
        if not self.spec.layer.return_sequences:
            fwd, bwd = fwd[:, -1], bwd[:, 0]
        mode = self.spec.merge_mode
        if mode == "concat":
            y = ops.cat([fwd, bwd], -1)
        elif mode == "sum":
            y = fwd + bwd
        elif mode == "mul":
            y = fwd * bwd
        else:
            y = (fwd + bwd) * 0.5
        return y.permute(0, 2, 1) if y.ndim == 3 else y


class _GlobalPool1D(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        if len(shape) != 2:
            raise ShapeError(f"{self.spec.type} needs a (steps, features) input per sample")
        return (shape[0], 1) if self.spec.keepdims else (shape[0],)


@register("GlobalAveragePooling1D")
class GlobalAveragePooling1D(_GlobalPool1D):
    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x, keep = xs[0], self.spec.keepdims
        if run.mask is None:
            return x.mean(2, keepdim=keep)
        # the mean over real steps only (Keras): sum(x m) / max(sum(m), 1)
        m = run.mask.to(x.dtype)[:, None, :]  # (N, 1, T)
        count = m.sum(2, keepdim=keep).clamp(min=1)
        return (x * Tensor(m)).sum(2, keepdim=keep) / Tensor(count)


@register("GlobalMaxPooling1D")
class GlobalMaxPooling1D(_GlobalPool1D):
    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]
        if run.mask is not None:  # padded steps never win the maximum
            x = ops.where(run.mask[:, None, :], x, -1e30)
        return ops.amax(x, 2, keepdim=self.spec.keepdims)
