"""Sources not covered elsewhere: IDX (gzipped or not), NPZ, predict inputs (CSV, images),
Pillow's decompression-bomb limit."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from dltrain.data.images import read_image_folder
from dltrain.data.sources import read_idx
from dltrain.errors import DataError
from tests.cli.helpers import dltrain


def _idx(path, arr, gz):
    codes = {np.uint8: 0x08}
    data = (
        bytes([0, 0, codes[arr.dtype.type], arr.ndim])
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.tobytes()
    )
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_and_errors(tmp_path, gz):
    arr = np.random.default_rng(0).integers(0, 255, (5, 4, 3), dtype=np.uint8)
    _idx(tmp_path / "x.idx", arr, gz)
    assert np.array_equal(read_idx(str(tmp_path / "x.idx")), arr)
    (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 4, 3) + b"x")
    with pytest.raises(DataError, match="header promises 60 bytes"):
        read_idx(str(tmp_path / "bad.idx"))
    (tmp_path / "junk.idx").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(str(tmp_path / "junk.idx"))


def test_idx_config_trains(tmp_path):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "img.idx", rng.integers(0, 255, (60, 6, 6), dtype=np.uint8), True)
    _idx(tmp_path / "lab.idx", rng.integers(0, 3, 60, dtype=np.uint8), True)
    (tmp_path / "c.yaml").write_text("""\
data: {train: {type: idx, images: img.idx, labels: lab.idx}, rescale: 0.00392}
model:
  input_shape: [6, 6, 1]
  layers: [{type: Flatten}, {type: Dense, units: 3, activation: softmax}]
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 1}
""")
    res = dltrain("train", "c.yaml", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def test_predict_from_csv_and_images(tmp_path):
    from tests.cli.helpers import ROOT

    assert (
        dltrain(
            "train",
            str(ROOT / "configs/wine_csv.yaml"),
            "-q",
            "--set",
            "train.epochs=2",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    rows = (ROOT / "configs/data/wine.csv").read_text().splitlines()[:6]
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    res = dltrain("predict", "runs/wine_csv", "-i", "in.csv", "-o", "out.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = (tmp_path / "out.csv").read_text().splitlines()
    assert out[0] == "label,p_barbera,p_barolo,p_grignolino" and len(out) == 6
    # images: a model on 8x8 RGB image folders predicts a folder of PNGs
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            arr = np.full((10, 10, 3), 200 if cls == "a" else 20, dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "i.yaml").write_text("""\
data: {train: {type: image_folder, path: imgs}, rescale: 0.00392}
model:
  input_shape: [8, 8, 3]
  layers: [{type: Flatten}, {type: Dense, units: 2, activation: softmax}]
loss: sparse_categorical_crossentropy
optimizer: {type: adam, learning_rate: 0.05}
train: {epochs: 20, batch_size: 4}
""")
    assert dltrain("train", "i.yaml", "-q", cwd=tmp_path).returncode == 0
    res = dltrain("predict", "runs/i", "-i", "imgs/b", "-o", "p.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    labels = [r.split(",")[0] for r in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    assert labels == ["b"] * 4


def test_decompression_bomb_is_refused(tmp_path):
    (tmp_path / "x" / "a").mkdir(parents=True)
    Image.new("1", (15000, 15000)).save(tmp_path / "x" / "a" / "bomb.png")
    with pytest.raises(DataError, match="bomb.png: refused, too many pixels"):
        read_image_folder(str(tmp_path / "x"), (8, 8, 1))
