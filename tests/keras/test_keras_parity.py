"""Keras itself as the oracle: the same layers, built from the same YAML vocabulary (each
case's dict is both a dltrain layer spec and the keyword arguments of `keras.layers.<type>`),
with Keras's random weights converted by each unit's `from_keras`, must give Keras's outputs.

Keras 3 runs on its torch backend here (a test-only dependency); the module is skipped with a
message where Keras is not installed. Inference mode throughout (training-mode math, the
gradients, is checked against torch.autograd in tests/engine).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="Keras 3 is the layer oracle: pip install keras")

from dltrain.engine import Tensor  # noqa: E402
from dltrain.engine.layers.base import RunContext  # noqa: E402
from dltrain.engine.model import compile_model  # noqa: E402
from dltrain.spec.schema import ModelSpec  # noqa: E402

if keras.backend.backend() != "torch":  # pragma: no cover
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)


def keras_layer(d: dict) -> keras.layers.Layer:
    kw = {k: v for k, v in d.items() if k != "type"}
    if "layer" in kw:
        kw["layer"] = keras_layer(kw["layer"])
    return getattr(keras.layers, d["type"])(**kw)


def randomize(obj, rng: np.random.Generator, scale: float = 0.5) -> None:
    """Random Keras weights for a layer or model (variances positive), biases included."""
    obj.set_weights(
        [
            np.abs(w) + 0.5 if "variance" in v.path else w
            for v in obj.weights
            for w in [rng.normal(0.0, scale, tuple(v.shape)).astype(np.float32)]
        ]
    )


def run_both(
    layers: list[dict], input_shape: list[int], x: np.ndarray, seed: int | None = 0, int_input=False
) -> tuple[np.ndarray, np.ndarray]:
    """(Keras's output, dltrain's output) of the same layers with the same weights: Keras's
    random ones (seed), or with seed None Keras's own initial weights."""
    spec = ModelSpec.model_validate(
        {
            "input_shape": input_shape,
            "input_dtype": "int64" if int_input else "float32",
            "layers": layers,
        }
    )
    model = compile_model(spec)
    klayers = [keras_layer(d) for d in layers]
    inp = keras.Input(tuple(input_shape), dtype="int64" if int_input else "float32")
    out = inp
    for kl in klayers:
        out = kl(out, out) if isinstance(kl, keras.layers.MultiHeadAttention) else kl(out)
    kmodel = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    state = {}
    for ours, kl in zip(model.layers, klayers):
        if seed is not None:
            randomize(kl, rng)
        for k, w in ours.from_keras(kl.get_weights()).items():
            state[f"{ours.name}.{k}"] = torch.from_numpy(np.ascontiguousarray(w))
    model.load_state_tensors(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = keras.ops.convert_to_numpy(kmodel(x, training=False))
    xin = torch.from_numpy(np.moveaxis(x, -1, 1) if x.ndim >= 3 and not int_input else x)
    got = model(Tensor(xin), RunContext(training=False)).data.numpy()
    if got.ndim >= 3:
        got = np.moveaxis(got, 1, -1)
    return want, got


def close(want: np.ndarray, got: np.ndarray, what: str, atol: float = 2e-5) -> None:
    assert want.shape == got.shape, f"{what}: Keras {want.shape}, dltrain {got.shape}"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=what)


