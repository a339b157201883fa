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


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: pathlib.Path) -> set[str]:
    """dltrain modules a module imports when it is imported (module level, not under
    TYPE_CHECKING, not inside functions)."""
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    root = ".".join(base + ([node.module] if node.module else []))
                else:
                    root = node.module or ""
                for a in node.names:  # `from . import x` may name a submodule
                    out.add(f"{root}.{a.name}")
                out.add(root)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)

    visit(ast.parse(path.read_text()).body)
    return {m for m in out if m.startswith("dltrain")}


def test_no_import_circles():
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {
        m: {i for i in _runtime_imports(p) if i in modules and i != m} for m, p in modules.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def dfs(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                dfs(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    # a package's __init__ importing its own submodules is not a circle
    real = [
        c
        for c in cycles
        if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))
    ]
    assert not real, "\n".join(" -> ".join(c) for c in real)


def test_layer_type_names_live_only_in_their_units():
    """No module outside the spec classes names a layer type (ONNX op names aside)."""
    from dltrain.spec import LAYER_TYPES

    names = set(LAYER_TYPES)
    homes = {
        PKG / "spec" / f
        for f in ("layers.py", "seq_layers.py", "audio_layers.py", "noise_layers.py")
    }
    problems = []
    for path in PKG.rglob("*.py"):
        if path in homes:
            continue
        tree = ast.parse(path.read_text())
        onnx_ops = set()  # ONNX operator names: first arguments of g.op/g.node, onnx_* facts
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.args:
                if n.func.attr in ("op", "node"):
                    onnx_ops |= {id(c) for c in ast.walk(n.args[0])}
            elif isinstance(n, ast.Assign) and all(
                isinstance(t, ast.Name) and t.id.startswith("onnx_") for t in n.targets
            ):
                onnx_ops |= {id(c) for c in ast.walk(n.value)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and n.value in names and id(n) not in onnx_ops:
                problems.append(f"{path}:{n.lineno}: {n.value!r}")
    assert not problems, "\n".join(problems)
