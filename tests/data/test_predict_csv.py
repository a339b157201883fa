"""predict never drops a CSV row: the header is detected (or given), and rows are counted."""

import numpy as np
import pytest

from dltrain.errors import DataError
from dltrain.run.evaluate import predict_file
from dltrain.run.train import train_run

CONFIG = """\
data: {train: {type: synthetic, samples: 40, features: 3, classes: 2}}
model: {input_shape: [3], layers: [{type: Dense, units: 2, activation: softmax}]}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1}
logging: {tensorboard: false}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("csvpred")
    (d / "c.yaml").write_text(CONFIG)
    return d, train_run(str(d / "c.yaml"), [], str(d / "run"), log=lambda m: None)


ROWS = "".join(f"{i},{i * 0.5},{-i}\n" for i in range(10))


@pytest.mark.parametrize(
    "text,header,n",
    [
        (ROWS, "auto", 10),  # no header row: all ten rows are samples
        ("f0,f1,f2\n" + ROWS, "auto", 10),
        (ROWS, "false", 10),
        (ROWS, "true", 9),  # told the first row is a header: it is not a sample
        ("1e3,-2.5,nan\n" + ROWS, "auto", 11),  # numbers (nan too) are data, not a header
    ],
)
def test_csv_rows_are_never_dropped(run, tmp_path, text, header, n):
    d, rdir = run
    (tmp_path / "in.csv").write_text(text)
    out = tmp_path / "out.npy"
    if "nan" in text:
        with pytest.raises(DataError, match="column '2' is nan"):
            predict_file(str(rdir), str(tmp_path / "in.csv"), str(out), header)
        return
    assert predict_file(str(rdir), str(tmp_path / "in.csv"), str(out), header)[0] == n
    assert np.load(out).shape == (n, 2)


def test_headerless_csv_with_the_wrong_width_says_so(run, tmp_path):
    d, rdir = run
    (tmp_path / "in.csv").write_text("1,2\n3,4\n")
    with pytest.raises(DataError, match="2 columns but the model takes 3 features"):
        predict_file(str(rdir), str(tmp_path / "in.csv"), str(tmp_path / "o.npy"))
