"""ONNX export checked by onnx.checker and onnxruntime against `dltrain predict`; the
safetensors bundle; refusals. Every layer in the catalogue is exported by some model here."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dltrain.engine.layers import LAYERS
from dltrain.export import export_checkpoint
from dltrain.export.onnx_export import ExportError
from dltrain.run.inference import load_checkpoint, predict_array
from dltrain.run.train import train_run
from tests.cli.helpers import ROOT, dltrain

CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml"))

CATALOGUE = """\
name: catalogue
data: {train: {type: synthetic, samples: 64, features: 192, classes: 3}}
model:
  input_shape: [8, 8, 3]
  layers:
    - {type: Rescaling, scale: 0.5, offset: -0.25}
    - {type: SpatialDropout2D, rate: 0.2}
    - {type: Conv2D, filters: 4, kernel_size: 3, strides: 2, padding: same, activation: gelu}
    - {type: GaussianNoise, stddev: 0.1}
    - {type: GroupNormalization, groups: 2}
    - {type: BatchNormalization}
    - {type: LeakyReLU, negative_slope: 0.2}
    - {type: ZeroPadding2D, padding: [[1, 0], [0, 1]]}
    - {type: AveragePooling2D, pool_size: 2, padding: same}
    - {type: UpSampling2D, size: 2, name: up}
    - {type: Conv2DTranspose, filters: 4, kernel_size: 3, padding: same, activation: silu,
       name: ct}
    - {type: Add, inputs: [up, ct]}
    - {type: Cropping2D, cropping: [[1, 0], [0, 1]], name: crop}
    - {type: ZeroPadding2D, padding: [[1, 0], [0, 1]], name: uncrop}
    - {type: Subtract, inputs: [uncrop, up], name: diff}
    - {type: Multiply, inputs: [diff, up], name: prod}
    - {type: Maximum, inputs: [prod, diff], name: hi}
    - {type: Minimum, inputs: [prod, diff], name: lo}
    - {type: Average, inputs: [hi, lo, up]}
    - {type: GaussianDropout, rate: 0.2}
    - {type: MaxPooling2D, pool_size: 3, strides: 2, padding: same, name: mp}
    - {type: Dense, units: 6, activation: softplus, name: dch}
    - {type: Concatenate, inputs: [mp, dch]}
    - {type: LayerNormalization}
    - {type: ELU}
    - {type: Reshape, target_shape: [9, 10]}
    - {type: Conv1D, filters: 5, kernel_size: 3, padding: same, activation: tanh}
    - {type: Flatten}
    - {type: Dropout, rate: 0.1}
    - {type: Dense, units: 16, activation: sigmoid}
    - {type: GroupNormalization, groups: 4, center: false}
    - {type: ReLU, max_value: 0.7}
    - {type: Dense, units: 3}
    - {type: Softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1, batch_size: 16}
logging: {tensorboard: false}
"""

GENERATOR = """\
name: generator
data: {train: {type: synthetic, samples: 64, features: 10, classes: 2}}
model:
  input_shape: [10]
  layers:
    - {type: Dense, units: 128, use_bias: false, activation: relu}
    - {type: Reshape, target_shape: [4, 4, 8]}
    - {type: BatchNormalization}
    - {type: Conv2DTranspose, filters: 4, kernel_size: 4, strides: 2, padding: same,
       use_bias: false}
    - {type: BatchNormalization}
    - {type: LeakyReLU, negative_slope: 0.2}
    - {type: Conv2DTranspose, filters: 3, kernel_size: 3, strides: 2, activation: tanh}
    - {type: Conv2DTranspose, filters: 3, kernel_size: 5, strides: 2, padding: same,
       activation: leaky_relu}
    - {type: DepthwiseConv2D, kernel_size: 3, strides: 2, padding: same, depth_multiplier: 2,
       activation: relu, name: dw}
    - {type: SeparableConv2D, filters: 4, kernel_size: [2, 3], padding: same, activation: tanh}
    - {type: GlobalMaxPooling2D, name: gmax}
    - {type: GlobalAveragePooling2D, inputs: [dw], name: gavg}
    - {type: Concatenate, inputs: [gmax, gavg]}
    - {type: Dense, units: 2, activation: log_softmax}
    - {type: Activation, activation: relu}
    - {type: Dense, units: 2, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1, batch_size: 16}
