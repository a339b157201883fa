"""Every hostile input and fault reported in #19, as a regression test. All cases run
through the real CLI in one subprocess (tests/hostile/runner.py) under a memory limit, each
under a time bound; each must end with its documented exit code, a message and no
traceback, and touch nothing outside its own directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.cli.helpers import ROOT, cli_env

CONFIG = """\
name: small
seed: 1
data:
  train: {type: npz, path: data.npz}
  validation_split: 0.25
model:
  input_shape: [4]
  layers:
    - {type: Dense, units: 8, activation: relu}
    - {type: Dense, units: 3, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {epochs: 2, batch_size: 16}
logging: {tensorboard: false}
"""
HEAD = (
    "data: {train: {type: synthetic, samples: 64, features: 4, classes: 2}}\n"
    "loss: sparse_categorical_crossentropy\noptimizer: adam\n"
)
DENSE = "model: {input_shape: [4], layers: [{type: Dense, units: 2, activation: softmax}]}\n"


def _laughs() -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return HEAD + "\n".join(lines) + "\n" + DENSE


def _rehash(ckpt: Path, name: str) -> None:
    """Keep the manifest consistent with a file we changed (so only the content is bad)."""
    m = json.loads((ckpt / "MANIFEST.json").read_text())
    data = (ckpt / name).read_bytes()
    m["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "MANIFEST.json").write_text(json.dumps(m))


def _manifest(ckpt: Path, edit) -> None:
    m = json.loads((ckpt / "MANIFEST.json").read_text())
    edit(m)
    (ckpt / "MANIFEST.json").write_text(json.dumps(m))


def _weights(ckpt: Path, change) -> None:
    from dltrain.engine import checkpoint as ck

    t = ck.read_tensors(ckpt / "model.safetensors")
    save_file(change(t), str(ckpt / "model.safetensors"))
    _rehash(ckpt, "model.safetensors")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A trained run, then one directory per case (a copy of the run, damaged its way)."""
    from dltrain.run.train import train_run

    root = tmp_path_factory.mktemp("hostile")
    base = root / "base"
    base.mkdir()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    np.savez(base / "data.npz", x=x, y=y)
    (base / "c.yaml").write_text(CONFIG)
    train_run(str(base / "c.yaml"), [], str(base / "run"), log=lambda m: None)
    cases: dict[str, dict] = {}

    def case(name, argv, expect, text="", setup=None, timeout=60, env=None):
        d = root / name
        shutil.copytree(base, d, symlinks=True)
        ckpts = d / "run" / "checkpoints"
        newest = ckpts / sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step-"))[-1]
        if setup:
            setup(d, newest)
        cases[name] = dict(argv=argv, cwd=str(d), expect=expect, text=text, timeout=timeout)
        if env:
            cases[name]["env"] = env

    write = lambda name, text: lambda d, c: (d / name).write_text(text)  # noqa: E731
    # -- unbounded work from a small input
    case(
        "yaml_laughs", ["validate", "x.yaml"], 2, "expands to more than", write("x.yaml", _laughs())
    )
    deep = HEAD + "name: " + "[" * 5000 + "]" * 5000 + "\n" + DENSE
    case("yaml_deep", ["validate", "x.yaml"], 2, "nested more than", write("x.yaml", deep))
    rep = HEAD + "model: {input_shape: [4], layers: [{type: Dense, units: 2, repeat: 100000000}]}\n"
    case("repeat", ["validate", "x.yaml"], 2, "more than 2,000", write("x.yaml", rep))
    big = HEAD + DENSE + "".join(f"k{i}: {i}\n" for i in range(600_000))
    case("config_10mb", ["validate", "x.yaml"], 2, "larger than", write("x.yaml", big))
    units = HEAD + "model: {input_shape: [4], layers: [{type: Dense, units: 1000000000000}]}\n"
    case("units_validate", ["validate", "x.yaml"], 2, "Dense 'dense", write("x.yaml", units))
    case("units_train", ["train", "x.yaml", "-q"], 2, "needs", write("x.yaml", units))
    conv = HEAD.replace("features: 4", "features: 16") + (
        "model: {input_shape: [4, 4, 1], layers: [{type: Conv2D, filters: 1e11, kernel_size: 3},"
        " {type: Flatten}, {type: Dense, units: 2}]}\n"
    )
    case("filters", ["validate", "x.yaml"], 2, "Conv2D", write("x.yaml", conv))
    shape = HEAD + "model: {input_shape: [1e11], layers: [{type: Dense, units: 2}]}\n"
    case("input_shape", ["validate", "x.yaml"], 2, "input_shape", write("x.yaml", shape))
    seed = ["--set", "seed=1180591620717411303424"]
    case("seed_validate", ["validate", "c.yaml", *seed], 2, "--set seed=")
    case("seed_train", ["train", "c.yaml", "-q", *seed], 2, "--set seed=")
    # -- checkpoint contents trusted too far
    ev = ["evaluate", "run"]
    case(
        "manifest_dotdot",
        ev,
        4,
        "plain files",
        lambda d, c: _manifest(
            c, lambda m: m["files"].update({"../../../../x": m["files"]["state.json"]})
        ),
    )
    case(
        "manifest_absolute",
        ev,
        4,
        "plain files",
        lambda d, c: _manifest(
            c, lambda m: m["files"].update({"/etc/hostname": m["files"]["state.json"]})
        ),
    )

    def dev_zero(d, c):
        os.symlink("/dev/zero", c / "zero")
        _manifest(c, lambda m: m["files"].update({"zero": {"size": 1 << 40, "sha256": "0" * 64}}))

    case("manifest_dev_zero", ev, 4, "too large", dev_zero)

    def model_dev_zero(d, c):
        (c / "model.safetensors").unlink()
        os.symlink("/dev/zero", c / "model.safetensors")

    case("model_symlink_dev_zero", ev, 4, "model.safetensors", model_dev_zero)
    for name, edit, text in (
        ("manifest_list", lambda m: m.update(files=list(m["files"])), "invalid manifest"),
        ("manifest_string_entry", lambda m: m["files"].update({"state.json": "x"}), "invalid"),
        ("manifest_no_size", lambda m: m["files"]["state.json"].pop("size"), "size"),
        ("manifest_empty", lambda m: m.update(files={}), "does not list"),
    ):
        case(name, ev, 4, text, lambda d, c, e=edit: _manifest(c, e))

    def state_bytes(data):
        def setup(d, c):
            (c / "state.json").write_bytes(data)
            _rehash(c, "state.json")

        return setup

    case("state_not_utf8", ev, 4, "not JSON", state_bytes(b"\xff\xfe\x00{}"))
    case("state_list", ev, 4, "invalid", state_bytes(b"[1, 2]"))
    case(
        "state_not_utf8_resume",
        ["train", "c.yaml", "-q", "--run-dir", "run", "--resume"],
        4,
        "no valid checkpoint",
        lambda d, c: [state_bytes(b"\xff")(d, x) for x in c.parent.glob("step-*")],
    )
    case(
        "best_bytes",
        ev,
        0,
        "BEST is unreadable",
        lambda d, c: (c.parent / "BEST").write_bytes(b"\xff\xfe\x00"),
    )

    def foreign(d, c):
        other = root / "other_run_ckpt"
        if not other.exists():
            shutil.copytree(c, other)
        os.symlink(other, c.parent / "step-99999999")
        (c.parent / "BEST").unlink(missing_ok=True)

    case("symlinked_checkpoint", ev, 0, "", foreign)
    nan = lambda t: {k: v.fill_(float("nan")) if k.endswith("kernel") else v for k, v in t.items()}  # noqa: E731
    case("nan_weights", ev, 4, "NaN", lambda d, c: _weights(c, nan))
    case("nan_weights_allowed", ["--allow-nonfinite", *ev], 0, "", lambda d, c: _weights(c, nan))
    int8 = lambda t: {k: v.to(torch.int8) for k, v in t.items()}  # noqa: E731
    case("int8_weights", ev, 4, "torch.int8", lambda d, c: _weights(c, int8))
    # -- I/O faults
    resume = [
        "train",
        "c.yaml",
        "-q",
        "--run-dir",
        "run",
        "--resume",
        "--set",
        "train.epochs=3",
        "--allow-config-change",
        "train.epochs",
        "--set",
        "logging.tensorboard=true",
        "--allow-config-change",
        "logging.tensorboard",
    ]
    case(
        "tensorboard_disk_full",
        resume,
        6,
        "TensorBoard",
        env={"DLTRAIN_TEST_FAULT": "tensorboard:enospc"},
    )
    case(
        "new_run_read_only",
        ["train", "c.yaml", "-q", "--run-dir", "fresh"],
        6,
        "cannot create",
        env={"DLTRAIN_TEST_FAULT": "mkdir:erofs"},
    )
    case(
        "export_read_only",
        ["export", "run", "--format", "onnx", "-o", "m.onnx"],
        6,
        "cannot write",
        env={"DLTRAIN_TEST_FAULT": "export:erofs"},
    )

    def torn(d, c):
        with open(d / "run" / "metrics.jsonl", "a") as f:
            f.write('{"epoch": 3, "lo')

    case("torn_metrics_line", resume[:6] + resume[6:10], 0, "dropped 1 unreadable", torn)
    # -- data and predict inputs
    bad_csv = "a,b,label\n1,2,0\n3,\xff\xfe,1\n"
    csv_cfg = CONFIG.replace(
        "{type: npz, path: data.npz}", "{type: csv, path: d.csv, label_column: label}"
    )
    csv_cfg = csv_cfg.replace("input_shape: [4]", "input_shape: [2]")

    def csv_setup(d, c):
        (d / "d.csv").write_bytes(bad_csv.encode("latin-1"))
        (d / "csv.yaml").write_text(csv_cfg)

    case("csv_not_utf8", ["train", "csv.yaml", "-q", "--run-dir", "r2"], 3, "not UTF-8", csv_setup)
    pr = ["predict", "run", "--input"]

    def npy(data):
        return lambda d, c: (d / "in.npy").write_bytes(data)

    def npy_array(a):
        def setup(d, c):
            np.save(d / "in.npy", a)

        return setup

    case("npy_strings", [*pr, "in.npy", "-o", "o.npy"], 3, "dtype", npy_array(np.array(["a", "b"])))
    case("npy_zero_bytes", [*pr, "in.npy", "-o", "o.npy"], 3, "not a .npy file", npy(b""))
    # found by the fuzzer: np.load takes a zip header for an .npz and raised BadZipFile
    case("npy_zip_bytes", [*pr, "in.npy", "-o", "o.npy"], 3, "not a .npy file", npy(b"PK\x03\x04"))
    case(
        "npy_empty",
        [*pr, "in.npy", "-o", "o.npy"],
        3,
        "no samples",
        npy_array(np.zeros((0, 4), np.float32)),
    )
    case("evaluate_missing_npz", ["evaluate", "run", "--data", "nope.npz"], 3, "not found")

    def complex_npz(d, c):
        np.savez(d / "data.npz", x=np.ones((64, 4), np.complex64), y=np.zeros(64, np.int64))

    case("complex_npz", ["train", "c.yaml", "-q", "--run-dir", "r3"], 3, "complex", complex_npz)

    def bad_label(d, c):
        yy = y.copy()
        yy[5] = 7
        np.savez(d / "data.npz", x=x, y=yy)
        (d / "c3.yaml").write_text(
            CONFIG.replace("validation_split: 0.25", "validation_split: 0.0")
        )

    case(
        "bad_label_index", ["train", "c3.yaml", "-q", "--run-dir", "r4"], 3, "sample 5 ", bad_label
    )

    def fifo_images(d, c):
        from PIL import Image

        for cls in ("a", "b"):
            (d / "imgs" / cls).mkdir(parents=True)
            for i in range(6):
                px = np.full((8, 8), 20 * i + (120 if cls == "b" else 0), np.uint8)
                Image.fromarray(px).save(d / "imgs" / cls / f"{i}.png")
        os.mkfifo(d / "imgs" / "a" / "blocking.png")
        img_cfg = CONFIG.replace("{type: npz, path: data.npz}", "{type: image_folder, path: imgs}")
        img_cfg = img_cfg.replace("input_shape: [4]", "input_shape: [8, 8, 1]")
        img_cfg = img_cfg.replace("layers:\n", "layers:\n    - {type: Flatten}\n")
        (d / "img.yaml").write_text(img_cfg)

    case(
        "fifo_in_image_folder",
        ["train", "img.yaml", "-q", "--run-dir", "r6"],
        0,
        "skipping",
        fifo_images,
    )

    def fifo_csv(d, c):
        os.mkfifo(d / "d.csv")
        (d / "csv.yaml").write_text(csv_cfg)

    case(
        "fifo_as_csv",
        ["train", "csv.yaml", "-q", "--run-dir", "r7"],
        3,
        "not a regular file",
        fifo_csv,
    )
    case(
        "fifo_as_config",
        ["validate", "f.yaml"],
        2,
        "not a regular file",
        lambda d, c: os.mkfifo(d / "f.yaml"),
    )
    sgd = [
        "train",
        "c.yaml",
        "-q",
        "--run-dir",
        "r5",
        "--set",
        "optimizer=sgd",
        "--set",
        "optimizer.learning_rate=1e30",
    ]
    case("diverging_lr", sgd, 5, "no checkpoint was written before it")
    case(
        "set_unknown_key",
        ["validate", "c.yaml", "--set", "nonexistent.key=1"],
        2,
        "--set nonexistent",
    )
    case("set_into_a_value", ["validate", "c.yaml", "--set", "name.foo=1"], 2, "--set name.foo")

    # -- audio folders: files that block, devices, and files that only claim to be audio
    def audio(d: Path, extra) -> None:
        import soundfile as sf

        for cls, f in (("a", 300.0), ("b", 1200.0)):
            (d / "aud" / cls).mkdir(parents=True)
            for i in range(6):
                t = np.arange(800) / 8000
                sf.write(str(d / "aud" / cls / f"s{i}_{cls}.wav"), 0.3 * np.sin(6.28 * f * t), 8000)
        cfg = CONFIG.replace(
            "{type: npz, path: data.npz}",
            "{type: audio_folder, path: aud, sampling_rate: 8000}",
        ).replace("input_shape: [4]", "input_shape: [800]")
        (d / "aud.yaml").write_text(cfg.replace("units: 3", "units: 2"))
        extra(d / "aud")

    def fifo_wav(a: Path) -> None:
        os.mkfifo(a / "a" / "blocking.wav")

    def dev_zero_wav(a: Path) -> None:
        os.symlink("/dev/zero", a / "b" / "zero.flac")

    def png_as_wav(a: Path) -> None:
        (a / "b" / "picture.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)

    train_aud = ["train", "aud.yaml", "-q", "--run-dir", "r8"]
    case("fifo_in_audio_folder", train_aud, 0, "skipping", lambda d, c: audio(d, fifo_wav))
    case("dev_zero_as_audio", train_aud, 0, "skipping", lambda d, c: audio(d, dev_zero_wav))
    case("png_as_wav", train_aud, 3, "not a readable audio file", lambda d, c: audio(d, png_as_wav))
    return root, cases


@pytest.fixture(scope="module")
def results(lab):
    root, cases = lab
    todo = [
        dict(argv=c["argv"], cwd=c["cwd"], timeout=c["timeout"], env=c.get("env", {}))
        for c in cases.values()
    ]
    (root / "cases.json").write_text(json.dumps(todo))
    env = cli_env(DLTRAIN_THREADS="2")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.hostile.runner",
            str(root / "cases.json"),
            str(root / "out.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(zip(cases, json.loads((root / "out.json").read_text())))


CASE_NAMES = [
    "yaml_laughs",
    "yaml_deep",
    "repeat",
    "config_10mb",
    "units_validate",
    "units_train",
    "filters",
    "input_shape",
    "seed_validate",
    "seed_train",
    "manifest_dotdot",
    "manifest_absolute",
    "manifest_dev_zero",
    "model_symlink_dev_zero",
    "manifest_list",
    "manifest_string_entry",
    "manifest_no_size",
    "manifest_empty",
    "state_not_utf8",
    "state_list",
    "state_not_utf8_resume",
    "best_bytes",
    "symlinked_checkpoint",
    "nan_weights",
    "nan_weights_allowed",
    "int8_weights",
    "tensorboard_disk_full",
    "new_run_read_only",
    "export_read_only",
    "torn_metrics_line",
    "csv_not_utf8",
    "npy_strings",
    "npy_zero_bytes",
    "npy_zip_bytes",
    "npy_empty",
    "evaluate_missing_npz",
    "complex_npz",
    "bad_label_index",
    "diverging_lr",
    "set_unknown_key",
    "set_into_a_value",
    "fifo_in_image_folder",
    "fifo_as_csv",
    "fifo_as_config",
    "fifo_in_audio_folder",
    "dev_zero_as_audio",
    "png_as_wav",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_case(name, lab, results):
    _, cases = lab
    c, r = cases[name], results[name]
    assert r["escaped"] is None, r["escaped"]
    assert "Traceback" not in r["stderr"], r["stderr"]
    assert r["code"] == c["expect"], (r["code"], r["stderr"][-1500:])
    assert c["text"] in r["stderr"] + r["stdout"], r["stderr"][-1500:]
    assert r["seconds"] < c["timeout"]


def test_every_case_is_listed(lab):
    assert set(lab[1]) == set(CASE_NAMES)


def test_details(lab, results):
    _, cases = lab
    # the bad label is named once, by its index in the file, with its split said once
    err = results["bad_label_index"]["stderr"]
    assert err.count("split)") <= 1
    # a symlink to another run's checkpoint is not one of this run's checkpoints
    out = results["symlinked_checkpoint"]["stdout"]
    assert "step-99999999" not in out and "step-" in out
    # evaluate read the newest checkpoint when BEST was garbage
    assert "step-" in results["best_bytes"]["stdout"]
    # nothing escaped a case's own directory: the lab holds only case dirs and our files
    root = Path(cases["yaml_laughs"]["cwd"]).parent
    assert not (root / "x").exists() and not Path("/x").exists()


def test_a_signal_during_setup_stops_at_once():
    """Before training starts (data loading, model building) there is nothing to save: the
    first SIGTERM/SIGINT stops the run at once (it used to wait for the first step)."""
    import signal

    from dltrain.engine.train.callbacks import Interrupted
    from dltrain.run.train import _Signals

    with pytest.raises(Interrupted) as e, _Signals():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):  # the handler raises at the next bytecode
            pass
        pytest.fail("the signal was not honoured")
    assert e.value.exit_code == 143
