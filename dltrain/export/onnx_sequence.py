"""ONNX for the sequence layers: recurrent layers as ONNX's RNN, LSTM and GRU operators
(weights reordered to ONNX's gate order), attention and Transformer blocks as MatMul,
Softmax and LayerNormalization. Engine sequences are (N, features, steps); ONNX's recurrent
operators read (steps, N, features)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..engine.layers.base import Layer
from .onnx_export import ExportError, _activation, _Graph, _w

ONNX_ACTS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu"}
# chunks of torch's gate order in ONNX's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
ORDER = {"SimpleRNN": [0], "LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2]}
OPS = {"SimpleRNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}


def _reorder(w: np.ndarray, order: list[int]) -> np.ndarray:
    chunks = np.split(w, len(order), axis=0)
    return np.concatenate([chunks[i] for i in order], axis=0)


def _direction_weights(L: Layer, prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = ORDER[L.spec.type if prefix == "" else L.spec.layer.type]
    W = _reorder(_w(L, prefix + "kernel"), order)
    R = _reorder(_w(L, prefix + "recurrent_kernel"), order)
    b = _w(L, prefix + "bias")
    b = np.zeros(W.shape[0], np.float32) if b is None else _reorder(b, order)
    rb = _w(L, prefix + "recurrent_bias")
    rb = np.zeros_like(b) if rb is None else _reorder(rb, order)
    return W, R, np.concatenate([b, rb])


def _acts(spec: Any) -> list[str]:
    names = (
        [spec.activation]
        if spec.type == "SimpleRNN"
        else [spec.recurrent_activation, spec.activation]
        + ([spec.activation] if spec.type == "LSTM" else [])
    )
    for n in names:
        if n not in ONNX_ACTS:
            raise ExportError(
                f"{spec.type} with activation '{n}' cannot be exported to ONNX "
                f"yet (tanh, sigmoid and relu can)"
            )
    return [ONNX_ACTS[n] for n in names]


def _run(
    g: _Graph, L: Layer, x: str, spec: Any, prefixes: list[str], direction: str
) -> tuple[str, str]:
    """Y (T, dirs, N, units) and Y_h (dirs, N, units) of ONNX's operator."""
    ws = [_direction_weights(L, p) for p in prefixes]
    W, R, B = (np.stack([w[i] for w in ws]) for i in range(3))
    xt = g.op("Transpose", [x], L.name, perm=[2, 0, 1])
    ins = [xt, g.const(f"{L.name}.W", W), g.const(f"{L.name}.R", R), g.const(f"{L.name}.B", B)]
    extra = {"linear_before_reset": 1} if spec.type == "GRU" else {}
    y, y_h = g.name(f"{L.name}_Y"), g.name(f"{L.name}_Yh")
    g.nodes.append(
        g.h.make_node(
            OPS[spec.type],
            ins,
            [y, y_h],
            name=y,
            direction=direction,
            hidden_size=spec.units,
            activations=_acts(spec) * len(prefixes),
            **extra,
        )
    )
    return y, y_h


def _pick(g: _Graph, t: str, axis: int, index: int, base: str) -> str:
    return g.op("Gather", [t, g.const("idx", np.asarray(index, np.int64))], base, axis=axis)


