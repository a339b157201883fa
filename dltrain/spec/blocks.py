"""Blocks, `repeat` and the model zoo: `{type: Block, use: NAME, ...params}` entries are
expanded into the layers they stand for before validation, with names scoped per instance
and positions pointing at the block's definition. Zoo blocks (`use: zoo:NAME`) are YAML
files in dltrain/zoo/, read as data."""

from __future__ import annotations

import functools
import re
from typing import Any

from .errors import Issue, SpecError, suggest
from .limits import MAX_LAYERS, MAX_REPEAT
from .yamlpos import Doc, Loc, Path, load_text

_PARAM = re.compile(r"^\$\{(\w+)\}$")
_INNER = re.compile(r"\$\{(\w+)\}")


def _substitute(value: Any, params: dict[str, Any], issues: list[Issue], where: Loc | None):
    """'${p}' becomes the parameter's value (its type kept); inside a longer string, its
    text ('${id}_conv' -> 'conv2_block1_conv')."""
    if isinstance(value, str) and "${" in value:
        unknown = [n for n in _INNER.findall(value) if n not in params]
        for n in unknown:
            issues.append(Issue(where, f"unknown block parameter '{n}'" + suggest(n, params)))
        if unknown:
            return value
        if m := _PARAM.match(value):
            return params[m.group(1)]
        return _INNER.sub(lambda m: str(params[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _substitute(v, params, issues, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params, issues, where) for v in value]
    return value


class _BlockInput:
    """What `block_input` names inside a block: the layer before the block (given a name
    when first asked, if it has none), or the model input."""

    def __init__(self, prev: dict[str, Any] | None, fallback: str) -> None:
        self.prev, self.fallback = prev, fallback

    def name(self) -> str:
        if self.prev is None:
            return "input"
        if not self.prev.get("name"):
            self.prev["name"] = self.fallback
        return str(self.prev["name"])


def expand_layers(doc: Doc, root: Path = ("model",)) -> None:
    """Replace `{type: Block, use: NAME}` entries and `repeat: N` by the layers they stand for,
    in the model at `root` (the model, or a GAN's discriminator).

    Positions of expanded layers point at the block's definition."""
    model: Any = doc.value
    for key in root:
        model = model.get(key) if isinstance(model, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("layers"), list):
        return
    blocks = dict(model.get("blocks") or {})
    issues: list[Issue] = []
    out_layers: list[Any] = []
    new_locs: dict[Path, Loc] = {}
    new_key_locs: dict[Path, Loc] = {}
    counters: dict[str, int] = {}

    def emit(layer: Any, src: Path) -> None:
        if len(out_layers) >= MAX_LAYERS:
            raise SpecError(
                [
                    Issue(
                        doc.locs.get(src),
                        f"the model expands to more than {MAX_LAYERS:,} layers (blocks and "
                        "repeat multiply); that is far past any model that trains here",
                    )
                ]
            )
        dst = root + ("layers", len(out_layers))
        for table, new in ((doc.locs, new_locs), (doc.key_locs, new_key_locs)):
            for p, loc in table.items():
                if p[: len(src)] == src:
                    new[dst + p[len(src) :]] = loc
        out_layers.append(layer)

    def walk(
        items: list[Any],
        base: Path,
        params: dict[str, Any],
        scope: str | None,
        depth: int,
        block_input: _BlockInput | None = None,
        frozen: bool = False,
    ) -> None:
        for j, layer in enumerate(items):
            src = base + (j,)
            if not isinstance(layer, dict):
                emit(layer, src)
                continue
            where = doc.locs.get(src)
            layer = _substitute(layer, params, issues, where) if params else layer
            reps = layer.get("repeat", 1)
            if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1:
                emit(layer, src)  # validation reports the bad repeat
                continue
            if reps > MAX_REPEAT:
                issues.append(
                    Issue(
                        doc.locs.get(src + ("repeat",), where),
                        f"repeat: {reps:,} is more than {MAX_REPEAT:,}",
                    )
                )
                continue
            layer = {k: v for k, v in layer.items() if k != "repeat"}
            if layer.get("type") != "Block":
                if reps > 1 and layer.get("name"):
                    issues.append(
                        Issue(
                            where,
                            f"layer '{layer['name']}' has a name and repeat: "
                            f"{reps}; names must be unique, drop one of them",
                        )
                    )
                for _ in range(reps):
                    if scope and layer.get("name"):
                        layer = dict(layer, name=f"{scope}/{layer['name']}")
                    if (scope or block_input) and isinstance(layer.get("inputs"), list):
                        layer = dict(
                            layer,
                            inputs=[
                                f"{scope}/{n}"
                                if scope and n in local_names(items)
                                else (
                                    block_input.name() if n == "block_input" and block_input else n
                                )
                                for n in layer["inputs"]
                            ],
                        )
                    emit(dict(layer, trainable=False) if frozen else dict(layer), src)
                continue
            use = layer.get("use")
            if isinstance(use, str) and use.startswith("zoo:") and use not in blocks:
                blocks.update(zoo_blocks())
            if use not in blocks:
                issues.append(
                    Issue(
                        doc.locs.get(src + ("use",), where),
                        f"unknown block '{use}'"
                        + suggest(
                            str(use), blocks if not str(use).startswith("zoo:") else zoo_blocks()
                        )
                        + (
                            " (define it under model.blocks, or see `dltrain zoo`)"
                            if not blocks
                            else ""
                        ),
                    )
                )
                continue
            if depth > 8:
                issues.append(
                    Issue(
                        where, f"blocks nest more than 8 deep at '{use}'; is a block using itself?"
                    )
                )
                continue
            block = blocks[use]
            defaults = dict(block.get("params") or {}) if isinstance(block, dict) else {}
            args = {k: v for k, v in layer.items() if k not in ("type", "use", "name", "trainable")}
            trainable = layer.get("trainable", True)
            if not isinstance(trainable, bool):
                issues.append(
                    Issue(
                        doc.locs.get(src + ("trainable",), where),
                        f"a Block's trainable is true or false, got {trainable!r}",
                    )
                )
                continue
            for k in args:
                if k not in defaults:
                    issues.append(
                        Issue(
                            doc.locs.get(src + (k,), where),
                            f"block '{use}' has no parameter '{k}'" + suggest(k, defaults),
                        )
                    )
            bparams = {**defaults, **args}
            scoped = block.get("scoped", True) if isinstance(block, dict) else True
            if not scoped and reps > 1 and not layer.get("name"):
                issues.append(
                    Issue(
                        where,
                        f"block '{use}' names its layers as Keras does (scoped: false), so "
                        f"repeat: {reps} would repeat those names; use it once per name",
                    )
                )
                continue
            for _ in range(reps):
                counters[str(use)] = counters.get(str(use), 0) + 1
                inst = layer.get("name") or f"{str(use).removeprefix('zoo:')}_{counters[str(use)]}"
                if scoped or layer.get("name"):
                    full: str | None = inst if scope is None else f"{scope}/{inst}"
                else:  # Keras applications' names, as they are
                    full = scope
                walk(
                    block.get("layers") or [],
                    root + ("blocks", str(use), "layers"),
                    bparams,
                    full,
                    depth + 1,
                    name_block_input(full or inst),
                    frozen or not trainable,
                )

    def name_block_input(inst: str) -> _BlockInput:
        prev = out_layers[-1] if out_layers and isinstance(out_layers[-1], dict) else None
        return _BlockInput(prev, f"{inst}/input")

    def local_names(items: list[Any]) -> set[str]:
        return {str(i["name"]) for i in items if isinstance(i, dict) and i.get("name")}

    walk(model["layers"], root + ("layers",), {}, None, 0)
    if issues:
        raise SpecError(issues)
    for table, new in ((doc.locs, new_locs), (doc.key_locs, new_key_locs)):
        n = len(root) + 1
        for p in [p for p in table if p[:n] == root + ("layers",) and len(p) > n]:
            del table[p]
        table.update(new)
    model["layers"] = out_layers
    model.pop("blocks", None)


@functools.cache
def _zoo_files() -> dict[str, Any]:
    from importlib import resources

    out: dict[str, Any] = {}
    for f in sorted(resources.files("dltrain.zoo").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".yaml"):
            doc = load_text(f.read_text(encoding="utf-8"), f"zoo/{f.name}")
            for name, block in (doc.value.get("blocks") or {}).items():
                out[name] = block
    return out


def zoo_blocks() -> dict[str, Any]:
    """The model zoo's blocks as `zoo:NAME`; inside them `use:` names other zoo blocks."""
    out = {}
    for name, block in _zoo_files().items():
        layers = [
            dict(la, use=f"zoo:{la['use']}") if la.get("type") == "Block" else la
            for la in block.get("layers", [])
        ]
        out[f"zoo:{name}"] = dict(block, layers=layers)
    return out