logging: {tensorboard: false}
"""

EMBEDDING = """\
name: tokens
data: {train: {type: npz, path: tokens.npz}}
model:
  input_shape: [6]
  input_dtype: int64
  layers:
    - {type: Embedding, input_dim: 20, output_dim: 4}
    - {type: Conv1D, filters: 3, kernel_size: 2, activation: relu}
    - {type: Flatten}
    - {type: Dense, units: 2, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1, batch_size: 8}
logging: {tensorboard: false}
"""

SEQUENCE = """\
name: sequence
data: {train: {type: npz, path: tokens.npz, x_key: x8}}
model:
  input_shape: [8]
  input_dtype: int64
  layers:
    - {type: TokenAndPositionEmbedding, vocabulary_size: 20, sequence_length: 10,
       embedding_dim: 12, name: emb}
    - {type: TransformerEncoder, num_heads: 3, intermediate_dim: 16, activation: gelu}
    - {type: TransformerDecoder, num_heads: 2, intermediate_dim: 16, normalize_first: true}
    - {type: MultiHeadAttention, num_heads: 2, key_dim: 4, value_dim: 5, use_causal_mask: true,
       name: att}
    - {type: MultiHeadAttention, num_heads: 2, key_dim: 3, inputs: [att, emb],
       output_shape: 10, name: cross}
    - {type: Conv1D, filters: 6, kernel_size: 3, padding: causal, dilation_rate: 2,
       inputs: [emb]}
    - {type: MaxPooling1D, pool_size: 2, padding: same}
    - {type: AveragePooling1D, pool_size: 3, strides: 2, padding: same}
    - {type: GlobalAveragePooling1D, name: cpool}
    - {type: Bidirectional, layer: {type: LSTM, units: 6, return_sequences: true}, name: bi,
       inputs: [cross]}
    - {type: GRU, units: 5, return_sequences: true, go_backwards: true}
    - {type: SimpleRNN, units: 4, return_sequences: true, activation: relu, name: rnn}
    - {type: GlobalMaxPooling1D, inputs: [rnn], name: gmax}
    - {type: GlobalAveragePooling1D, inputs: [bi], name: gavg}
    - {type: Bidirectional, layer: {type: GRU, units: 3}, merge_mode: ave, inputs: [bi],
       name: last}
    - {type: LSTM, units: 3, go_backwards: true, inputs: [bi], name: lstm_last}
    - {type: RepeatVector, n: 3, inputs: [gavg]}
    - {type: UpSampling1D, size: 2}
    - {type: Cropping1D, cropping: [1, 2]}
    - {type: SpatialDropout1D, rate: 0.3}
    - {type: GlobalMaxPooling1D, name: repmax}
    - {type: Concatenate, inputs: [gmax, gavg, last, lstm_last, cpool, repmax]}
    - {type: Dense, units: 2, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1, batch_size: 8}
