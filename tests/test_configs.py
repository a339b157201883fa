"""Every file in configs/ validates against the JSON schema and the pydantic schema, compiles,
and trains a few steps."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from dltrain.run.train import train_run
from dltrain.spec import json_schema, load

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    names = {p.stem for p in CONFIGS}
    assert {"seed_mlp", "digits_mlp", "digits_cnn", "iris", "wine_csv"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_json_schema_accepts_config(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), json_schema())


DIGITS = Path(__file__).resolve().parents[1] / "configs" / "digits_mlp.yaml"


def test_json_schema_rejects_a_misspelt_key():
    doc = yaml.safe_load(DIGITS.read_text())
    doc["optimzer"] = doc.pop("optimizer")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json_schema())
    doc = yaml.safe_load(DIGITS.read_text())
    doc["model"]["layers"][0]["unts"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json_schema())


TRAINABLE = [p for p in CONFIGS if "bench" not in p.parts]


@pytest.mark.parametrize("path", TRAINABLE, ids=lambda p: p.stem)
def test_config_trains_a_few_steps(path, tmp_path):
    """Three optimizer steps (train.steps_per_epoch) over two epochs: the loop, validation,
    metrics lines and checkpoints all run; the loss is a finite number."""
    spec = load(str(path))
    over = ["train.epochs=2", "train.steps_per_epoch=3", "logging.tensorboard=false"]
    rdir = train_run(str(path), over, str(tmp_path / "run"), log=lambda m: None)
    lines = [json.loads(x) for x in (rdir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6]
    assert all(0 < x["loss"] < float("inf") for x in lines)
    assert spec.name == path.stem


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAINABLE, ids=lambda p: p.stem)
def test_config_trains_a_full_epoch_and_learns(path, tmp_path):
    """Two full epochs: the second's mean training loss is below the first's (a GAN's
    generator loss need not fall; it must stay finite)."""
    over = ["train.epochs=2", "logging.tensorboard=false"]
    rdir = train_run(str(path), over, str(tmp_path / "run"), log=lambda m: None)
    lines = [json.loads(x) for x in (rdir / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(0 < x["loss"] < float("inf") for x in lines)
    if load(str(path)).task != "gan":
        assert lines[1]["loss"] < lines[0]["loss"], lines
