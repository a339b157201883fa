"""Transfer learning: model.load_weights copies trained weights by layer name, frozen layers
keep them bit for bit while a new head trains, and mismatches are config errors (exit 2)
naming the layer, the weight and both shapes."""

import numpy as np
import pytest
import torch

from dltrain.engine import checkpoint as ck
from dltrain.export import export_checkpoint
from dltrain.run.train import train_run
from tests.cli.helpers import dltrain, dltrain_here

BASE = """\
name: base
data: {{train: {{type: builtin, name: digits}}, rescale: 0.0625}}
model:
  input_shape: [8, 8, 1]
  {load}
  layers:
    - {{type: Conv2D, filters: 8, kernel_size: 3, activation: relu, name: conv, {frozen}}}
    - {{type: BatchNormalization, name: bn, {frozen}}}
    - {{type: Flatten}}
    - {{type: Dense, units: {units}, activation: softmax, name: {head}}}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {{epochs: 1, batch_size: 64}}
logging: {{tensorboard: false}}
"""


def config(tmp_path, name, load="", frozen="trainable: true", units=10, head="head"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(BASE.format(load=load, frozen=frozen, units=units, head=head))
    return p


def weights(run):
    return ck.read_tensors(ck.resolve(run) / "model.safetensors")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("transfer")
    return d, train_run(str(config(d, "a")), [], str(d / "a"), log=lambda m: None)


def test_frozen_layers_keep_the_loaded_weights(source):
    d, a = source
    msgs = []
    b = train_run(
        str(
            config(
                d,
                "b",
                load="load_weights: {path: a, layers: [conv, bn]}",
                frozen="trainable: false",
                head="new_head",
            )
        ),
        [],
        str(d / "b"),
        log=msgs.append,
    )
    wa, wb = weights(a), weights(b)
    for k in (
        "conv.kernel",
        "conv.bias",
        "bn.gamma",
        "bn.beta",
        "bn.moving_mean",
        "bn.moving_variance",
    ):
        assert torch.equal(wa[k], wb[k]), k
    report = next(m for m in msgs if "loaded the weights of 2 layer(s)" in m)
    # what loaded, what kept fresh weights, and what in the file went unused
    assert ": conv, bn;" in report
    assert "kept fresh weights: new_head" in report
    assert "unused in the file: head.bias, head.kernel" in report
    fresh = train_run(
        str(config(d, "c", frozen="trainable: false", head="new_head")),
        [],
        str(d / "c"),
        log=lambda m: None,
    )
    assert not torch.equal(weights(fresh)["conv.kernel"], wa["conv.kernel"])


def test_trainable_layers_start_from_the_loaded_weights(source, tmp_path):
    d, a = source
    # one epoch at a tiny learning rate: the weights stay next to the source's
    b = train_run(
        str(config(d, "d", load="load_weights: {path: a}")),
        ["optimizer.learning_rate=1e-7"],
        str(tmp_path / "d"),
        log=lambda m: None,
    )
    for k, v in weights(a).items():
        if "moving" not in k:  # batch statistics move with the data, not the learning rate
            np.testing.assert_allclose(weights(b)[k], v, atol=1e-4)


def test_bundle_and_safetensors_file_sources(source, tmp_path):
    d, a = source
    export_checkpoint(str(a), "safetensors", str(d / "bundle"))
    for path in ("bundle", "bundle/model.safetensors"):
        b = train_run(
            str(
                config(
                    d,
                    "e",
                    load=f"load_weights: {{path: {path}, layers: [conv]}}",
                    frozen="trainable: false",
                )
            ),
            [],
            str(tmp_path / path.replace("/", "_")),
            log=lambda m: None,
        )
        assert torch.equal(weights(b)["conv.kernel"], weights(a)["conv.kernel"])


@pytest.mark.parametrize(
    "load,units,code,message",
    [
        ("load_weights: {path: a}", 12, 2, "head.kernel is (12, 288) in the model but (10, 288)"),
        ("load_weights: {path: a, layers: [conv, nope]}", 10, 2, "layers names 'nope'"),
        ("load_weights: {path: missing}", 10, 4, "missing: no such run directory"),
    ],
)
def test_mismatches_are_errors(source, load, units, code, message):
    d, _ = source
    config(d, "f", load=load, units=units)
    res = dltrain_here("train", "f.yaml", "-q", "--run-dir", "f_run", cwd=d)
    assert res.returncode == code and message in res.stderr, res.stderr
    assert "f.yaml:5:" in res.stderr or code == 4  # the load_weights line
    assert not (d / "f_run").exists()


def test_skip_mismatch_loads_the_rest(source, tmp_path):
    d, a = source
    msgs = []
    b = train_run(
        str(
            config(
                d,
                "g",
                load="load_weights: {path: a, skip_mismatch: true}",
                units=12,
                frozen="trainable: false",
            )
        ),
        [],
        str(tmp_path / "g"),
        log=msgs.append,
    )
    assert torch.equal(weights(b)["conv.kernel"], weights(a)["conv.kernel"])
    assert any("skipped (shapes differ): head" in m for m in msgs)


def test_strict_refuses_fresh_layers_and_unused_entries(source, tmp_path):
    d, a = source
    cfg = config(d, "strict", load="load_weights: {path: a, strict: true}", head="new_head")
    r = dltrain("train", str(cfg), "--run-dir", str(tmp_path / "s"))
    assert r.returncode == 2, r.stderr
    assert "strict: true" in r.stderr and "fresh weights: new_head" in r.stderr
    assert "unused: head.bias, head.kernel" in r.stderr
    assert not (tmp_path / "s").exists()
    # the same model as the source: strict loads it all
    same = config(d, "strict_ok", load="load_weights: {path: a, strict: true}")
    r = dltrain("train", str(same), "--run-dir", str(tmp_path / "t"), "--set", "train.epochs=1")
    assert r.returncode == 0, r.stderr
    assert "loaded the weights of 3 layer(s)" in r.stderr
