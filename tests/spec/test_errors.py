"""The table of bad configs: exit 2, file:line:col and a useful suggestion for each."""

import pytest

from tests.cli.helpers import dltrain, dltrain_here

GOOD = """\
name: t
data:
  train: {type: synthetic, samples: 50, features: 4, classes: 3}
model:
  input_shape: [4]
  layers:
    - {type: Dense, units: 8, activation: relu}
    - {type: Dense, units: 3, activation: softmax}
loss: sparse_categorical_crossentropy
optimizer: adam
"""

CASES = [
    (
        "top-level typo",
        GOOD.replace("optimizer: adam", "optimzer: adam"),
        ":10:1: unknown key 'optimzer' in the top level; did you mean 'optimizer'?",
    ),
    (
        "nested typo",
        GOOD.replace("units: 8,", "unts: 8,"),
        ":7:21: unknown key 'unts' in model.layers[0] (Dense); did you mean 'units'",
    ),
    (
        "wrong type",
        GOOD.replace("units: 8,", "units: many,"),
        ":7:28: model.layers[0].units: input should be a valid integer",
    ),
    (
        "negative units",
        GOOD.replace("units: 8,", "units: -8,"),
        ":7:28: model.layers[0].units: input should be greater than 0, got -8",
    ),
    (
        "dropout 1.5",
        GOOD.replace(
            "    - {type: Dense, units: 3",
            "    - {type: Dropout, rate: 1.5}\n    - {type: Dense, units: 3",
        ),
        ":8:29: model.layers[1].rate: input should be less than 1, got 1.5",
    ),
    (
        "unknown layer",
        GOOD.replace("type: Dense, units: 8", "type: Dens, units: 8"),
        ":7:14: unknown layer type 'Dens' in model.layers[0]; did you mean 'Dense'?",
    ),
    (
        "unknown activation",
        GOOD.replace("activation: relu", "activation: rellu"),
        ":7:43: model.layers[0].activation: 'rellu' is not a valid choice; did you mean 'relu'",
    ),
    (
        "dense after conv",
        GOOD.replace("input_shape: [4]", "input_shape: [4, 4, 1]").replace(
            "    - {type: Dense, units: 8, activation: relu}",
            "    - {type: Conv2D, filters: 2, kernel_size: 3}",
        ),
        ":8:7: the model's output has shape (2, 2, 3) per sample, but sparse_categorical_"
        "crossentropy needs a flat (units,) output; add a Flatten",
    ),
    (
        "conv after dense",
        GOOD.replace(
            "    - {type: Dense, units: 3",
            "    - {type: Conv2D, filters: 2, kernel_size: 3}\n    - {type: Dense, units: 3",
        ),
        ":8:7: layer 1 'conv2d' (Conv2D): Conv2D needs a (height, width, channels) input per "
        "sample, got shape (8,); add a Reshape first (input shape (8,))",
    ),
    (
        "missing input layer",
        GOOD.replace("{type: Dense, units: 3,", "{type: Dense, inputs: [hiden], units: 3,"),
        ":8:30: layer 1 'dense_1' (Dense): inputs names 'hiden', which is not a layer before it",
    ),
    (
        "python tag",
        GOOD + "evil: !!python/object/apply:os.system ['touch pwned']\n",
        ":11:7: YAML tag '!!python/object/apply:os.system' is not allowed",
    ),
    (
        "duplicate key",
        GOOD + "optimizer: sgd\n",
        ":11:1: duplicate key 'optimizer' (first given at line 10); keep one of them",
    ),
    (
        "unknown optimizer",
        GOOD.replace("optimizer: adam", "optimizer: adamm"),
        ":10:12: unknown optimizer type 'adamm' in optimizer; did you mean 'adam'",
    ),
    (
        "unknown loss",
        GOOD.replace(
            "loss: sparse_categorical_crossentropy", "loss: sparse_categorical_crosentropy"
        ),
        ":9:7: unknown loss type 'sparse_categorical_crosentropy' in loss; did you mean "
        "'sparse_categorical_crossentropy'",
    ),
    ("yaml syntax", GOOD.replace("units: 8,", "units: [8,"), "YAML syntax error"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config(tmp_path, text, expected):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = dltrain_here("validate", str(cfg), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert f"{cfg}{expected}" in res.stderr or expected in res.stderr, res.stderr
    if expected.startswith(":"):
        assert f"{cfg}{expected}" in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not (tmp_path / "pwned").exists()


def test_good_config_validates(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD)
    res = dltrain_here("validate", "c.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def test_three_mistakes_are_all_reported(tmp_path):
    text = (
        GOOD.replace("optimizer: adam", "optimzer: adam")
        .replace("units: 8,", "units: -8,")
        .replace("activation: softmax", "activation: softmx")
    )
    (tmp_path / "c.yaml").write_text(text)
    res = dltrain_here("validate", "c.yaml", cwd=tmp_path)
    assert res.returncode == 2
    lines = [x for x in res.stderr.splitlines() if x.startswith("error: c.yaml:")]
    assert len(lines) == 3, res.stderr
    assert ":7:28:" in lines[0] and ":8:43:" in lines[1] and ":10:1:" in lines[2]


def test_extends_cycle_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    res = dltrain_here("validate", "a.yaml", cwd=tmp_path)
    assert (
        res.returncode == 2 and "'extends' makes a cycle: a.yaml -> b.yaml -> a.yaml" in res.stderr
    ), res.stderr
    res = dltrain_here("validate", "nope.yaml", cwd=tmp_path)
    assert res.returncode == 2 and "config file not found: nope.yaml" in res.stderr
    (tmp_path / "c.yaml").write_text("extends: base.yaml\n")
    res = dltrain_here("validate", "c.yaml", cwd=tmp_path)
    assert res.returncode == 2 and "c.yaml:1:10: extends: base config not found" in res.stderr


def test_set_override_errors_point_at_the_option(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD)
    res = dltrain_here("validate", "c.yaml", "--set", "train.epochs=-1", cwd=tmp_path)
    assert res.returncode == 2
    assert (
        "--set train.epochs=-1:1:14: train.epochs: input should be greater than 0" in res.stderr
    ), res.stderr
    res = dltrain_here("validate", "c.yaml", "--set", "trian.epochs=3", cwd=tmp_path)
    assert "unknown key 'trian' in the top level; did you mean 'train'?" in res.stderr


def test_multiple_documents_rejected(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD + "---\nname: second\n")
    res = dltrain_here("validate", "c.yaml", cwd=tmp_path)
    assert res.returncode == 2 and "one YAML document" in res.stderr


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD.replace("units: 8,", "units: -8,"))
    res = dltrain("--debug", "validate", "c.yaml", cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" in res.stderr