def rand(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# -- padding arithmetic, exhaustively for small kernels -----------------------------------------
def test_conv2d_padding_strides_dilations():
    x = rand(2, 7, 6, 2)
    n = 0
    for k in (1, 2, 3, 4):
        for s in (1, 2, 3):
            for dil in (1, 2):
                if s > 1 and dil > 1:  # Keras refuses strides > 1 with dilation > 1
                    continue
                for pad in ("valid", "same"):
                    if pad == "valid" and (k - 1) * dil + 1 > 6:
                        continue
                    layer = {"type": "Conv2D", "filters": 3, "kernel_size": k, "strides": s,
                             "padding": pad, "dilation_rate": dil}  # fmt: skip
                    close(*run_both([layer], [7, 6, 2], x), str(layer))
                    n += 1
    assert n > 30


def test_conv2d_rectangular_kernels_and_strides():
    x = rand(2, 8, 7, 3)
    for k, s in (([2, 3], [1, 2]), ([3, 2], [2, 1]), ([1, 4], [3, 2])):
        for pad in ("valid", "same"):
            layer = {"type": "Conv2D", "filters": 2, "kernel_size": k, "strides": s,
                     "padding": pad, "activation": "relu"}  # fmt: skip
            close(*run_both([layer], [8, 7, 3], x), str(layer))


def test_conv1d_padding_strides_dilations_causal():
    x = rand(2, 9, 3)
    for k in (1, 2, 3, 5):
        for s in (1, 2):
            for dil in (1, 2):
                if s > 1 and dil > 1:
                    continue
                for pad in ("valid", "same", "causal"):
                    layer = {"type": "Conv1D", "filters": 4, "kernel_size": k, "strides": s,
                             "padding": pad, "dilation_rate": dil}  # fmt: skip
                    close(*run_both([layer], [9, 3], x), str(layer))


@pytest.mark.parametrize("kind", ["DepthwiseConv2D", "SeparableConv2D"])
def test_depthwise_and_separable_conv2d(kind):
    """MobileNet's and Xception's convolutions: kernels, strides, dilations, paddings and
    depth multipliers, with Keras's (kh, kw, in, multiplier) kernels converted."""
    x = rand(2, 7, 6, 3)
    n = 0
    for k, s, dil in ((1, 1, 1), (3, 1, 1), (3, 2, 1), (2, 3, 1), (3, 1, 2), ([2, 3], [2, 1], 1)):
        for pad in ("valid", "same"):
            for mult in (1, 2):
                layer = {"type": kind, "kernel_size": k, "strides": s, "padding": pad,
                         "dilation_rate": dil, "depth_multiplier": mult}  # fmt: skip
                if kind == "SeparableConv2D":
                    layer |= {"filters": 4, "activation": "relu"}
                elif mult == 2:
                    layer["use_bias"] = False
                close(*run_both([layer], [7, 6, 3], x), str(layer))
                n += 1
    assert n == 24


def test_conv2d_transpose_padding_and_strides():
    x = rand(2, 4, 3, 2)
    for k in (1, 2, 3, 4, 5):
        for s in (1, 2, 3):
            for pad in ("valid", "same"):
                layer = {"type": "Conv2DTranspose", "filters": 3, "kernel_size": k,
                         "strides": s, "padding": pad}  # fmt: skip
                close(*run_both([layer], [4, 3, 2], x), str(layer))


def test_conv2d_transpose_impulse_lands_top_left():
    """The issue's repro: Keras puts a 3x3/stride-2/same kernel at the top-left."""
    layer = {"type": "Conv2DTranspose", "filters": 1, "kernel_size": 3, "strides": 2,
             "padding": "same", "use_bias": False}  # fmt: skip
    x = np.zeros((1, 2, 2, 1), np.float32)
    x[0, 0, 0, 0] = 1.0
    close(*run_both([layer], [2, 2, 1], x), "impulse")


@pytest.mark.parametrize("kind", ["MaxPooling2D", "AveragePooling2D"])
def test_pooling_2d(kind):
    x = rand(2, 7, 6, 3)
    for p in (1, 2, 3):
        for s in (None, 1, 2, 3):
            for pad in ("valid", "same"):
                layer = {"type": kind, "pool_size": p, "strides": s, "padding": pad}
                want, got = run_both([layer], [7, 6, 3], x)
                if kind == "AveragePooling2D" and pad == "same" and _uneven(7, 6, p, s or p):
                    # Keras's torch backend pads 'same' average pooling with replicated edge
                    # values and counts them; TensorFlow and JAX (Keras's definition) average
                    # the real values only, as dltrain does: compare with that definition
                    want = _tf_avg_pool(x, p, s or p)
                close(want, got, str(layer))


def _uneven(h: int, w: int, p: int, s: int) -> bool:
    return any(max((-(-n // s) - 1) * s + p - n, 0) > 0 for n in (h, w))


def _tf_avg_pool(x: np.ndarray, p: int, s: int) -> np.ndarray:
    """TensorFlow's 'same' average pooling: the mean of the window's real values."""
    n, h, w, c = x.shape
    oh, ow = -(-h // s), -(-w // s)
    ph = max((oh - 1) * s + p - h, 0) // 2
    pw = max((ow - 1) * s + p - w, 0) // 2
    out = np.zeros((n, oh, ow, c), np.float32)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - ph, j * s - pw
            win = x[:, max(r0, 0) : min(r0 + p, h), max(c0, 0) : min(c0 + p, w)]
            out[:, i, j] = win.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("kind", ["MaxPooling1D", "AveragePooling1D"])
def test_pooling_1d(kind):
    x = rand(2, 9, 3)
    for p in (1, 2, 3):
        for s in (None, 1, 2):
            for pad in ("valid", "same"):
                if kind == "AveragePooling1D" and pad == "same" and p > 1:
                    continue  # the torch backend's replicated-edge counting, as above
                layer = {"type": kind, "pool_size": p, "strides": s, "padding": pad}
                close(*run_both([layer], [9, 3], x), str(layer))


# -- the other layers ---------------------------------------------------------------------------
CASES = [
    ([{"type": "Dense", "units": 5, "activation": "relu"}], [7]),
    ([{"type": "Dense", "units": 5, "use_bias": False}], [4, 6]),
    ([{"type": "Dense", "units": 3, "activation": "leaky_relu"}], [5]),
    ([{"type": "Dense", "units": 3, "activation": "elu"}], [5]),
    ([{"type": "Dense", "units": 3, "activation": "gelu"}], [5]),
    ([{"type": "Dense", "units": 3, "activation": "softplus"}], [5]),
    ([{"type": "Dense", "units": 3, "activation": "silu"}], [5]),
    ([{"type": "Dense", "units": 4, "activation": "softmax"}], [5]),
    ([{"type": "BatchNormalization"}], [6]),
    ([{"type": "BatchNormalization", "epsilon": 0.01}], [5, 4, 3]),
    ([{"type": "BatchNormalization", "center": False, "scale": False}], [5, 4, 3]),
    ([{"type": "LayerNormalization"}], [5, 6]),
    ([{"type": "LayerNormalization", "epsilon": 0.1}], [6]),
    ([{"type": "GroupNormalization", "groups": 2}], [4, 5, 6]),
    ([{"type": "GroupNormalization", "groups": -1, "epsilon": 0.1}], [3, 4]),
    ([{"type": "GroupNormalization", "groups": 1, "center": False}], [6]),
    ([{"type": "GroupNormalization", "groups": 3, "scale": False}], [7, 6]),
    ([{"type": "Dropout", "rate": 0.5}], [6]),
    ([{"type": "Flatten"}], [3, 4, 2]),
    ([{"type": "Reshape", "target_shape": [4, 6]}], [3, 8]),
    ([{"type": "RepeatVector", "n": 3}], [5]),
    ([{"type": "UpSampling1D"}], [4, 3]),
    ([{"type": "UpSampling1D", "size": 3}], [4, 3]),
    ([{"type": "Permute", "dims": [2, 1]}], [4, 3]),
    ([{"type": "Resizing", "height": 5, "width": 7}], [9, 4, 2]),
    ([{"type": "Resizing", "height": 12, "width": 3, "interpolation": "nearest"}], [5, 6, 3]),
    ([{"type": "Normalization", "mean": 0.5, "variance": 2.0}], [4, 3]),
    (
        [
            {
                "type": "Normalization",
                "axis": -1,
                "mean": [0.1, -0.2, 0.3],
                "variance": [1.0, 4.0, 0.25],
            }
        ],
        [5, 4, 3],
    ),
    (
        [{"type": "Normalization", "axis": None, "mean": 1.0, "variance": 3.0, "invert": True}],
        [5, 4, 3],
    ),
    ([{"type": "Permute", "dims": [3, 1, 2]}], [4, 3, 2]),
    ([{"type": "Activation", "activation": "tanh"}], [5]),
    ([{"type": "ReLU"}], [5]),
    ([{"type": "ReLU", "max_value": 0.5, "negative_slope": 0.1}], [5]),
    ([{"type": "LeakyReLU"}], [5]),
    ([{"type": "LeakyReLU", "negative_slope": 0.05}], [5]),
    ([{"type": "ELU", "alpha": 0.7}], [5]),
    ([{"type": "Softmax"}], [4, 5]),
    ([{"type": "GlobalAveragePooling2D"}], [4, 5, 3]),
    ([{"type": "GlobalMaxPooling2D"}], [4, 5, 3]),
    ([{"type": "GlobalMaxPooling2D", "keepdims": True}], [4, 5, 3]),
    ([{"type": "GlobalAveragePooling1D"}], [6, 3]),
    ([{"type": "GlobalMaxPooling1D"}], [6, 3]),
    ([{"type": "Rescaling", "scale": 1 / 127.5, "offset": -1.0}], [3, 4, 2]),
    ([{"type": "Rescaling", "scale": 0.5}], [5]),
    ([{"type": "Cropping2D", "cropping": 1}], [5, 4, 2]),
    ([{"type": "Cropping2D", "cropping": [2, 1]}], [5, 4, 2]),
    ([{"type": "Cropping2D", "cropping": [[0, 2], [1, 0]]}], [5, 4, 2]),
    ([{"type": "Cropping1D"}], [6, 3]),
    ([{"type": "Cropping1D", "cropping": [0, 2]}], [6, 3]),
    ([{"type": "SpatialDropout1D", "rate": 0.5}], [6, 3]),
    ([{"type": "SpatialDropout2D", "rate": 0.5}], [3, 4, 2]),
    ([{"type": "GaussianNoise", "stddev": 0.3}], [5]),
    ([{"type": "GaussianDropout", "rate": 0.3}], [5]),
    ([{"type": "ZeroPadding2D", "padding": 1}], [3, 4, 2]),
    ([{"type": "ZeroPadding2D", "padding": [[1, 2], [0, 3]]}], [3, 4, 2]),
    ([{"type": "UpSampling2D", "size": 2}], [3, 4, 2]),
    ([{"type": "UpSampling2D", "size": [2, 3]}], [3, 4, 2]),
    ([{"type": "MultiHeadAttention", "num_heads": 2, "key_dim": 3}], [5, 4]),
    ([{"type": "MultiHeadAttention", "num_heads": 3, "key_dim": 2, "value_dim": 4}], [5, 6]),
]
for _rnn in ("SimpleRNN", "LSTM", "GRU"):
    for _seq in (False, True):
        for _back in (False, True):
            CASES.append(
                (
                    [{"type": _rnn, "units": 4, "return_sequences": _seq, "go_backwards": _back}],
                    [6, 3],
                )
            )
    for _mode in ("concat", "sum", "mul", "ave"):
        _inner = {"type": _rnn, "units": 3, "return_sequences": _mode != "sum"}
        CASES.append(([{"type": "Bidirectional", "layer": _inner, "merge_mode": _mode}], [5, 2]))
    CASES.append(([{"type": _rnn, "units": 5, "activation": "relu"}], [1, 3]))
    CASES.append(([{"type": _rnn, "units": 5}], [13, 2]))


@pytest.mark.parametrize("layers,shape", CASES, ids=[str(c[0][0]) for c in CASES])
def test_layer_matches_keras(layers, shape):
    x = rand(3, *shape)
    close(*run_both(layers, shape, x), str(layers))


@pytest.mark.parametrize("rnn", ["SimpleRNN", "LSTM", "GRU"])
def test_embedding_mask_zero_into_recurrent(rnn):
    """Padded sequences: Embedding(mask_zero) feeding a recurrent layer, as Keras masks them."""
    layers = [
        {"type": "Embedding", "input_dim": 10, "output_dim": 4, "mask_zero": True},
        {"type": rnn, "units": 3},
    ]
    x = np.array([[3, 5, 1, 0, 0], [2, 0, 0, 0, 0], [9, 8, 7, 6, 5]], np.int64)
    close(*run_both(layers, [5], x, int_input=True), rnn)


def test_gru_without_reset_after_is_refused_clearly():
    from dltrain.engine.layers.recurrent import GRU

    spec = ModelSpec.model_validate(
        {"input_shape": [4, 2], "layers": [{"type": "GRU", "units": 3}]}
    )
    layer = compile_model(spec).layers[0]
    assert isinstance(layer, GRU)
    with pytest.raises(ValueError, match="reset_after=True"):
        layer.from_keras([np.zeros((2, 9)), np.zeros((3, 9)), np.zeros(9)])


# -- names and weight files -----------------------------------------------------------------
MODEL = [
    {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
    {"type": "BatchNormalization"},
    {"type": "DepthwiseConv2D", "kernel_size": 3, "padding": "same", "depth_multiplier": 2},
    {"type": "SeparableConv2D", "filters": 4, "kernel_size": 2, "padding": "same"},
    {"type": "MaxPooling2D", "pool_size": 2},
    {"type": "Conv2D", "filters": 3, "kernel_size": 2, "padding": "same"},
    {"type": "Reshape", "target_shape": [9, 3]},
    {"type": "Bidirectional", "layer": {"type": "GRU", "units": 4}},
    {"type": "Dense", "units": 5, "activation": "relu"},
    {"type": "Dropout", "rate": 0.2},
    {"type": "Dense", "units": 3, "activation": "softmax"},
]


def _keras_model(layers, shape):
    keras.backend.clear_session()  # a fresh session's names: dense, dense_1, ...
    kmodel = keras.Sequential([keras.Input(tuple(shape))] + [keras_layer(d) for d in layers])
    randomize(kmodel, np.random.default_rng(5))
    return kmodel


def test_default_names_are_keras_3s():
    kmodel = _keras_model(MODEL, [8, 8, 1])
    ours = compile_model(ModelSpec.model_validate({"input_shape": [8, 8, 1], "layers": MODEL}))
    assert [layer.name for layer in ours.layers] == [layer.name for layer in kmodel.layers]


@pytest.mark.parametrize("fmt", ["weights.h5", "keras", "legacy.h5"])
def test_keras_weight_files_load_and_predict_what_keras_predicts(tmp_path, fmt):
    from dltrain.run.weights import load_initial_weights
    from dltrain.spec.schema import LoadWeightsSpec

    kmodel = _keras_model(MODEL, [8, 8, 1])
    path = tmp_path / f"model.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "weights.h5":
            kmodel.save_weights(path)
        else:  # a .keras archive; legacy.h5: Keras 2's HDF5 (model_weights/, layer_names)
            kmodel.save(path)
    spec = ModelSpec.model_validate({"input_shape": [8, 8, 1], "layers": MODEL})
    model = compile_model(spec)
    msgs = []
    load = LoadWeightsSpec(path=str(path), strict=True)
    load_initial_weights(model, load, str(tmp_path), "cfg.yaml:3:3", msgs.append)
    assert "loaded the weights of 8 layer(s)" in msgs[0], msgs
    x = rand(4, 8, 8, 1, seed=7)
    want = keras.ops.convert_to_numpy(kmodel(x, training=False))
    got = model(Tensor(torch.from_numpy(np.moveaxis(x, -1, 1))), RunContext()).data.numpy()
    close(want, got, fmt)


def test_keras_file_that_does_not_fit_is_a_config_error(tmp_path):
    from dltrain.errors import ConfigError
    from dltrain.run.weights import load_initial_weights
    from dltrain.spec.schema import LoadWeightsSpec

    kmodel = _keras_model([{"type": "Dense", "units": 3}], [4])
    kmodel.save_weights(tmp_path / "m.weights.h5")
    spec = ModelSpec.model_validate(
        {"input_shape": [4], "layers": [{"type": "Dense", "units": 3, "use_bias": False}]}
    )
    with pytest.raises(ConfigError, match=r"cfg.yaml:3:3: .*Dense 'dense' has 1 Keras variable"):
        load_initial_weights(
            compile_model(spec),
            LoadWeightsSpec(path=str(tmp_path / "m.weights.h5")),
            str(tmp_path),
            "cfg.yaml:3:3",
            print,
        )
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ConfigError, match="cannot read it as Keras weights"):
        load_initial_weights(
            compile_model(spec),
            LoadWeightsSpec(path=str(tmp_path / "junk.h5")),
            str(tmp_path),
            "cfg.yaml:3:3",
            print,
        )


def test_keras_vgg16_weights_load_into_the_zoo_block_frozen_with_a_new_head(tmp_path):
    """keras.applications.VGG16(weights=None, include_top=False).save_weights(...) loads
    into zoo:vgg16_features by Keras's layer names; the base predicts what Keras predicts."""
    from dltrain.run.weights import load_initial_weights
    from dltrain.spec import load_model

    keras.backend.clear_session()
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    randomize(base, np.random.default_rng(0), scale=0.05)  # 13 ReLU convolutions stay in range
    base.save_weights(tmp_path / "vgg16.weights.h5")
    cfg = tmp_path / "transfer.yaml"
    cfg.write_text(
        "model:\n"
        "  input_shape: [32, 32, 3]\n"
        "  load_weights: {path: vgg16.weights.h5}\n"
        "  layers:\n"
        "    - {type: Block, use: zoo:vgg16_features, trainable: false}\n"
        "    - {type: Flatten}\n"
        "    - {type: Dense, units: 2, activation: softmax, name: head}\n"
    )
    mspec = load_model(str(cfg))
    model = compile_model(mspec)
    msgs = []
    load_initial_weights(model, mspec.load_weights, str(tmp_path), "transfer.yaml", msgs.append)
    assert "loaded the weights of 13 layer(s)" in msgs[0] and "fresh weights: head" in msgs[0]
    frozen = [layer for layer in model.layers if layer.name.startswith("block")]
    assert len(frozen) == 18 and not any(
        p.requires_grad for la in frozen for p in la.params.values()
    )
    assert model.layers[-1].params["kernel"].requires_grad
    x = rand(2, 32, 32, 3, seed=4)
    want = keras.ops.convert_to_numpy(base(x, training=False))
    t = Tensor(torch.from_numpy(np.moveaxis(x, -1, 1)))
    run = RunContext()
    for node in model.nodes[:18]:  # the base: the block's 18 layers
        t = node.layer.forward([t], run)
    got = np.moveaxis(t.data.numpy(), 1, -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_import_makes_a_run_from_keras_weights_that_predicts_what_keras_predicts(tmp_path):
    """`dltrain import` (no training): predict and evaluate work on the converted model."""
    from typer.testing import CliRunner

    from dltrain.cli import app

    def cli(*args: str):
        return CliRunner().invoke(app, list(args))

    cfg = tmp_path / "iris.yaml"
    cfg.write_text(
        "data: {train: {type: builtin, name: iris}, validation_split: 0.2, scaling: none}\n"
        "model:\n"
        "  input_shape: [4]\n"
        "  layers:\n"
        "    - {type: Dense, units: 16, activation: relu}\n"
        "    - {type: Dense, units: 3, activation: softmax}\n"
        "loss: sparse_categorical_crossentropy\n"
        "optimizer: adam\n"
    )
    kmodel = _keras_model(
        [{"type": "Dense", "units": 16, "activation": "relu"},
         {"type": "Dense", "units": 3, "activation": "softmax"}], [4]
    )  # fmt: skip
    kmodel.save_weights(tmp_path / "iris.weights.h5")
    run = tmp_path / "run"
    r = cli("import", str(tmp_path / "iris.weights.h5"), str(cfg), "-o", str(run))
    assert r.exit_code == 0, r.output
    assert "loaded the weights of 2 layer(s)" in r.output and "imported" in r.output
    x = rand(6, 4, seed=2)
    np.save(tmp_path / "x.npy", x)
    r = cli("predict", str(run), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "p.npy"))
    assert r.exit_code == 0, r.output
    want = keras.ops.convert_to_numpy(kmodel(x, training=False))
    close(want, np.load(tmp_path / "p.npy"), "imported run")
    r = cli("evaluate", str(run), "--data", "validation", "--json")
    assert r.exit_code == 0, r.output
    # a file that does not hold every layer is refused unless --partial
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(
        cfg.read_text().replace(
            "    - {type: Dense, units: 3",
            "    - {type: Dense, units: 16, name: extra}\n    - {type: Dense, units: 3",
        )
    )
    r = cli("import", str(tmp_path / "iris.weights.h5"), str(bigger), "-o", str(tmp_path / "b"))
    assert r.exit_code == 2 and "fresh weights: extra" in r.output, r.output
    assert not (tmp_path / "b").exists()


def test_summary_json_matches_keras_summary(tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from dltrain.cli import app

    kmodel = _keras_model(MODEL, [8, 8, 1])
    cfg = tmp_path / "m.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"input_shape": [8, 8, 1], "layers": MODEL}}))
    res = CliRunner().invoke(app, ["summary", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    want = [
        {"name": la.name, "output_shape": list(la.output.shape), "params": la.count_params()}
        for la in kmodel.layers
    ]
    keys = ("name", "output_shape", "params")
    assert [{k: la[k] for k in keys} for la in got["layers"]] == want
    assert got["total_params"] == kmodel.count_params()


@pytest.mark.parametrize(
    "merge", ["Add", "Concatenate", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]
)
def test_merge_layers_match_keras(merge):
    """Two branches from the input merged, as Keras's functional API writes it."""
    layers = [
        {"type": "Dense", "units": 4, "activation": "tanh", "name": "a"},
        {"type": "Dense", "units": 4, "name": "b", "inputs": ["input"]},
        {"type": merge, "inputs": ["a", "b"], "name": "m"},
        {"type": "Dense", "units": 2, "name": "out"},
    ]
    model = compile_model(ModelSpec.model_validate({"input_shape": [5], "layers": layers}))
    inp = keras.Input((5,))
    a = keras.layers.Dense(4, activation="tanh", name="a")(inp)
    b = keras.layers.Dense(4, name="b")(inp)
    m = getattr(keras.layers, merge)(name="m")([a, b])
    kmodel = keras.Model(inp, keras.layers.Dense(2, name="out")(m))
    rng = np.random.default_rng(3)
    state = {}
    for name in ("a", "b", "out"):
        kl = kmodel.get_layer(name)
        randomize(kl, rng)
        ours = next(la for la in model.layers if la.name == name)
        for k, w in ours.from_keras(kl.get_weights()).items():
            state[f"{name}.{k}"] = torch.from_numpy(np.ascontiguousarray(w))
    model.load_state_tensors(state)
    x = rand(3, 5)
    want = keras.ops.convert_to_numpy(kmodel(x, training=False))
    got = model(Tensor(torch.from_numpy(x)), RunContext()).data.numpy()
    close(want, got, merge)


def test_masking_into_lstm_matches_keras():
    layers = [{"type": "Masking", "mask_value": 0.0}, {"type": "LSTM", "units": 3}]
    x = rand(3, 6, 2)
    x[0, 4:] = 0.0  # padded steps
    x[1, 2:] = 0.0
    close(*run_both(layers, [6, 2], x), "Masking")


def test_embedding_matches_keras():
    x = np.array([[1, 4, 2], [0, 9, 3]], np.int64)
    layers = [{"type": "Embedding", "input_dim": 10, "output_dim": 4}]
    close(*run_both(layers, [3], x, int_input=True), "Embedding")


def test_every_layer_type_keras_has_is_compared_here():
    from dltrain.spec.layers import LAYER_TYPES

    covered = {d["type"] for layers, _ in CASES for d in layers} | {
        "Conv2D", "Conv1D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D",
        "MaxPooling2D", "AveragePooling2D",
        "MaxPooling1D", "AveragePooling1D", "Add", "Concatenate", "Masking", "Embedding",
        "Subtract", "Multiply", "Average", "Maximum", "Minimum",
        "MelSpectrogram", "STFTSpectrogram",  # tests/keras/test_keras_audio.py
    }  # fmt: skip
    in_keras = {t for t in LAYER_TYPES if hasattr(keras.layers, t)}
    assert in_keras - covered == set()
    # the KerasHub-style blocks are not in Keras itself (tests/engine checks them on torch),
    # nor is SpecAugment (tests/engine/test_audio_layers.py)
    assert set(LAYER_TYPES) - in_keras == {
        "TokenAndPositionEmbedding",
        "TransformerEncoder",
        "TransformerDecoder",
        "SpecAugment",
    }


def _zoo_outputs(tmp_path, base, block: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A keras.applications model `base` and `block` (a zoo use line): the same layer names
    in the same order; Keras's weight file loads into the block (strict); (Keras's output,
    dltrain's output, channels-last) on the images x."""
    from dltrain.run.weights import load_initial_weights
    from dltrain.spec import load_model
    from dltrain.spec.schema import LoadWeightsSpec

    base.save_weights(tmp_path / "base.weights.h5")
    cfg = tmp_path / "base.yaml"
    cfg.write_text(
        f"model:\n  input_shape: {list(x.shape[1:])}\n"
        f"  layers:\n    - {{type: Block, use: {block}}}\n"
    )
    model = compile_model(load_model(str(cfg)))
    assert [la.name for la in model.layers] == [la.name for la in base.layers[1:]]
    load = LoadWeightsSpec(path=str(tmp_path / "base.weights.h5"), strict=True)
    load_initial_weights(model, load, str(tmp_path), "base.yaml", lambda m: None)
    want = keras.ops.convert_to_numpy(base(x, training=False))
    got = model(Tensor(torch.from_numpy(np.moveaxis(x, -1, 1))), RunContext()).data.numpy()
    return want, (np.moveaxis(got, 1, -1) if got.ndim == 4 else got)


def test_keras_mobilenet_names_and_weights_match_the_zoo(tmp_path):
    """keras.applications.MobileNet(weights=None) with its classifier: the same layer names
    in the same order (depthwise blocks, ReLU6, the 1x1-convolution head), and its Keras 3
    weight file loads into zoo:mobilenet (strict) and predicts what Keras predicts."""
    keras.backend.clear_session()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 64x64 is not one of ImageNet's input sizes
        base = keras.applications.MobileNet(weights=None, input_shape=(64, 64, 3), classes=7)
    # Keras's own random kernels; each batch norm's moving statistics those of its input on
    # these images (as training would leave them) and a random scale and shift, so the signal
    # survives the 27 blocks and the output follows the input
    rng = np.random.default_rng(0)
    x = rand(4, 64, 64, 3, seed=4)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            h = keras.ops.convert_to_numpy(keras.Model(base.input, layer.input)(x))
            c = h.shape[-1]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c).astype(np.float32),
                    rng.normal(0.5, 0.5, c).astype(np.float32),
                    h.mean((0, 1, 2)),
                    h.var((0, 1, 2)),
                ]
            )
    want, got = _zoo_outputs(tmp_path, base, "zoo:mobilenet, classes: 7", x)
    assert np.ptp(want, 0).max() > 0.02, want  # the images are told apart
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_keras_resnet50_names_and_weights_match_the_zoo(tmp_path):
    """keras.applications.ResNet50(weights=None, include_top=False): the same layer names in
    the same order, and its weight file loads into zoo:resnet50_features (strict) and
    predicts what Keras predicts."""
    keras.backend.clear_session()
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    randomize(base, np.random.default_rng(0), scale=0.05)
    want, got = _zoo_outputs(tmp_path, base, "zoo:resnet50_features", rand(2, 32, 32, 3, seed=4))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
