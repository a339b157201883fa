"""Keras weight files are untrusted input: read as data (numeric arrays only), bounded, and
every malformed one is a config error (exit 2) naming the file, never a traceback."""

from __future__ import annotations

import zipfile

import h5py
import numpy as np
import pytest

from dltrain.engine.model import compile_model
from dltrain.errors import ConfigError
from dltrain.run.weights import load_initial_weights
from dltrain.spec.schema import LoadWeightsSpec, ModelSpec

MODEL = ModelSpec.model_validate({"input_shape": [4], "layers": [{"type": "Dense", "units": 3}]})


def load(path):
    load_initial_weights(
        compile_model(MODEL), LoadWeightsSpec(path=str(path)), ".", "cfg.yaml:3:3", print
    )


def keras3(path, arrays, name="dense"):
    with h5py.File(path, "w") as f:
        v = f.create_group("layers/dense/vars")
        v.attrs["name"] = name
        for i, a in enumerate(arrays):
            v[str(i)] = a


def test_a_hand_written_keras3_file_loads_by_the_name_in_its_vars_group(tmp_path):
    kernel = np.arange(12, dtype=np.float32).reshape(4, 3)
    keras3(tmp_path / "m.weights.h5", [kernel, np.ones(3, np.float32)])
    model = compile_model(MODEL)
    load_initial_weights(
        model, LoadWeightsSpec(path=str(tmp_path / "m.weights.h5")), ".", "cfg", print
    )
    assert np.array_equal(model.state_tensors()["dense.kernel"].numpy(), kernel.T)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: keras3(p, [np.array([b"x"] * 12).reshape(4, 3)]), "not a numeric array"),
        (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64), "cannot read it as Keras"),
        (lambda p: h5py.File(p, "w").close(), "not a Keras weights file"),
        (lambda p: keras3(p, [np.zeros((5, 3), np.float32)]), "has 2 Keras variable"),
    ],
    ids=["strings", "truncated", "empty", "wrong-count"],
)
def test_malformed_keras_files_are_config_errors(tmp_path, make, message):
    path = tmp_path / "m.weights.h5"
    make(path)
    with pytest.raises(ConfigError, match=message):
        load(path)


def test_a_keras_archive_without_weights_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(ConfigError, match="not a Keras weights file"):
        load(tmp_path / "m.keras")
    (tmp_path / "junk.keras").write_bytes(b"PK not really")
    with pytest.raises(ConfigError, match="cannot read it as Keras"):
        load(tmp_path / "junk.keras")
