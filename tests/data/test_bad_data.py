"""Bad data: exit code 3, a message naming file and line/row/column/sample, nothing written."""

import numpy as np
import pytest
from PIL import Image

from tests.cli.helpers import dltrain_here as dltrain  # in-process: the same exit code and output

CSV_CONFIG = """\
name: bad
data:
  train: {{type: csv, path: {path}, label_column: label}}
  {extra}
model:
  input_shape: [2]
  layers:
    - {{type: Dense, units: 3, activation: softmax}}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {{epochs: 1}}
"""

GOOD_ROWS = "a,b,label\n" + "".join(f"{i},{i % 3},{i % 3}\n" for i in range(30))


def run(tmp_path, rows, extra="", path="d.csv", cfg=CSV_CONFIG, write=True):
    if write:
        (tmp_path / path).write_text(rows) if isinstance(rows, str) else None
    (tmp_path / "c.yaml").write_text(cfg.format(path=path, extra=extra))
    res = dltrain("train", "c.yaml", "-q", cwd=tmp_path)
    assert not (tmp_path / "runs").exists(), "something was written"
    return res


def test_good_csv_trains_and_evaluates_on_another_csv(tmp_path):
    (tmp_path / "d.csv").write_text(GOOD_ROWS)
    (tmp_path / "c.yaml").write_text(CSV_CONFIG.format(path="d.csv", extra=""))
    assert dltrain("train", "c.yaml", "-q", cwd=tmp_path).returncode == 0
    # evaluate --data takes a CSV like the training one (its label column), and names the
    # row of a bad value in it
    from dltrain.errors import DataError
    from dltrain.run.evaluate import evaluate_checkpoint

    (tmp_path / "e.csv").write_text("a,b,label\n1,1,1\n2,2,2\n3,0,0\n")
    res = evaluate_checkpoint(str(tmp_path / "runs" / "bad"), str(tmp_path / "e.csv"))
    assert res.n == 3 and res.metrics["loss"] > 0 and sum(res.confusion[0]) == 1
    (tmp_path / "f.csv").write_text("a,b,label\n1,1,1\n2,x,2\n")
    with pytest.raises(DataError, match="f.csv"):
        evaluate_checkpoint(str(tmp_path / "runs" / "bad"), str(tmp_path / "f.csv"))


@pytest.mark.parametrize(
    "rows,expected",
    [
        (GOOD_ROWS + "1,2\n", "d.csv:32: 2 fields, the header has 3"),
        (
            GOOD_ROWS.replace("5,2,2\n", "5,two,2\n"),
            "d.csv:7: column 'b' holds 'two', which is not",
        ),
        (
            GOOD_ROWS.replace("7,1,1\n", "7,nan,1\n"),
            "d.csv:9: sample 7 (training), feature 1 is nan",
        ),
        (GOOD_ROWS.replace("8,2,2\n", "inf,2,2\n"), "feature 0 is inf"),
        (
            GOOD_ROWS.replace("9,0,0\n", "9,0,5\n"),
            "d.csv:11: sample 9 (training) has label 5, outside the model's 3 classes",
        ),
        ("a,b,label\n", "no data rows after the header"),
        ("", "the file is empty"),
    ],
    ids=["ragged", "non-numeric", "nan", "inf", "label", "no-rows", "empty"],
)
def test_bad_csv(tmp_path, rows, expected):
    res = run(tmp_path, rows)
    assert res.returncode == 3, res.stderr
    assert expected in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_missing_file(tmp_path):
    res = run(tmp_path, None, path="nope.csv", write=False)
    assert res.returncode == 3 and "data file not found:" in res.stderr and "nope.csv" in res.stderr


def test_empty_split(tmp_path):
    res = run(tmp_path, "a,b,label\n1,1,1\n", extra="validation_split: 0.4")
    assert res.returncode == 3 and "leaves an empty split" in res.stderr, res.stderr


IMG_CONFIG = """\
name: img
data:
  train: {type: image_folder, path: imgs}
model:
  input_shape: [8, 8, 3]
  layers:
    - {type: Flatten}
    - {type: Dense, units: 2, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1}
"""


def _images(root, n=4):
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = np.random.default_rng(i).integers(0, 255, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")


def test_image_folder_trains_and_corrupt_images_are_all_listed(tmp_path):
    _images(tmp_path / "imgs")
    (tmp_path / "c.yaml").write_text(IMG_CONFIG)
    assert dltrain("train", "c.yaml", "-q", cwd=tmp_path).returncode == 0
    (tmp_path / "imgs/cat/bad1.png").write_bytes(b"not an image")
    (tmp_path / "imgs/dog/bad2.jpg").write_bytes(b"\xff\xd8\xff garbage")
    import shutil

    shutil.rmtree(tmp_path / "runs")
    res = dltrain("train", "c.yaml", "-q", cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "2 image(s) cannot be read" in res.stderr
    assert "cat/bad1.png" in res.stderr and "dog/bad2.jpg" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_npz_with_object_arrays_is_refused(tmp_path):
    x = np.empty(3, dtype=object)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(3, dtype=np.int64))
    cfg = CSV_CONFIG.replace(
        "{{type: csv, path: {path}, label_column: label}}", "{{type: npz, path: {path}}}"
    )
    res = run(tmp_path, None, path="d.npz", cfg=cfg, write=False)
    assert res.returncode == 3 and "never unpickles" in res.stderr, res.stderr


def test_npz_zip_bomb_is_refused_before_reading(tmp_path):
    import zipfile

    from dltrain.data.sources import read_npz
    from dltrain.errors import DataError

    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        header = (
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': ("
            b"50000000,), }" + b" " * 50 + b"\n"
        )
        zf.writestr("x.npy", header + bytes(200_000_000))  # compresses to ~200 KB
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DataError, match="zip bomb"):
        read_npz(str(path))
    with pytest.raises(DataError, match="declares"):
        read_npz(str(path), max_bytes=10_000_000)
