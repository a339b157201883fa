"""SimpleRNN, LSTM, GRU, Bidirectional and 1-D global pooling in Keras's vocabulary.

Inside the engine a sequence is (N, features, steps), channels-first like every rank-2
sample; a recurrent layer reads it as (N, steps, features) and hands back the same layout.
Weights use torch's layout and gate order (kernel (G*units, features), recurrent_kernel
(G*units, units)); parameter counts are Keras's: LSTM and SimpleRNN have one bias, GRU
(reset_after) has an input and a recurrent bias.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ExportError
from ...spec import seq_layers as S
from .. import functional as F
from .. import ops
from ..distributed import RowsGenerator, bernoulli_rows
from ..tensor import Tensor
from .base import (
    LAYERS,
    BuildContext,
    Layer,
    OnnxGraph,
    RunContext,
    Shape,
    ShapeError,
    need_rank,
    register,
)


def _keep_mask(
    shape: tuple[int, ...],
    p: float,
    like: torch.Tensor,
    gen: torch.Generator | RowsGenerator | None,
) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability p, else 1 / (1 - p)."""
    m = bernoulli_rows(shape, 1 - p, like.dtype, like.device, gen)
    return m.mul_(1.0 / (1.0 - p))


# ONNX's recurrent operators take these activations by name
ONNX_ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu"}


def _reorder(w: np.ndarray, order: list[int]) -> np.ndarray:
    chunks = np.split(w, len(order), axis=0)
    return np.concatenate([chunks[i] for i in order], axis=0)


class _Recurrent(Layer):
    gates = 1
    separate_recurrent_bias = False  # GRU (reset_after): a bias inside the reset product
    onnx_op = "RNN"
    onnx_gate_order = [0]  # chunks of torch's gate order, in ONNX's order
    onnx_attrs: dict[str, int] = {}

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
            if self.separate_recurrent_bias:
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

    # -- ONNX: the RNN/LSTM/GRU operators ---------------------------------------------------
    def onnx_activations(self) -> list[str]:
        s = self.spec
        names = [s.activation] if self.gates == 1 else [s.recurrent_activation, s.activation]
        if self.gates == 4:  # LSTM: f, g, h
            names.append(s.activation)
        for n in names:
            if n not in ONNX_ACTIVATIONS:
                raise ExportError(
                    f"{s.type} with activation '{n}' cannot be exported to ONNX yet "
                    "(tanh, sigmoid and relu can)"
                )
        return [ONNX_ACTIVATIONS[n] for n in names]

    def onnx_weights(self, g: OnnxGraph, owner: Layer, prefix: str) -> list[np.ndarray]:
        """W, R and B of one direction in ONNX's gate order (parameters of `owner`)."""
        order = self.onnx_gate_order
        W = _reorder(g.weight(owner, prefix + "kernel"), order)
        R = _reorder(g.weight(owner, prefix + "recurrent_kernel"), order)
        b = g.weight(owner, prefix + "bias")
        b = np.zeros(W.shape[0], np.float32) if b is None else _reorder(b, order)
        rb = g.weight(owner, prefix + "recurrent_bias")
        rb = np.zeros_like(b) if rb is None else _reorder(rb, order)
        return [W, R, np.concatenate([b, rb])]

    def onnx_run(
        self, g: OnnxGraph, owner: Layer, x: str, prefixes: list[str], direction: str
    ) -> tuple[str, str]:
        """Y (T, dirs, N, units) and Y_h (dirs, N, units) of ONNX's operator over x (N, D, T)."""
        ws = [self.onnx_weights(g, owner, p) for p in prefixes]
        W, R, B = (np.stack([w[i] for w in ws]) for i in range(3))
        name = owner.name
        xt = g.op("Transpose", [x], name, perm=[2, 0, 1])
        ins = [xt, g.const(f"{name}.W", W), g.const(f"{name}.R", R), g.const(f"{name}.B", B)]
        y, y_h = g.node(
            self.onnx_op,
            ins,
            name,
            2,
            direction=direction,
            hidden_size=self.spec.units,
            activations=self.onnx_activations() * len(prefixes),
            **self.onnx_attrs,
        )
        return y, y_h

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        s = self.spec
        y, y_h = self.onnx_run(g, self, xs[0], [""], "reverse" if s.go_backwards else "forward")
        if not s.return_sequences:
            return _pick(g, y_h, 0, 0, self.name)
        seq = _pick(g, y, 1, 0, self.name)  # (T, N, units), aligned with the input steps
        if s.go_backwards:  # Keras: reading order
            rev = np.arange(self.input_shapes[0][1] - 1, -1, -1, dtype=np.int64)
            seq = g.op("Gather", [seq, g.const("rev", rev)], self.name, axis=0)
        return g.op("Transpose", [seq], self.name, perm=[1, 2, 0])


def _pick(g: OnnxGraph, t: str, axis: int, index: int, base: str) -> str:
    return g.op("Gather", [t, g.const("idx", np.asarray(index, np.int64))], base, axis=axis)


@register(S.SimpleRNNSpec)
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


