"""The seed's Keras example as a Keras user writes it: `input_dim: 100` on the first layer,
one-hot labels, categorical_crossentropy; label/loss mismatches are data errors (exit 3)
before training, naming the shapes, with no run directory left."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from dltrain.errors import DataError
from dltrain.run.train import train_run

KERAS_SEED = """\
data: {{train: {{type: npz, path: {data}}}, validation_split: 0.2}}
model:
  layers:
    - {{type: Dense, units: 64, activation: relu, input_dim: 100}}
    - {{type: Dense, units: 10, activation: softmax}}
loss: {loss}
optimizer: adam
metrics: [accuracy]
train: {{epochs: 2, batch_size: 32}}
logging: {{tensorboard: false}}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("onehot")
    rng = np.random.default_rng(0)
    x = rng.random((200, 100)).astype(np.float32)
    labels = rng.integers(0, 10, 200)
    onehot = np.eye(10)[labels]
    np.savez(d / "float.npz", x=x, y=onehot.astype(np.float32))
    np.savez(d / "int.npz", x=x, y=onehot.astype(np.int64))
    np.savez(d / "ids.npz", x=x, y=labels)
    np.savez(d / "bad.npz", x=x, y=np.where(np.arange(10) == 3, 2.0, onehot)[None].repeat(1, 0)[0])
    return d


def _train(d, name, data, loss="categorical_crossentropy"):
    (d / f"{name}.yaml").write_text(KERAS_SEED.format(data=data, loss=loss))
    return train_run(str(d / f"{name}.yaml"), [], str(d / name), log=lambda m: None)


def _weights(run):
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    return load_file(str(ckpts[-1] / "model.safetensors"))


def test_one_hot_labels_train_as_keras_trains_them(data):
    f, i, ids = (_train(data, n, f"{n}.npz") for n in ("float", "int", "ids"))
    wf, wi, wids = _weights(f), _weights(i), _weights(ids)
    for k in wf:  # one-hot floats, one-hot ints and class ids are the same targets
        np.testing.assert_array_equal(wf[k], wi[k])
        np.testing.assert_allclose(wf[k], wids[k], rtol=1e-5, atol=1e-6)


def test_one_hot_labels_with_sparse_loss_say_what_to_do(data):
    with pytest.raises(
        DataError, match=r"shape \(\d+, 10\) look one-hot.*categorical_crossentropy"
    ):
        _train(data, "sparse", "float.npz", "sparse_categorical_crossentropy")
    assert not (data / "sparse").exists()


def test_label_rows_that_are_not_distributions_name_the_sample(data):
    with pytest.raises(DataError, match="sample .* not one-hot or a probability distribution"):
        _train(data, "bad", "bad.npz")
    assert not (data / "bad").exists()
