"""Every README snippet holds: YAML configs and fragments validate (and compile on the meta
device), the search-space example is a valid space, every `dltrain` command line names a
command and options that exist, and the developer commands exist. (The Python export
snippet runs in tests/export/test_export.py against a real bundle.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCKS if kind == lang]


def code_block(lang: str, containing: str) -> str:
    (body,) = [b for b in blocks(lang) if containing in b]
    return body


@pytest.mark.parametrize("i", range(len(blocks("yaml"))))
def test_yaml_snippets_validate(i, tmp_path):
    from dltrain.engine.checks import check_run
    from dltrain.engine.model import compile_model
    from dltrain.spec import load, load_model
    from dltrain.spec.tune import load_space

    text = blocks("yaml")[i]
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    if "..." in text:  # an outline with elided layers: valid YAML is all it claims
        return
    path = tmp_path / "snippet.yaml"
    path.write_text(text)
    if "params" in doc and "model" not in doc:  # a search space
        load_space(str(path))
    elif all(k in doc for k in ("model", "data", "loss", "optimizer")):
        check_run(load(str(path)), meta=True)
    elif "model" in doc:
        compile_model(load_model(str(path)), device="meta")
    else:
        pytest.fail(f"README yaml block {i} is neither a config nor a space:\n{text}")


def _commands() -> list[list[str]]:
    lines = []
    for body in blocks("bash") + blocks(""):
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("dltrain "):
                lines.append(shlex.split(line))
    for row in re.findall(r"^\| `(dltrain [^`]+)`", README, re.M):
        lines.append(shlex.split(row.replace("\\|", "|")))
    return lines


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a[:2]))
def test_dltrain_command_lines_name_real_commands_and_options(argv):
    import typer.main

    from dltrain.cli import app

    group = typer.main.get_command(app)
    cmd = group.commands.get(argv[1])  # type: ignore[attr-defined]
    assert cmd is not None, f"no command {argv[1]!r} ({' '.join(argv)})"
    known = {o for p in cmd.params for o in getattr(p, "opts", [])}
    for word in argv[2:]:
        flag = word.split("=")[0].strip("[],")
        if flag.startswith("-") and flag not in ("-", "--"):
            assert flag in known, f"{' '.join(argv)}: {argv[1]} has no option {flag}"


def test_developer_commands_exist():
    dev = (ROOT / "dev.py").read_text()
    for cmd in ("train", "test"):
        assert f'"{cmd}"' in dev
    assert re.search(r"^lint:", (ROOT / "Makefile").read_text(), re.M)
    assert "pre-commit" in (ROOT / "pyproject.toml").read_text()