logging: {tensorboard: false}
"""


AUDIO = """
name: audio_catalogue
task: classification
data: {train: {type: npz, path: tokens.npz, x_key: wave}}
model:
  input_shape: [800]
  layers:
    - {type: MelSpectrogram, fft_length: 128, sequence_stride: 37, num_mel_bins: 12,
       sampling_rate: 8000}
    - {type: SpecAugment}
    - {type: Permute, dims: [2, 1]}
    - {type: Normalization}
    - {type: GlobalAveragePooling1D, name: melpool}
    - {type: Reshape, target_shape: [800, 1], inputs: [input], name: stft_input}
    - {type: STFTSpectrogram, mode: log, frame_length: 64, frame_step: 31, name: stft}
    - {type: GlobalMaxPooling1D, name: stftpool}
    - {type: STFTSpectrogram, mode: psd, frame_length: 50, frame_step: 40, fft_length: 64,
       padding: same, expand_dims: true, inputs: [stft_input]}
    - {type: Resizing, height: 6, width: 5}
    - {type: Resizing, height: 4, width: 9, interpolation: nearest}
    - {type: Normalization, axis: null, mean: 1.0, variance: 4.0}
    - {type: Flatten, name: spec2d}
    - {type: STFTSpectrogram, mode: stft, frame_length: 32, frame_step: 32, window: hamming,
       periodic: true, scaling: spectrum, inputs: [stft_input]}
    - {type: GlobalAveragePooling1D, name: stftc}
    - {type: STFTSpectrogram, mode: magnitude, frame_length: 40, inputs: [stft_input]}
    - {type: GlobalAveragePooling1D, name: stftm}
    - {type: STFTSpectrogram, mode: real, frame_length: 40, inputs: [stft_input]}
    - {type: GlobalAveragePooling1D, name: stftr}
    - {type: STFTSpectrogram, mode: imag, frame_length: 40, inputs: [stft_input]}
    - {type: GlobalAveragePooling1D, name: stfti}
    - {type: Concatenate, inputs: [melpool, stftpool, spec2d, stftc, stftm, stftr, stfti]}
    - {type: Dense, units: 2, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1, batch_size: 8}
