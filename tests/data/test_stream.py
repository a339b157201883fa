"""Large image folders stream from disk through worker processes, and train exactly as the
same folder held in memory."""

import json

import numpy as np
from PIL import Image

from dltrain.engine import checkpoint as ck
from tests.cli.helpers import dltrain

CONFIG = """\
seed: 2
data:
  train: {type: image_folder, path: imgs}
  validation_split: 0.25
  rescale: 0.00392
  augment: {random_flip: horizontal}
model:
  input_shape: [8, 8, 3]
  layers:
    - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, activation: relu}
    - {type: Flatten}
    - {type: Dropout, rate: 0.2}
    - {type: Dense, units: 3, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
metrics: [accuracy]
train: {epochs: 2, batch_size: 8}
logging: {histograms: false}
"""


def _folder(root, n=12):
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("a", "b", "c")):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 80, (9 + i % 3, 11, 3)) + 60 * c
            Image.fromarray(arr.astype(np.uint8)).save(root / cls / f"{i}.png")


def test_streamed_training_is_bit_identical_to_in_memory(tmp_path):
    _folder(tmp_path / "imgs")
    (tmp_path / "c.yaml").write_text(CONFIG)
    finals = []
    for name, limit in (("mem", "2048"), ("stream", "0.001")):
        res = dltrain(
            "train",
            "c.yaml",
            "-q",
            "--run-dir",
            name,
            "--set",
            f"data.max_in_memory_mb={limit}",
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        last = ck.list_checkpoints(tmp_path / name / "checkpoints")[-1]
        finals.append((tmp_path / name / "checkpoints" / last / "model.safetensors").read_bytes())
    assert finals[0] == finals[1]
    res = dltrain("evaluate", "stream", "--data", "validation", "--json", cwd=tmp_path)
    assert res.returncode == 0 and "accuracy" in json.loads(res.stdout)


def test_streamed_scaling_and_bad_files(tmp_path):
    _folder(tmp_path / "imgs", n=6)
    (tmp_path / "c.yaml").write_text(CONFIG.replace("rescale: 0.00392", "scaling: standard"))
    pres = []
    for name, limit in (("mem", "2048"), ("stream", "0.001")):
        res = dltrain(
            "train",
            "c.yaml",
            "-q",
            "--run-dir",
            name,
            "--set",
            f"data.max_in_memory_mb={limit}",
            "--set",
            "train.epochs=1",
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        ckpt = (
            tmp_path
            / name
            / "checkpoints"
            / ck.list_checkpoints(tmp_path / name / "checkpoints")[-1]
        )
        pres.append(json.loads((ckpt / "state.json").read_text())["preprocessing"])
    np.testing.assert_allclose(pres[0]["offset"], pres[1]["offset"], rtol=1e-6)
    np.testing.assert_allclose(pres[0]["scale"], pres[1]["scale"], rtol=1e-5)
    (tmp_path / "imgs/a/broken.png").write_bytes(b"nope")
    (tmp_path / "imgs/c/broken.jpg").write_bytes(b"nope")
    res = dltrain(
        "train",
        "c.yaml",
        "-q",
        "--run-dir",
        "bad",
        "--set",
        "data.max_in_memory_mb=0.001",
        cwd=tmp_path,
    )
    assert res.returncode == 3 and "2 image(s) cannot be read" in res.stderr
    assert "a/broken.png" in res.stderr and "c/broken.jpg" in res.stderr