@register(S.LSTMSpec)
class LSTM(_Recurrent):
    gates = 4
    onnx_op = "LSTM"
    onnx_gate_order = [0, 3, 1, 2]  # torch i, f, g, o -> ONNX i, o, f, c

    def run(
        self, x: Tensor, reverse: bool, h_mask: torch.Tensor | None, mask: torch.Tensor | None
    ) -> Tensor:
        return F.lstm(x, *self._w(), **self._gates_kw(reverse, h_mask), mask=mask)


@register(S.GRUSpec)
class GRU(_Recurrent):
    gates = 3
    separate_recurrent_bias = True
    onnx_op = "GRU"
    onnx_gate_order = [1, 0, 2]  # torch r, z, n -> ONNX z, r, h (Keras's order too)
    onnx_attrs = {"linear_before_reset": 1}

    def keras_keys(self) -> list[str]:
        # Keras (reset_after=True) holds both biases in one (2, 3 * units) variable
        return ["kernel", "recurrent_kernel"] + (["bias"] if "bias" in self.params else [])

    def from_keras(self, ws: list[np.ndarray]) -> dict[str, np.ndarray]:
        out = super().from_keras(ws)
        if "bias" in out:
            b = out.pop("bias")
            if b.shape != (2, self.gates * self.spec.units):
                raise ValueError(
                    f"GRU '{self.name}': Keras bias of shape {b.shape}; dltrain's GRU is "
                    "Keras's reset_after=True, whose bias is (2, 3 * units)"
                )
            out["bias"], out["recurrent_bias"] = b[0], b[1]
        return {k: _reorder(v, [1, 0, 2]) for k, v in out.items()}  # z, r, h -> r, z, n

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


@register(S.BidirectionalSpec)
class Bidirectional(Layer):
    """Keras's Bidirectional: the wrapped layer and a copy reading backwards, outputs merged
    step by step (the backward outputs re-aligned with the input steps)."""

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        inner = self.spec.layer.model_copy(update={"trainable": self.spec.trainable})
        cls = LAYERS[inner.type]
        self.directions: list[_Recurrent] = []
        for side in ("forward", "backward"):
            layer = cls(inner, f"{self.name}.{side}")
            assert isinstance(layer, _Recurrent)
            out = layer.build(shapes, ctx)
            for k, p in layer.params.items():
                self.params[f"{side}_{k}"] = p
            self.directions.append(layer)
        if self.spec.merge_mode != "concat":
            return out
        return (2 * out[0],) + out[1:]

    def from_keras(self, ws: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Keras's Bidirectional holds the forward layer's variables, then the backward's."""
        half = len(ws) // 2
        out = {}
        for side, layer, part in zip(
            ("forward", "backward"), self.directions, (ws[:half], ws[half:])
        ):
            out.update({f"{side}_{k}": v for k, v in layer.from_keras(part).items()})
        return out

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

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        s, name = self.spec, self.name
        prefixes = ["forward_", "backward_"]
        y, y_h = self.directions[0].onnx_run(g, self, xs[0], prefixes, "bidirectional")
        if s.layer.return_sequences:
            fwd, bwd = (
                g.op("Transpose", [_pick(g, y, 1, i, name)], name, perm=[1, 2, 0]) for i in (0, 1)
            )
        else:
            fwd, bwd = (_pick(g, y_h, 0, i, name) for i in (0, 1))
        mode = s.merge_mode
        if mode == "concat":
            return g.op("Concat", [fwd, bwd], name, axis=1)
        if mode == "mul":
            return g.op("Mul", [fwd, bwd], name)
        total = g.op("Add", [fwd, bwd], name)
        if mode == "sum":
            return total
        return g.op("Mul", [total, g.const("half", np.float32(0.5))], name)


class _GlobalPool1D(Layer):
    onnx_op = "ReduceMean"

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.op(self.onnx_op, xs, self.name, axes=[2], keepdims=int(self.spec.keepdims))

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        if len(shape) != 2:
            raise ShapeError(f"{self.spec.type} needs a (steps, features) input per sample")
        return (shape[0], 1) if self.spec.keepdims else (shape[0],)


@register(S.GlobalAveragePooling1DSpec)
class GlobalAveragePooling1D(_GlobalPool1D):
    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x, keep = xs[0], self.spec.keepdims
        if run.mask is None:
            return x.mean(2, keepdim=keep)
        # the mean over real steps only (Keras): sum(x m) / max(sum(m), 1)
        m = run.mask.to(x.dtype)[:, None, :]  # (N, 1, T)
        count = m.sum(2, keepdim=keep).clamp(min=1)
        return (x * Tensor(m)).sum(2, keepdim=keep) / Tensor(count)


@register(S.GlobalMaxPooling1DSpec)
class GlobalMaxPooling1D(_GlobalPool1D):
    onnx_op = "ReduceMax"

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        x = xs[0]
        if run.mask is not None:  # padded steps never win the maximum
            x = ops.where(run.mask[:, None, :], x, -1e30)
        return ops.amax(x, 2, keepdim=self.spec.keepdims)