logging: {tensorboard: false}
"""


def _raw_inputs(loaded, n=24):
    rng = np.random.default_rng(0)
    shape = (n, *loaded.pre.input_shape)
    if loaded.pre.input_dtype == "int64":
        return rng.integers(0, 20, shape).astype(np.int64)
    if loaded.spec.data.train.type == "builtin" and loaded.spec.data.train.name == "digits":
        return rng.integers(0, 17, shape).astype(np.float32)
    return (rng.standard_normal(shape) * 2).astype(np.float32)


def _check_onnx_matches(run: Path, tmp_path: Path):
    onnx_path = tmp_path / "model.onnx"
    export_checkpoint(str(run), "onnx", str(onnx_path))
    m = onnx.load(str(onnx_path))
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == 17
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    loaded = load_checkpoint(run)
    for n in (24, 1):  # the batch dimension is dynamic
        x = _raw_inputs(loaded, n)
        ours = predict_array(loaded, x)
        theirs = ort.InferenceSession(str(onnx_path)).run(None, {"input": x})[0]
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_exports_and_matches_onnxruntime(path, tmp_path):
    run = train_run(
        str(path),
        ["train.epochs=1", "logging.tensorboard=false"],
        str(tmp_path / "run"),
        log=lambda m: None,
    )
    if "mask_zero: true" in path.read_text():  # refused, clearly, and nothing is written
        with pytest.raises(ExportError, match="mask_zero: true; padding masks cannot"):
            export_checkpoint(str(run), "onnx", str(tmp_path / "m.onnx"))
        assert not (tmp_path / "m.onnx").exists()
        export_checkpoint(str(run), "safetensors", str(tmp_path / "bundle"))
        return
    _check_onnx_matches(run, tmp_path)


@pytest.mark.parametrize(
    "text",
    [CATALOGUE, GENERATOR, EMBEDDING, SEQUENCE, AUDIO],
    ids=["catalogue", "generator", "embedding", "sequence", "audio"],
)
def test_every_layer_exports_and_matches_onnxruntime(tmp_path, text):
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "tokens.npz",
        x=rng.integers(0, 20, (40, 6)),
        x8=rng.integers(0, 20, (40, 8)),
        y=rng.integers(0, 2, 40),
        wave=(rng.standard_normal((40, 800)) * 0.3).astype(np.float32),
    )
    (tmp_path / "c.yaml").write_text(text)
    run = train_run(str(tmp_path / "c.yaml"), [], str(tmp_path / "run"), log=lambda m: None)
    _check_onnx_matches(run, tmp_path)


def test_catalogue_covers_every_layer_type():
    types = set()
    for text in (CATALOGUE, GENERATOR, EMBEDDING, SEQUENCE, AUDIO):
        import yaml

        types |= {la["type"] for la in yaml.safe_load(text)["model"]["layers"]}
    # Masking is refused by export (test_masked_models_are_refused); the rest export
    assert types | {"Masking"} == set(LAYERS), set(LAYERS) - types


def test_masked_models_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "data: {train: {type: synthetic, samples: 16, features: 12, classes: 2}}\n"
        "model:\n  input_shape: [4, 3]\n  layers:\n    - {type: Masking}\n"
        "    - {type: LSTM, units: 3}\n    - {type: Dense, units: 2, activation: softmax}\n"
        "loss: sparse_categorical_crossentropy\noptimizer: adam\n"
        "train: {epochs: 1}\nlogging: {tensorboard: false}\n"
    )
    run = train_run(str(tmp_path / "c.yaml"), [], str(tmp_path / "run"), log=lambda m: None)
    with pytest.raises(ExportError, match="Masking.*cannot be exported"):
        export_checkpoint(str(run), "onnx", str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("iris")
    return train_run(
        str(ROOT / "configs/iris.yaml"), ["train.epochs=3"], str(d / "run"), log=lambda m: None
    )


def test_bundle_reloads_and_predicts_identically(iris_run, tmp_path):
    bundle = tmp_path / "bundle"
    res = dltrain("export", str(iris_run), "--format", "safetensors", "-o", str(bundle))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in bundle.iterdir()) == [
        "MANIFEST.json",
        "model.safetensors",
        "preprocessing.json",
        "spec.json",
    ]
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32) + 4
    a = predict_array(load_checkpoint(iris_run), x)
    b = predict_array(load_checkpoint(bundle), x)
    assert np.array_equal(a, b)
    np.savez(tmp_path / "x.npz", x=x)
    res = dltrain(
        "predict", str(bundle), "-i", str(tmp_path / "x.npz"), "-o", str(tmp_path / "p.npy")
    )
    assert res.returncode == 0 and np.array_equal(np.load(tmp_path / "p.npy"), a)


def test_bundle_loads_in_plain_pytorch(iris_run, tmp_path, monkeypatch):
    """The README's few lines, run as written: a torch.nn model from the bundle gives the
    same probabilities as dltrain, from numpy float64 input as a user has it."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "load_file" in b]
    export_checkpoint(str(iris_run), "safetensors", str(tmp_path / "iris-bundle"))
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).standard_normal((10, 4)) + 4  # float64
    scope = {"raw_features": x}
    with torch.no_grad():
        exec(compile(snippet, "README.md", "exec"), scope)
    p = scope["probabilities"].numpy()
    np.testing.assert_allclose(p, predict_array(load_checkpoint(iris_run), x), atol=1e-6)


def test_export_refuses_broken_or_missing_checkpoints(iris_run, tmp_path):
    res = dltrain("export", str(tmp_path / "missing"), "-o", str(tmp_path / "m.onnx"))
    assert res.returncode == 4 and not (tmp_path / "m.onnx").exists()
    ckpts = sorted((iris_run / "checkpoints").glob("step-*"))
    bad = ckpts[-1]
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (bad / "model.safetensors").write_bytes(bytes(data))
    res = dltrain("export", str(bad), "-o", str(tmp_path / "m.onnx"))
    assert res.returncode == 4 and "sha256" in res.stderr
    assert not (tmp_path / "m.onnx").exists()
    assert not list(tmp_path.glob(".m.onnx*"))
    res = dltrain("export", str(ckpts[0]), "-o", str(bad / "x.onnx"))
    assert res.returncode == 6 and "refusing to write into a run's checkpoints" in res.stderr