def _recurrent(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    s = L.spec
    y, y_h = _run(g, L, xs[0], s, [""], "reverse" if s.go_backwards else "forward")
    if not s.return_sequences:
        return _pick(g, y_h, 0, 0, L.name)
    seq = _pick(g, y, 1, 0, L.name)  # (T, N, units), aligned with the input steps
    if s.go_backwards:  # Keras: reading order
        steps = L.input_shapes[0][1]
        seq = g.op(
            "Gather",
            [seq, g.const("rev", np.arange(steps - 1, -1, -1, dtype=np.int64))],
            L.name,
            axis=0,
        )
    return g.op("Transpose", [seq], L.name, perm=[1, 2, 0])


def _bidirectional(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    s = L.spec
    y, y_h = _run(g, L, xs[0], s.layer, ["forward_", "backward_"], "bidirectional")
    if s.layer.return_sequences:
        fwd, bwd = (
            g.op("Transpose", [_pick(g, y, 1, i, L.name)], L.name, perm=[1, 2, 0]) for i in (0, 1)
        )
    else:
        fwd, bwd = (_pick(g, y_h, 0, i, L.name) for i in (0, 1))
    mode = s.merge_mode
    if mode == "concat":
        return g.op("Concat", [fwd, bwd], L.name, axis=1)
    if mode == "mul":
        return g.op("Mul", [fwd, bwd], L.name)
    total = g.op("Add", [fwd, bwd], L.name)
    return (
        total if mode == "sum" else g.op("Mul", [total, g.const("half", np.float32(0.5))], L.name)
    )


def _pool1d(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    op = "ReduceMean" if L.spec.type == "GlobalAveragePooling1D" else "ReduceMax"
    return g.op(op, xs, L.name, axes=[2], keepdims=int(L.spec.keepdims))


def _pool_steps(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    lft, r, _, _ = L.pads
    kind = "MaxPool" if L.spec.type == "MaxPooling1D" else "AveragePool"
    extra = {"count_include_pad": 0} if kind == "AveragePool" else {}
    return g.op(
        kind, [xs[0]], L.name, kernel_shape=[L.k[1]], strides=[L.s[1]], pads=[lft, r], **extra
    )


def _refuse_mask(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    raise ExportError(
        f"layer '{L.name}' (Masking) makes a padding mask; masks cannot be exported to ONNX "
        "yet (the safetensors bundle keeps them)"
    )


def _dense(g: _Graph, L: Layer, prefix: str, x: str) -> str:
    y = g.op(
        "MatMul",
        [x, g.const(f"{L.name}.{prefix}_kernelT", _w(L, f"{prefix}_kernel").T.copy())],
        L.name,
    )
    b = _w(L, f"{prefix}_bias")
    return y if b is None else g.op("Add", [y, g.const(f"{L.name}.{prefix}_bias", b)], L.name)


def _attend(
    g: _Graph,
    L: Layer,
    q_in: str,
    k_in: str,
    v_in: str,
    q_steps: int,
    s_steps: int,
    heads: int,
    key_dim: int,
    causal: bool,
) -> str:
    """(N, L, D) inputs -> (N, L, D_out), the engine's attend()."""

    def split(t: str, steps: int, perm: list[int]) -> str:
        shape = g.const("shape", np.asarray([0, steps, heads, -1], np.int64))
        return g.op("Transpose", [g.op("Reshape", [t, shape], L.name)], L.name, perm=perm)

    q = split(_dense(g, L, "query", q_in), q_steps, [0, 2, 1, 3])  # (N, H, L, E)
    k = split(_dense(g, L, "key", k_in), s_steps, [0, 2, 3, 1])  # (N, H, E, S)
    v = split(_dense(g, L, "value", v_in), s_steps, [0, 2, 1, 3])  # (N, H, S, E)
    scores = g.op(
        "Mul",
        [g.op("MatMul", [q, k], L.name), g.const("scale", np.float32(1 / math.sqrt(key_dim)))],
        L.name,
    )
    if causal:
        mask = np.triu(np.full((q_steps, s_steps), -np.inf, np.float32), 1)
        scores = g.op("Add", [scores, g.const("causal", mask)], L.name)
    o = g.op("MatMul", [g.op("Softmax", [scores], L.name, axis=-1), v], L.name)
    o = g.op("Transpose", [o], L.name, perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.const("shape", np.asarray([0, q_steps, -1], np.int64))], L.name)
    return _dense(g, L, "output", o)


def _steps_last(g: _Graph, x: str, base: str) -> str:
    return g.op("Transpose", [x], base, perm=[0, 2, 1])


def _mha(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    s = L.spec
    q = _steps_last(g, xs[0], L.name)
    v = _steps_last(g, xs[min(1, len(xs) - 1)], L.name)
    k = _steps_last(g, xs[2], L.name) if len(xs) > 2 else v
    shapes = L.input_shapes
    y = _attend(
        g, L, q, k, v, shapes[0][1], shapes[-1][1], s.num_heads, s.key_dim, s.use_causal_mask
    )
    return _steps_last(g, y, L.name)


def _token_position(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    steps = L.input_shapes[0][0]
    tok = g.op("Gather", [g.const(f"{L.name}.tokens", _w(L, "token_embeddings")), xs[0]], L.name)
    pos = g.const(f"{L.name}.positions", _w(L, "position_embeddings")[:steps].copy())
    return _steps_last(g, g.op("Add", [tok, pos], L.name), L.name)


def _transformer(g: _Graph, L: Layer, xs: list[str], rank: int) -> str:
    s = L.spec
    d, steps = L.input_shapes[0]

    def norm(name: str, x: str) -> str:
        return g.op(
            "LayerNormalization",
            [x, g.const("gamma", _w(L, f"{name}_gamma")), g.const("beta", _w(L, f"{name}_beta"))],
            L.name,
            axis=-1,
            epsilon=float(s.layer_norm_epsilon),
        )

    pre = s.normalize_first
    x = _steps_last(g, xs[0], L.name)
    h = norm("attention_norm", x) if pre else x
    h = _attend(
        g, L, h, h, h, steps, steps, s.num_heads, d // s.num_heads, s.type == "TransformerDecoder"
    )
    x = g.op("Add", [x, h], L.name)
    if not pre:
        x = norm("attention_norm", x)
    h = norm("ffn_norm", x) if pre else x
    h = _activation(g, s.activation, _dense(g, L, "ffn_intermediate", h), L.name)
    x = g.op("Add", [x, _dense(g, L, "ffn_output", h)], L.name)
    if not pre:
        x = norm("ffn_norm", x)
    return _steps_last(g, x, L.name)


SEQUENCE_EXPORTERS = {
    "SimpleRNN": _recurrent,
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "Bidirectional": _bidirectional,
    "GlobalAveragePooling1D": _pool1d,
    "GlobalMaxPooling1D": _pool1d,
    "MultiHeadAttention": _mha,
    "TokenAndPositionEmbedding": _token_position,
    "TransformerEncoder": _transformer,
    "TransformerDecoder": _transformer,
    "MaxPooling1D": _pool_steps,
    "AveragePooling1D": _pool_steps,
    "Masking": _refuse_mask,
}
