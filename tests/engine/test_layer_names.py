"""Default layer names are Keras 3's, and checkpoints written under dltrain 0.1's names
(dense_1, dense_2 for Keras's dense, dense_1) still load."""

import torch

from dltrain.engine.model import compile_model
from dltrain.spec.names import default_names, snake
from dltrain.spec.schema import ModelSpec


def _model(layers):
    return compile_model(ModelSpec.model_validate({"input_shape": [4], "layers": layers}))


def test_keras_3_default_names():
    # what keras.Sequential([...]) names these layers in a fresh session
    m = _model(
        [
            {"type": "Dense", "units": 8},
            {"type": "ReLU"},
            {"type": "Dense", "units": 8},
            {"type": "BatchNormalization"},
            {"type": "Dropout", "rate": 0.1},
            {"type": "Dense", "units": 3},
        ]
    )
    assert [layer.name for layer in m.layers] == [
        "dense",
        "re_lu",
        "dense_1",
        "batch_normalization",
        "dropout",
        "dense_2",
    ]
    assert snake("Conv2DTranspose") == "conv2d_transpose"
    assert snake("GlobalAveragePooling2D") == "global_average_pooling2d"
    assert snake("SimpleRNN") == "simple_rnn" and snake("LSTM") == "lstm"


def test_explicit_names_are_never_reused():
    layers = [
        {"type": "Dense", "name": "dense"},
        {"type": "Dense", "name": "x"},
        {"type": "Dense"},
        {"type": "Dense", "name": "dense_2"},
        {"type": "Dense"},
    ]
    assert default_names(layers) == ["dense", "x", "dense_1", "dense_2", "dense_3"]


def test_weights_saved_under_legacy_names_load():
    layers = [{"type": "Dense", "units": 5}, {"type": "Dense", "units": 3}]
    src, dst = _model(layers), _model(layers)
    for p in src.parameters():
        p.data.normal_()
    legacy = {
        k.replace("dense_1.", "dense_2.").replace("dense.", "dense_1."): v
        for k, v in src.state_tensors().items()
    }
    assert sorted(legacy) == ["dense_1.bias", "dense_1.kernel", "dense_2.bias", "dense_2.kernel"]
    dst.load_state_tensors(legacy)
    for k, v in src.state_tensors().items():
        assert torch.equal(dst.state_tensors()[k], v)
    # names that match neither scheme are still refused
    bad = {k.replace("dense", "conv"): v for k, v in src.state_tensors().items()}
    try:
        dst.load_state_tensors(bad)
    except ValueError as e:
        assert "missing" in str(e)
    else:
        raise AssertionError("mismatched names were accepted")
