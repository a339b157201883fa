"""Checkpoint files: verification, malformed safetensors, pickles refused, pruning."""

import json
import pickle
import struct

import pytest
import torch

from dltrain.engine import checkpoint as ck
from dltrain.errors import CheckpointError, DltrainIOError

STATE = {
    "global_step": 0,
    "epoch": 0,
    "batch": 0,
    "spec": {},
    "preprocessing": {},
    "dltrain": "0",
    "torch": "0",
}


def _save(root, step, value=1.0):
    files = {
        "model.safetensors": ck.tensors_bytes({"w": torch.full((4, 3), value)}),
        "state.json": json.dumps(STATE | {"global_step": step}).encode(),
    }
    return ck.commit(root, f"step-{step:08d}", files)


def test_commit_and_verify(tmp_path):
    p = _save(tmp_path, 1)
    m = ck.verify(p)
    assert set(m["files"]) == {"model.safetensors", "state.json"} and m["format"] == 1
    assert torch.equal(ck.read_tensors(p / "model.safetensors")["w"], torch.ones(4, 3))
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".tmp")]


@pytest.mark.parametrize(
    "damage,message",
    [
        (
            lambda p: (p / "model.safetensors").write_bytes(
                (p / "model.safetensors").read_bytes()[:-5]
            ),
            "model.safetensors: .* bytes, the manifest says .* \\(truncated\\?\\)",
        ),
        (lambda p: _flip(p / "model.safetensors", -3), "model.safetensors: contents do not match"),
        (lambda p: (p / ck.MANIFEST).unlink(), "no MANIFEST.json; the checkpoint is incomplete"),
        (lambda p: _set_format(p, 99), "format version 99; this dltrain reads version 1"),
        (lambda p: (p / "state.json").unlink(), "state.json: listed in the manifest but missing"),
    ],
)
def test_damaged_checkpoints_are_refused(tmp_path, damage, message):
    p = _save(tmp_path, 1)
    damage(p)
    with pytest.raises(CheckpointError, match=message):
        ck.verify(p)


def _flip(path, offset):
    b = bytearray(path.read_bytes())
    b[offset] ^= 0xFF
    path.write_bytes(bytes(b))


def _set_format(p, v):
    m = json.loads((p / ck.MANIFEST).read_text())
    m["format"] = v
    (p / ck.MANIFEST).write_text(json.dumps(m))


def test_newest_valid_skips_broken(tmp_path):
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    _flip(tmp_path / "step-00000002" / "model.safetensors", -1)
    warnings = []
    assert ck.newest_valid(tmp_path, warnings.append).name == "step-00000001"
    assert "skipping checkpoint" in warnings[0] and "step-00000002" in warnings[0]


@pytest.mark.parametrize(
    "data,message",
    [
        (b"\x01\x00", "truncated"),
        (struct.pack("<Q", 10**12) + b"{}", "header claims"),
        (struct.pack("<Q", 2) + b"{}" + b"", None),
        (struct.pack("<Q", 7) + b"not json", "not valid JSON"),
        (lambda: _st_with_offsets([0, 10**9]), "data offsets"),
        (lambda: _st_with_offsets([8, 4]), "data offsets"),
    ],
)
def test_malformed_safetensors(tmp_path, data, message):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data() if callable(data) else data)
    if message is None:
        assert ck.read_tensors(path) == {}
        return
    with pytest.raises(CheckpointError, match=message):
        ck.read_tensors(path)


def _st_with_offsets(offs):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": offs}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(8)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_is_refused_by_content_whatever_its_name(tmp_path):
    marker = tmp_path / "pwned"
    for name in ("model.safetensors", "weights.bin", "ckpt"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Evil(marker)))
        with pytest.raises(CheckpointError, match="is a Python pickle; dltrain never unpickles"):
            ck.read_tensors(path)
    assert not marker.exists()


def test_torch_save_archive_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="zip archive \\(a torch.save file\\?\\)"):
        ck.read_tensors(path)
    with pytest.raises(CheckpointError, match="zip archive"):
        ck.resolve(path)


def test_prune_keeps_last_and_best(tmp_path):
    for s in range(1, 6):
        _save(tmp_path, s)
    ck.prune(tmp_path, 2, {"step-00000001"})
    assert ck.list_checkpoints(tmp_path) == ["step-00000001", "step-00000004", "step-00000005"]


def test_save_failure_is_loud_and_leaves_nothing(tmp_path, monkeypatch):
    _save(tmp_path, 1)
    for point in ("write:model.safetensors", "write:state.json", "manifest", "rename"):
        for action, text in (
            ("enospc", "No space left on device"),
            ("eacces", "Permission denied"),
            ("erofs", "Read-only file system"),
        ):
            monkeypatch.setenv("DLTRAIN_TEST_FAULT", f"{point}:{action}")
            with pytest.raises(
                DltrainIOError, match=f"cannot save checkpoint .*step-00000002: {text}"
            ):
                _save(tmp_path, 2, 5.0)
            assert ck.list_checkpoints(tmp_path) == ["step-00000001"]
            assert not [x for x in tmp_path.iterdir() if x.name.startswith(".tmp")]
            ck.verify(tmp_path / "step-00000001")


def test_resaving_a_step_replaces_it_atomically(tmp_path):
    _save(tmp_path, 3, 1.0)
    _save(tmp_path, 3, 2.0)
    assert ck.read_tensors(tmp_path / "step-00000003" / "model.safetensors")["w"][0, 0] == 2.0
    assert [x.name for x in tmp_path.iterdir()] == ["step-00000003"]
