"""MultiHeadAttention (Keras), TokenAndPositionEmbedding and the Transformer encoder and
decoder blocks (KerasHub), built from the functional API.

Sequences are (N, features, steps) inside the engine; these layers work on (N, steps,
features) and hand the engine layout back. Projection kernels use torch's layout
(out, in), one per projection: query, key, value (num_heads * key_dim or value_dim
outputs) and output.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...spec import seq_layers as S
from .. import functional as F
from ..tensor import Tensor
from .base import (
    BuildContext,
    Layer,
    OnnxGraph,
    RunContext,
    Shape,
    ShapeError,
    need_rank,
    register,
)


def _add_dense(
    layer: Layer, prefix: str, n_in: int, n_out: int, bias: bool, ctx: BuildContext
) -> None:
    s = layer.spec
    layer.add_param(f"{prefix}_kernel", (n_out, n_in), s.kernel_initializer, n_in, n_out, ctx)
    if bias:
        layer.add_param(f"{prefix}_bias", (n_out,), s.bias_initializer, n_in, n_out, ctx)


def _dense(layer: Layer, prefix: str, x: Tensor) -> Tensor:
    return F.linear(x, layer.params[f"{prefix}_kernel"], layer.params.get(f"{prefix}_bias"))


def add_attention(
    layer: Layer,
    heads: int,
    key_dim: int,
    value_dim: int,
    dq: int,
    dk: int,
    dv: int,
    d_out: int,
    bias: bool,
    ctx: BuildContext,
) -> None:
    _add_dense(layer, "query", dq, heads * key_dim, bias, ctx)
    _add_dense(layer, "key", dk, heads * key_dim, bias, ctx)
    _add_dense(layer, "value", dv, heads * value_dim, bias, ctx)
    _add_dense(layer, "output", heads * value_dim, d_out, bias, ctx)


def attend(
    layer: Layer,
    q_in: Tensor,
    k_in: Tensor,
    v_in: Tensor,
    heads: int,
    causal: bool,
    dropout: float,
    run: RunContext,
    key_mask: torch.Tensor | None = None,
) -> Tensor:
    """softmax(Q K^T / sqrt(key_dim)) V per head, heads joined and projected: (N, L, D_q)
    queries over (N, S, D) keys and values -> (N, L, D_out)."""
    n, length, _ = q_in.shape
    s_len = k_in.shape[1]

    def split(t: Tensor, steps: int) -> Tensor:  # (N, T, H*E) -> (N, H, T, E)
        return t.reshape(n, steps, heads, -1).permute(0, 2, 1, 3)

    q = split(_dense(layer, "query", q_in), length)
    k = split(_dense(layer, "key", k_in), s_len)
    v = split(_dense(layer, "value", v_in), s_len)
    bias = None
    if key_mask is not None:  # padded keys get -1e9, as in Keras (no row of only -inf)
        bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=key_mask.device)
        bias = bias.masked_fill(~key_mask, -1e9)[:, None, None, :]  # (N, 1, 1, S)
    o = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=bias,
        dropout_p=dropout if run.training else 0.0,
        is_causal=causal,
        generator=run.generator,
    )
    o = o.permute(0, 2, 1, 3).reshape(n, length, -1)  # (N, L, H*E_v)
    return _dense(layer, "output", o)


# -- ONNX: the same attention as MatMul/Softmax nodes ---------------------------------------
def _onnx_dense(g: OnnxGraph, layer: Layer, prefix: str, x: str) -> str:
    kernel_t = g.weight(layer, f"{prefix}_kernel").T.copy()
    y = g.op("MatMul", [x, g.const(f"{layer.name}.{prefix}_kernelT", kernel_t)], layer.name)
    if f"{prefix}_bias" not in layer.params:
        return y
    return g.op("Add", [y, layer.onnx_weight(g, f"{prefix}_bias")], layer.name)


def onnx_attend(
    g: OnnxGraph,
    layer: Layer,
    qkv: tuple[str, str, str],
    q_steps: int,
    s_steps: int,
    heads: int,
    key_dim: int,
    causal: bool,
) -> str:
    """(N, L, D) inputs -> (N, L, D_out), as `attend` computes it."""
    name = layer.name

    def split(t: str, steps: int, perm: list[int]) -> str:
        shape = g.const("shape", np.asarray([0, steps, heads, -1], np.int64))
        return g.op("Transpose", [g.op("Reshape", [t, shape], name)], name, perm=perm)

    q_in, k_in, v_in = qkv
    q = split(_onnx_dense(g, layer, "query", q_in), q_steps, [0, 2, 1, 3])  # (N, H, L, E)
    k = split(_onnx_dense(g, layer, "key", k_in), s_steps, [0, 2, 3, 1])  # (N, H, E, S)
    v = split(_onnx_dense(g, layer, "value", v_in), s_steps, [0, 2, 1, 3])  # (N, H, S, E)
    scale = g.const("scale", np.float32(1 / math.sqrt(key_dim)))
    scores = g.op("Mul", [g.op("MatMul", [q, k], name), scale], name)
    if causal:
        mask = np.triu(np.full((q_steps, s_steps), -np.inf, np.float32), 1)
        scores = g.op("Add", [scores, g.const("causal", mask)], name)
    o = g.op("MatMul", [g.op("Softmax", [scores], name, axis=-1), v], name)
    o = g.op("Transpose", [o], name, perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.const("shape", np.asarray([0, q_steps, -1], np.int64))], name)
    return _onnx_dense(g, layer, "output", o)


def _steps_last(g: OnnxGraph, x: str, base: str) -> str:
    return g.op("Transpose", [x], base, perm=[0, 2, 1])


@register(S.MultiHeadAttentionSpec)
class MultiHeadAttention(Layer):
    n_inputs = -1  # query; query and value; query, value and key (Keras's call order)

    def keras_layout(self, key: str, w: np.ndarray) -> np.ndarray:
        """Keras keeps the heads as an axis: query/key/value kernels (D, heads, dim), the
        output kernel (heads, dim, D), biases (heads, dim)."""
        if key == "output_kernel":
            return np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)
        if key.endswith("kernel"):
            return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
        return w.reshape(-1)

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        for shape in shapes:
            need_rank(self, shape, 2, "sequence (steps, features)")
        q, v = shapes[0], shapes[min(1, len(shapes) - 1)]
        k = shapes[2] if len(shapes) > 2 else v
        if k[1] != v[1]:
            raise ShapeError(f"key and value need the same steps, got {k[1]} and {v[1]}")
        s = self.spec
        d_out = s.output_shape or q[0]
        add_attention(
            self,
            s.num_heads,
            s.key_dim,
            s.value_dim or s.key_dim,
            q[0],
            k[0],
            v[0],
            d_out,
            s.use_bias,
            ctx,
        )
        return (d_out, q[1])

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        q = xs[0].permute(0, 2, 1)
        v = xs[min(1, len(xs) - 1)].permute(0, 2, 1)
        k = xs[2].permute(0, 2, 1) if len(xs) > 2 else v
        s = self.spec
        masks = run.input_masks or [run.mask]
        key_mask = masks[2] if len(masks) > 2 else masks[min(1, len(masks) - 1)]
        y = attend(self, q, k, v, s.num_heads, s.use_causal_mask, s.dropout, run, key_mask)
        return y.permute(0, 2, 1)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        s = self.spec
        q = _steps_last(g, xs[0], self.name)
        v = _steps_last(g, xs[min(1, len(xs) - 1)], self.name)
        k = _steps_last(g, xs[2], self.name) if len(xs) > 2 else v
        steps = (self.input_shapes[0][1], self.input_shapes[-1][1])
        y = onnx_attend(g, self, (q, k, v), *steps, s.num_heads, s.key_dim, s.use_causal_mask)
        return _steps_last(g, y, self.name)

    @property
    def activation(self) -> str | None:
        return None


@register(S.TokenAndPositionEmbeddingSpec)
class TokenAndPositionEmbedding(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        s = self.spec
        if len(shape) != 1 or shape[0] > s.sequence_length:
            raise ShapeError(
                f"TokenAndPositionEmbedding needs token ids (steps,) with at most "
                f"sequence_length={s.sequence_length} steps"
            )
        v, d = s.vocabulary_size, s.embedding_dim
        self.add_param("token_embeddings", (v, d), s.embeddings_initializer, v, d, ctx)
        self.add_param(
            "position_embeddings",
            (s.sequence_length, d),
            "glorot_uniform",
            s.sequence_length,
            d,
            ctx,
        )
        return (d, shape[0])

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        tokens = F.embedding(xs[0], self.params["token_embeddings"])  # (N, T, D)
        pos = self.params["position_embeddings"][: tokens.shape[1]]
        return (tokens + pos).permute(0, 2, 1)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        steps = self.input_shapes[0][0]
        tok = g.op("Gather", [self.onnx_weight(g, "token_embeddings"), xs[0]], self.name)
        positions = g.weight(self, "position_embeddings")[:steps].copy()
        pos = g.const(f"{self.name}.positions", positions)
        return _steps_last(g, g.op("Add", [tok, pos], self.name), self.name)

    def output_mask(self, xs: list[Tensor], mask: torch.Tensor | None) -> torch.Tensor | None:
        return xs[0].data != 0 if self.spec.mask_zero else None


class _TransformerBlock(Layer):
    causal = False
    keras_refusal = "a KerasHub block; its Keras weights are not converted yet"

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        need_rank(self, shape, 2, "sequence (steps, features)")
        s = self.spec
        d = shape[0]
        if d % s.num_heads:
            raise ShapeError(
                f"{s.type}: {d} features do not split into num_heads={s.num_heads} heads"
            )
        head = d // s.num_heads
        add_attention(self, s.num_heads, head, head, d, d, d, d, True, ctx)
        for norm in ("attention_norm", "ffn_norm"):
            self.add_param(f"{norm}_gamma", (d,), "ones", d, d, ctx)
            self.add_param(f"{norm}_beta", (d,), "zeros", d, d, ctx)
        _add_dense(self, "ffn_intermediate", d, s.intermediate_dim, True, ctx)
        _add_dense(self, "ffn_output", s.intermediate_dim, d, True, ctx)
        return shape

    def _norm(self, name: str, x: Tensor) -> Tensor:
        p = self.params
        return F.layer_norm(
            x, [x.shape[-1]], p[f"{name}_gamma"], p[f"{name}_beta"], self.spec.layer_norm_epsilon
        )

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        s = self.spec
        pre = s.normalize_first
        x = xs[0].permute(0, 2, 1)  # (N, T, D)
        h = self._norm("attention_norm", x) if pre else x
        h = attend(self, h, h, h, s.num_heads, self.causal, s.dropout, run, run.mask)
        x = x + F.dropout(h, s.dropout, run.training, run.generator)
        if not pre:
            x = self._norm("attention_norm", x)
        h = self._norm("ffn_norm", x) if pre else x
        h = (
            F.ACTIVATIONS[s.activation](_dense(self, "ffn_intermediate", h))
            if s.activation != "linear"
            else _dense(self, "ffn_intermediate", h)
        )
        h = _dense(self, "ffn_output", h)
        x = x + F.dropout(h, s.dropout, run.training, run.generator)
        if not pre:
            x = self._norm("ffn_norm", x)
        return x.permute(0, 2, 1)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        s, name = self.spec, self.name
        d, steps = self.input_shapes[0]

        def norm(which: str, x: str) -> str:
            ins = [x, self.onnx_weight(g, f"{which}_gamma"), self.onnx_weight(g, f"{which}_beta")]
            eps = float(s.layer_norm_epsilon)
            return g.op("LayerNormalization", ins, name, axis=-1, epsilon=eps)

        pre = s.normalize_first
        x = _steps_last(g, xs[0], name)
        h = norm("attention_norm", x) if pre else x
        h = onnx_attend(
            g, self, (h, h, h), steps, steps, s.num_heads, d // s.num_heads, self.causal
        )
        x = g.op("Add", [x, h], name)
        if not pre:
            x = norm("attention_norm", x)
        h = norm("ffn_norm", x) if pre else x
        h = g.activation(s.activation, _onnx_dense(g, self, "ffn_intermediate", h), name)
        x = g.op("Add", [x, _onnx_dense(g, self, "ffn_output", h)], name)
        if not pre:
            x = norm("ffn_norm", x)
        return _steps_last(g, x, name)

    @property
    def activation(self) -> str | None:
        return None


@register(S.TransformerEncoderSpec)
class TransformerEncoder(_TransformerBlock):
    pass


@register(S.TransformerDecoderSpec)
class TransformerDecoder(_TransformerBlock):
    causal = True
