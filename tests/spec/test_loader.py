"""Loading: extends, --set, blocks and repeat, shorthands, floats, round trip, summary."""

from pathlib import Path

import pytest
import torch

from dltrain.engine.model import compile_model
from dltrain.spec import ModelSpec, SpecError, load, load_model
from tests.cli.helpers import ROOT, dltrain, dltrain_here

BASE = """\
name: base
seed: 4
data: {train: {type: builtin, name: iris}, validation_split: 0.2}
model:
  input_shape: [4]
  layers:
    - {type: Dense, units: 8, activation: relu}
    - {type: Dense, units: 3, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: {type: adam, learning_rate: 1e-3, beta_1: 0.8}
metrics: [acc]
train: {epochs: 3, batch_size: 8}
"""

VGG = """\
model:
  input_shape: [224, 224, 3]
  blocks:
    vgg:
      params: {filters: 64, convs: 2}
      layers:
        - {type: Conv2D, filters: "${filters}", kernel_size: 3, padding: same,
           activation: relu, repeat: "${convs}"}
        - {type: MaxPooling2D, pool_size: 2}
  layers:
    - {type: Block, use: vgg, filters: 64}
    - {type: Block, use: vgg, filters: 128}
    - {type: Block, use: vgg, filters: 256, convs: 3}
    - {type: Block, use: vgg, filters: 512, convs: 3, repeat: 2}
    - {type: Flatten}
    - {type: Dense, units: 4096, activation: relu, repeat: 2}
    - {type: Dense, units: 1000, activation: softmax}
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(
        tmp_path,
        "child.yaml",
        "extends: base.yaml\nname: child\n"
        "optimizer: {learning_rate: 0.01}\nmetrics: [f1]\ntrain: {epochs: 9}\n",
    )
    spec = load(str(child))
    assert spec.name == "child" and spec.seed == 4
    assert spec.optimizer.learning_rate == 0.01 and spec.optimizer.beta_1 == 0.8
    assert [m.type for m in spec.metrics] == ["f1"]
    assert spec.train.epochs == 9 and spec.train.batch_size == 8
    # errors in the base point into the base file
    write(tmp_path, "base.yaml", BASE.replace("units: 8,", "units: 0,"))
    with pytest.raises(SpecError, match=r"base\.yaml:7:28: model\.layers\[0\]\.units"):
        load(str(child))


def test_set_overrides_are_typed_and_index_lists(tmp_path):
    p = write(tmp_path, "c.yaml", BASE)
    spec = load(
        str(p),
        [
            "train.epochs=7",
            "optimizer.learning_rate=3e-4",
            "model.layers.0.units=32",
            "loss=mse",
            "task=regression",
            "data.scaling=standard",
        ],
    )
    assert spec.train.epochs == 7 and spec.optimizer.learning_rate == 3e-4
    assert spec.model.layers[0].units == 32 and spec.loss.type == "mean_squared_error"
    with pytest.raises(SpecError, match="'5' is not an index of the 2-item list model.layers"):
        load(str(p), ["model.layers.5.units=3"])
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load(str(p), ["train.epochs"])


def test_shorthands_and_aliases(tmp_path):
    p = write(
        tmp_path,
        "c.yaml",
        BASE.replace(
            "optimizer: {type: adam, learning_rate: 1e-3, beta_1: 0.8}", "optimizer: Adam"
        ),
    )
    spec = load(str(p))
    assert spec.optimizer.type == "adam" and spec.optimizer.epsilon == 1e-7
    assert [m.type for m in spec.metrics] == ["accuracy"]


def test_yaml_floats_without_a_dot(tmp_path):
    spec = load(str(write(tmp_path, "c.yaml", BASE)))
    assert isinstance(spec.optimizer.learning_rate, float) and spec.optimizer.learning_rate == 1e-3


def test_blocks_expand_and_errors_point_at_the_definition(tmp_path):
    model = load_model(str(write(tmp_path, "vgg.yaml", VGG)))
    types = [la.type for la in model.layers]
    assert types.count("Conv2D") == 13 and types.count("MaxPooling2D") == 5
    assert [la.filters for la in model.layers if la.type == "Conv2D"][-1] == 512
    with pytest.raises(
        SpecError,
        match=r"vgg\.yaml:11:26: unknown block 'vg'; did you mean "
        r"'vgg'\?",
    ):
        load_model(
            str(
                write(
                    tmp_path,
                    "vgg.yaml",
                    VGG.replace("use: vgg, filters: 64", "use: vg, filters: 64"),
                )
            )
        )
    with pytest.raises(
        SpecError, match="block 'vgg' has no parameter 'filter'; did you mean 'filters'"
    ):
        load_model(str(write(tmp_path, "vgg.yaml", VGG.replace("filters: 128", "filter: 128"))))
    bad = VGG.replace("kernel_size: 3, padding: same", "kernel_size: 3, padding: sam")
    with pytest.raises(SpecError, match=r"vgg\.yaml:7:\d+: model\.layers\[0\]\.padding: 'sam'"):
        load_model(str(write(tmp_path, "vgg.yaml", bad)))


def test_vgg16_summary_reports_keras_parameter_count(tmp_path):
    write(tmp_path, "vgg.yaml", VGG)
    res = dltrain_here("summary", "vgg.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Total params: 138,357,544" in res.stdout
    assert "Trainable params: 138,357,544" in res.stdout
    assert "(None, 7, 7, 512)" in res.stdout and "(None, 25088)" in res.stdout


CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS + [Path("vgg")], ids=lambda p: p.stem)
def test_compile_spec_compile_round_trip(path, tmp_path):
    spec = load_model(str(write(tmp_path, "vgg.yaml", VGG) if path.stem == "vgg" else path))
    device = "meta" if path.stem == "vgg" else "cpu"
    a = compile_model(spec, seed=5, device=device)
    again = ModelSpec.model_validate(a.spec.model_dump(mode="json"))
    b = compile_model(again, seed=5, device=device)
    assert [(x.name, x.output_shape) for x in a.layers] == [
        (y.name, y.output_shape) for y in b.layers
    ]
    assert a.param_counts() == b.param_counts()
    if device == "cpu":
        for (ka, ta), (kb, tb) in zip(a.state_tensors().items(), b.state_tensors().items()):
            assert ka == kb and torch.equal(ta, tb)


def test_init_writes_starters_that_validate(tmp_path):
    from typer.testing import CliRunner

    from dltrain.cli import app

    def cli(*args: str):
        return CliRunner().invoke(app, list(args))

    for kind in ("mlp", "cnn"):
        res = cli("init", kind, "-o", str(tmp_path / f"{kind}.yaml"))
        assert res.exit_code == 0, res.output
        assert cli("validate", str(tmp_path / f"{kind}.yaml")).exit_code == 0
    res = cli("init", "mlp", "-o", str(tmp_path / "mlp.yaml"))
    assert res.exit_code == 6 and "--force" in res.output
    res = cli("init", "rnn", "-o", str(tmp_path / "rnn.yaml"))
    assert res.exit_code == 2 and "choose one of: mlp, cnn" in res.output


def test_schema_command_prints_json_schema(tmp_path):
    import json

    res = dltrain("schema", cwd=tmp_path)  # a real process: the schema needs no torch
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert schema["title"] == "dltrain config" and "model" in schema["properties"]


def test_set_gives_keys_to_a_shorthand(tmp_path):
    text = BASE.replace(
        "optimizer: {type: adam, learning_rate: 1e-3, beta_1: 0.8}", "optimizer: sgd"
    )
    assert "optimizer: sgd" in text
    p = write(tmp_path, "c.yaml", text)
    spec = load(str(p), ["optimizer.learning_rate=0.3", "optimizer.momentum=0.9"])
    assert spec.optimizer.type == "sgd" and spec.optimizer.learning_rate == 0.3
    assert spec.optimizer.momentum == 0.9
