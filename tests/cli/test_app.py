"""The typer app as a library user sees it, and config errors found while building a run."""

from typer.testing import CliRunner

from dltrain.cli import app
from tests.cli.helpers import dltrain


def test_the_app_has_its_commands_at_import():
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("train", "evaluate", "predict", "generate", "export", "validate", "summary"):
        assert cmd in res.output, cmd


def test_version():
    from dltrain import __version__

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_a_model_with_every_layer_frozen_is_a_config_error(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "data: {train: {type: synthetic, samples: 16, features: 4, classes: 2}}\n"
        "model:\n  input_shape: [4]\n  layers:\n"
        "    - {type: Dense, units: 2, activation: softmax, trainable: false}\n"
        "loss: sparse_categorical_crossentropy\noptimizer: adam\n"
        "train: {epochs: 1}\nlogging: {tensorboard: false}\n"
    )
    res = dltrain("train", "c.yaml", "-q", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "every layer is frozen" in res.stderr and "Traceback" not in res.stderr


def test_help_shows_flags_bare_and_no_python_types():
    import typer.main

    group = typer.main.get_command(app)
    for name in [None, *group.commands]:  # type: ignore[attr-defined]
        res = CliRunner().invoke(app, [name, "--help"] if name else ["--help"])
        assert res.exit_code == 0, name
        assert "<bool>" not in res.output and "list[str]" not in res.output, name
