"""Who may import whom (../shared/ARCHITECTURE.md), checked on every module's imports."""

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "dltrain"

# package -> dltrain packages it may import (besides itself and the shared top-level
# modules errors/fsutil)
ALLOWED = {
    "spec": set(),
    "kernels": set(),
    "engine": {"spec", "kernels"},
    "data": {"spec"},
    "zoo": {"spec"},
    "run": {"spec", "engine", "data", "kernels"},
    "export": {"spec", "engine", "data", "run"},
    "cli": {"spec", "engine", "data", "run", "export", "kernels", "templates"},
}
THIRD_PARTY_BANNED = {"spec": {"torch", "triton", "numpy"}, "kernels": {"pydantic", "yaml"}}


def _imports(path: pathlib.Path, package: str) -> set[str]:
    """Top-level dltrain packages and third-party roots imported by a module."""
    out = set()
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                mod = ".".join(base + tuple((node.module or "").split("."))).strip(".")
                names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for n in names:
            bits = n.split(".")
            out.add(
                bits[1]
                if bits[0] == "dltrain" and len(bits) > 1
                else ("dltrain" if bits[0] == "dltrain" else "ext:" + bits[0])
            )
    return out


def test_packages_import_only_what_the_architecture_allows():
    problems = []
    for package, allowed in ALLOWED.items():
        for path in (PKG / package).rglob("*.py"):
            for imp in _imports(path, package):
                if imp.startswith("ext:"):
                    if imp[4:] in THIRD_PARTY_BANNED.get(package, set()):
                        problems.append(f"{path}: imports {imp[4:]}")
                elif imp not in allowed | {package, "errors", "fsutil", "dltrain", "__version__"}:
                    problems.append(f"{path}: imports dltrain.{imp}")
    assert not problems, "\n".join(problems)


def test_nothing_imports_the_cli():
    for path in PKG.rglob("*.py"):
        if "cli" in path.relative_to(PKG).parts or path.name == "__main__.py":
            continue
        assert "cli" not in _imports(path, ""), path
