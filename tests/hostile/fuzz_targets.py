"""Property-based fuzzing of what users and checkpoints hand dltrain (Hypothesis). Run by
test_fuzz.py in a subprocess under RLIMIT_AS (never directly: the module skips itself
unless DLTRAIN_FUZZ_EXAMPLES is set). Every example runs the real CLI in-process and must
end with an allowed exit code, no traceback, within its time bound, and must leave every
file outside its own directory untouched."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.runner import run_case

EXAMPLES = int(os.environ.get("DLTRAIN_FUZZ_EXAMPLES", "0"))
pytestmark = pytest.mark.skipif(EXAMPLES == 0, reason="run through test_fuzz.py")
FUZZ = settings(
    max_examples=EXAMPLES or 1,
    deadline=None,
    derandomize=os.environ.get("DLTRAIN_FUZZ_SEED") is None,
    suppress_health_check=list(HealthCheck),
    database=None,
)

BASE = {
    "name": "fz",
    "seed": 1,
    "data": {
        "train": {"type": "synthetic", "samples": 48, "features": 4, "classes": 3},
        "validation_split": 0.25,
    },
    "model": {
        "input_shape": [4],
        "layers": [
            {"type": "Dense", "units": 8, "activation": "relu"},
            {"type": "Dropout", "rate": 0.1},
            {"type": "Dense", "units": 3, "activation": "softmax"},
        ],
    },
    "loss": "sparse_categorical_crossentropy",
    "optimizer": {"type": "adam", "learning_rate": 0.01},
    "metrics": ["accuracy"],
    "train": {"epochs": 2, "batch_size": 16},
    "logging": {"tensorboard": False},
}

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, 1, 10**12, 2**63, 1e30, -1e30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["Dense", "Block", "zoo:vgg16", "!!python/object", "${x}", "../..", "/dev/zero"]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)


def _paths(v, prefix=()):
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _paths(x, prefix + (i,))


def _mutate(doc, path, op, value):
    if not path:
        return value if op == "replace" else doc
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    if op == "replace":
        parent[key] = value
    elif op == "delete":
        del parent[key]
    elif op == "nest":
        parent[key] = [[[parent[key]]]]
    elif op == "add" and isinstance(parent, dict):
        parent[f"extra_{key}"] = value
    return doc


@st.composite
def configs(draw):
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "nest", "add"]))
        doc = _mutate(doc, path, op, draw(VALUES))
    text = yaml.safe_dump(doc, sort_keys=False) if isinstance(doc, (dict, list)) else str(doc)
    kind = draw(st.sampled_from(["plain", "aliases", "cut", "bytes"]))
    if kind == "aliases":  # a value anchored once and used many times
        n = draw(st.integers(1, 12))
        text = "shared: &s " + json.dumps(draw(VALUES)) + "\n" + text
        text += "more: [" + ", ".join(["*s"] * n) + "]\n"
    elif kind == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif kind == "bytes":
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.text(max_size=6)) + text[i:]
    return text


def _outside_snapshot(root: Path) -> dict:
    """What a case must not touch: the sentinel and every file of the base run."""
    files = [root / "sentinel", *(p for p in (root / "base").rglob("*"))]
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.is_file()}


@pytest.fixture(scope="module")
def lab():
    root = Path(tempfile.mkdtemp(prefix="dltrain-fuzz-"))
    base = root / "base"
    base.mkdir()
    (base / "c.yaml").write_text(yaml.safe_dump(BASE))
    r = run_case(["train", "c.yaml", "-q", "--run-dir", "run"], str(base), 120)
    assert r["code"] == 0, r
    (root / "sentinel").write_text("outside")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _case_dir(lab: Path) -> Path:
    d = Path(tempfile.mkdtemp(dir=lab, prefix="case-"))
    shutil.copytree(lab / "base", d, dirs_exist_ok=True, symlinks=True)
    return d


def _check(r, allowed, what):
    assert r["escaped"] is None, (what, r["argv"], r["escaped"])
    assert "Traceback" not in r["stderr"], (what, r["stderr"][-2000:])
    assert r["code"] in allowed, (what, r["code"], r["stderr"][-2000:])


@FUZZ
@given(text=configs())
def test_configs_validate_or_say_why(lab, text):
    d = _case_dir(lab)
    before = _outside_snapshot(lab)
    (d / "x.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    r = run_case(["validate", "x.yaml"], str(d), 10)
    _check(r, {0, 2}, text)
    assert r["seconds"] < 10
    assert _outside_snapshot(lab) == before
    shutil.rmtree(d)


FILES = [
    "MANIFEST.json",
    "state.json",
    "model.safetensors",
    "optimizer.safetensors",
    "trainer.safetensors",
    "BEST",
]


@FUZZ
@given(
    target=st.sampled_from(FILES),
    how=st.sampled_from(
        ["truncate", "flip", "random", "symlink_zero", "symlink_out", "delete", "json_field"]
    ),
    at=st.floats(0, 1),
    junk=st.binary(max_size=64),
    value=VALUES,
    resume=st.booleans(),
)
def test_damaged_checkpoints_are_refused_or_skipped(lab, target, how, at, junk, value, resume):
    d = _case_dir(lab)
    before = _outside_snapshot(lab)
    root = d / "run" / "checkpoints"
    newest = root / sorted(p.name for p in root.iterdir() if p.name.startswith("step-"))[-1]
    path = root / "BEST" if target == "BEST" else newest / target
    data = path.read_bytes() if path.exists() else b""
    if how == "truncate":
        path.write_bytes(data[: int(len(data) * at)])
    elif how == "flip" and data:
        i = min(int(len(data) * at), len(data) - 1)
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif how == "random":
        path.write_bytes(junk)
    elif how in ("symlink_zero", "symlink_out"):
        path.unlink(missing_ok=True)
        os.symlink("/dev/zero" if how == "symlink_zero" else lab / "sentinel", path)
    elif how == "delete":
        path.unlink(missing_ok=True)
    elif how == "json_field" and target == "MANIFEST.json":
        m = json.loads(data)
        keys = list(_paths(m))
        key = keys[int(at * (len(keys) - 1))]
        m = _mutate(m, key, "replace", value)
        path.write_text(json.dumps(m))
    argv = ["evaluate", "run"]
    allowed = {0, 4}
    if resume:
        argv = [
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
        ]
        allowed = {0, 4}
    r = run_case(argv, str(d), 60)
    _check(r, allowed, (target, how))
    assert _outside_snapshot(lab) == before
    assert (lab / "sentinel").read_text() == "outside"
    shutil.rmtree(d)


@FUZZ
@given(
    suffix=st.sampled_from([".npy", ".npz", ".csv", ".png", ".txt", ".jpg"]),
    payload=st.one_of(
        st.binary(max_size=300),
        st.builds(lambda a: a.tobytes(), st.just(np.zeros((2, 4), np.float32))),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
    header=st.booleans(),
)
def test_predict_inputs_predict_or_say_why(lab, suffix, payload, header):
    d = _case_dir(lab)
    before = _outside_snapshot(lab)
    if suffix == ".npy" and header:
        import io

        buf = io.BytesIO()
        np.save(buf, np.frombuffer(payload[: len(payload) // 4 * 4], np.float32).reshape(-1, 1))
        payload = buf.getvalue()
    (d / f"in{suffix}").write_bytes(payload)
    r = run_case(["predict", "run", "--input", f"in{suffix}", "-o", "out.npy"], str(d), 30)
    _check(r, {0, 3}, (suffix, payload[:60]))
    assert _outside_snapshot(lab) == before
    shutil.rmtree(d)
