"""From a config path to a validated RunSpec: extends, --set overrides, blocks, shorthands,
validation, and every error mapped back to its file:line:col."""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import Issue, SpecError, path_str, suggest
from .fields import describe_kind, fields_at
from .schema import LOSS_ALIASES, METRIC_ALIASES, ModelSpec, RunSpec
from .yamlpos import Doc, Loc, Path, load_file, load_text


class Source:
    """Where each path of a validated spec came from (for errors found after validation)."""

    def __init__(self, doc: Doc, prefix: Path = ()) -> None:
        self.doc, self.prefix = doc, prefix

    def loc(self, path: Sequence[str | int]) -> Loc | None:
        full = self.prefix + tuple(path)
        while True:
            if full in self.doc.locs:
                return self.doc.locs[full]
            if not full:
                return None
            full = full[:-1]


# -- extends -----------------------------------------------------------------------------------
def _copy_locs(src: Doc, dst: Doc, prefix: Path) -> None:
    n = len(prefix)
    for table_src, table_dst in ((src.locs, dst.locs), (src.key_locs, dst.key_locs)):
        for p, loc in table_src.items():
            if p[:n] == prefix:
                table_dst[p] = loc


def _merge(base: Any, over: Any, path: Path, bdoc: Doc, odoc: Doc, out: Doc) -> Any:
    """Deep-merge mappings; anything else (lists included) is replaced by `over`."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        _copy_locs(odoc, out, path)
        return copy.deepcopy(over)
    if path in odoc.locs:
        out.locs[path] = odoc.locs[path]
    merged: dict[str, Any] = {}
    for k, v in base.items():
        if k not in over:
            merged[k] = copy.deepcopy(v)
            _copy_locs(bdoc, out, path + (k,))
    for k, v in over.items():
        if path + (k,) in odoc.key_locs:
            out.key_locs[path + (k,)] = odoc.key_locs[path + (k,)]
        merged[k] = (
            _merge(base[k], v, path + (k,), bdoc, odoc, out)
            if k in base
            else _merge(None, v, path + (k,), bdoc, odoc, out)
        )
    return merged


def _resolve(path: str, chain: tuple[str, ...]) -> Doc:
    real = os.path.realpath(path)
    if real in chain:
        cycle = " -> ".join(os.path.relpath(p) for p in chain + (real,))
        raise SpecError([Issue(None, f"'extends' makes a cycle: {cycle}; remove one of them")])
    doc = load_file(path)
    if not isinstance(doc.value, dict):
        raise SpecError(
            [
                Issue(
                    doc.locs.get(()),
                    "a config must be a mapping of sections (name:, data:, model:, ...)",
                )
            ]
        )
    ext = doc.value.pop("extends", None)
    if ext is None:
        return doc
    names = [ext] if isinstance(ext, str) else ext
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SpecError(
            [
                Issue(
                    doc.locs.get(("extends",)),
                    "'extends' takes a file name or a list of file names",
                )
            ]
        )
    merged: Doc | None = None
    for i, name in enumerate(names):
        bpath = os.path.join(os.path.dirname(path), name)
        if not os.path.isfile(bpath):
            where = doc.locs.get(("extends",) if isinstance(ext, str) else ("extends", i))
            raise SpecError([Issue(where, f"extends: base config not found: {bpath}")])
        base = _resolve(bpath, chain + (real,))
        merged = base if merged is None else _merged(merged, base)
    assert merged is not None
    return _merged(merged, doc)


def _merged(base: Doc, over: Doc) -> Doc:
    out = Doc(None, {}, {})
    out.value = _merge(base.value, over.value, (), base, over, out)
    return out


# -- --set overrides ---------------------------------------------------------------------------
def apply_override(doc: Doc, text: str) -> None:
    """Set `a.b.0.c=value` in the document; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    origin = f"--set {text}"
    if not sep or not key.strip():
        raise SpecError([Issue(None, f"{origin}: expected KEY=VALUE, e.g. train.epochs=3")])
    value_doc = load_text(raw, origin)
    parts: list[str | int] = []
    cur = doc.value
    segs = key.strip().split(".")
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if isinstance(cur, list):
            if not seg.isdigit() or int(seg) >= len(cur):
                raise SpecError(
                    [
                        Issue(
                            Loc(origin, 1, 1),
                            f"'{seg}' is not an index of the "
                            f"{len(cur)}-item list {path_str(parts)}",
                        )
                    ]
                )
            idx: str | int = int(seg)
        elif isinstance(cur, dict):
            idx = seg
            if not last and seg not in cur:
                cur[seg] = {}
        else:
            raise SpecError(
                [
                    Issue(
                        Loc(origin, 1, 1),
                        f"{path_str(parts)} is a single value, it has no key '{seg}'",
                    )
                ]
            )
        parts.append(idx)
        if last:
            cur[idx] = value_doc.value  # type: ignore[index]
        else:
            if isinstance(cur[idx], str):  # a shorthand (`optimizer: adam`) gets keys
                cur[idx] = {"type": cur[idx]}  # type: ignore[index]
            cur = cur[idx]  # type: ignore[index]
    prefix = tuple(parts)
    for table in (doc.locs, doc.key_locs):
        for p in [p for p in table if p[: len(prefix)] == prefix]:
            del table[p]
    for p in value_doc.locs:
        doc.locs[prefix + p] = Loc(origin, 1, len(key) + 2)
    doc.key_locs[prefix] = Loc(origin, 1, 1)


# -- blocks and repeat -------------------------------------------------------------------------
_PARAM = re.compile(r"^\$\{(\w+)\}$")


def _substitute(value: Any, params: dict[str, Any], issues: list[Issue], where: Loc | None):
    if isinstance(value, str) and (m := _PARAM.match(value)):
        if m.group(1) not in params:
            issues.append(
                Issue(
                    where, f"unknown block parameter '{m.group(1)}'" + suggest(m.group(1), params)
                )
            )
            return value
        return params[m.group(1)]
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
                    if scope and isinstance(layer.get("inputs"), list):
                        layer = dict(
                            layer,
                            inputs=[
                                f"{scope}/{n}"
                                if n in local_names(items)
                                else (
                                    block_input.name() if n == "block_input" and block_input else n
                                )
                                for n in layer["inputs"]
                            ],
                        )
                    emit(dict(layer), src)
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
            args = {k: v for k, v in layer.items() if k not in ("type", "use", "name")}
            for k in args:
                if k not in defaults:
                    issues.append(
                        Issue(
                            doc.locs.get(src + (k,), where),
                            f"block '{use}' has no parameter '{k}'" + suggest(k, defaults),
                        )
                    )
            bparams = {**defaults, **args}
            for _ in range(reps):
                counters[use] = counters.get(use, 0) + 1
                inst = layer.get("name") or f"{use.removeprefix('zoo:')}_{counters[use]}"
                full = inst if scope is None else f"{scope}/{inst}"
                walk(
                    block.get("layers") or [],
                    root + ("blocks", use, "layers"),
                    bparams,
                    full,
                    depth + 1,
                    name_block_input(full),
                )

    def name_block_input(inst: str) -> _BlockInput:
        prev = out_layers[-1] if out_layers and isinstance(out_layers[-1], dict) else None
        return _BlockInput(prev, f"{inst}/input")

    def local_names(items: list[Any]) -> set[str]:
        return {i.get("name") for i in items if isinstance(i, dict) and i.get("name")}

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


# -- shorthands --------------------------------------------------------------------------------
def _typed(doc: Doc, path: Path, value: Any, aliases: dict[str, str], lower: bool) -> Any:
    """'adam' -> {type: adam}; aliases (mse -> mean_squared_error) and case folded."""
    if isinstance(value, str):
        doc.locs.setdefault(path + ("type",), doc.locs.get(path, Loc("?", 1, 1)))
        value = {"type": value}
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        t = value["type"].lower() if lower else value["type"]
        value = dict(value, type=aliases.get(t, t))
    return value


def normalize(doc: Doc) -> None:
    v = doc.value
    if not isinstance(v, dict):
        return
    if "optimizer" in v:
        v["optimizer"] = _typed(doc, ("optimizer",), v["optimizer"], {}, True)
        opt = v["optimizer"]
        if isinstance(opt, dict) and "schedule" in opt:
            opt["schedule"] = _typed(doc, ("optimizer", "schedule"), opt["schedule"], {}, True)
    if "loss" in v:
        v["loss"] = _typed(doc, ("loss",), v["loss"], LOSS_ALIASES, True)
    for key, aliases in (("metrics", METRIC_ALIASES), ("callbacks", {})):
        if isinstance(v.get(key), list):
            v[key] = [_typed(doc, (key, i), m, aliases, True) for i, m in enumerate(v[key])]


# -- validation --------------------------------------------------------------------------------
def _raw_path(loc: tuple, raw: Any) -> tuple[Path, Any]:
    path: list[str | int] = []
    cur = raw
    for part in loc:
        if isinstance(cur, dict) and isinstance(part, str) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        else:
            continue  # a union branch or validator name pydantic put in the location
        path.append(part)
    return tuple(path), cur


def _expected(ctx: dict[str, Any]) -> list[str]:
    return re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ctx.get("expected", ""))))


def _issue(err: dict[str, Any], doc: Doc, cls: type[BaseModel], prefix: Path) -> Issue | None:
    kind, loc, ctx = err["type"], err["loc"], err.get("ctx") or {}
    path, value = _raw_path(loc, doc.value)
    full = prefix + path  # as the user sees it; doc-relative `path` finds positions
    where = doc.locs.get(path)
    if kind == "extra_forbidden":
        key = path[-1]
        parent = path[:-1]
        valid = fields_at(cls, parent, doc.value) or []
        return Issue(
            doc.key_locs.get(path, where),
            f"unknown key '{key}' in "
            f"{describe_kind(cls, parent, doc.value, prefix)}" + suggest(str(key), valid),
        )
    if kind == "missing":
        field = loc[-1]
        return Issue(
            where,
            f"missing required key '{field}' in {describe_kind(cls, path, doc.value, prefix)}",
        )
    if kind == "union_tag_invalid":
        tags = _expected(ctx)
        what = describe_kind(cls, path, doc.value, prefix, noun_only=True)
        return Issue(
            doc.locs.get(path + ("type",), where),
            f"unknown {what} type '{ctx.get('tag')}' in {path_str(full)}"
            + (suggest(str(ctx.get("tag")), tags) or f"; expected one of: {', '.join(tags)}"),
        )
    if kind == "union_tag_not_found":
        return Issue(where, f"{path_str(full)} needs a 'type' key")
    if kind == "literal_error":
        options = _expected(ctx)
        hint = suggest(str(value), options) or f"; expected one of: {', '.join(options)}"
        return Issue(where, f"{path_str(full)}: '{value}' is not a valid choice" + hint)
    if (
        isinstance(value, (dict, list))
        and kind.endswith(("_type", "_parsing"))
        and err["loc"]
        and isinstance(err["loc"][-1], str)
        and err["loc"][-1].startswith("list")
    ):
        return None
    msg = err["msg"]
    if kind.startswith("value_error"):
        msg = msg.removeprefix("Value error, ")
    shown = "" if isinstance(value, (dict, list)) or kind == "value_error" else f", got {value!r}"
    return Issue(where, f"{path_str(full)}: {msg[0].lower() + msg[1:]}{shown}")


def _closest(key: Any, cls: type[BaseModel], doc: Doc, loc: tuple) -> list[str]:
    parent = _raw_path(loc, doc.value)[0][:-1]
    return difflib.get_close_matches(
        str(key), fields_at(cls, parent, doc.value) or [], n=1, cutoff=0.6
    )


def validate(cls: type[BaseModel], doc: Doc, prefix: Path = ()) -> Any:
    """cls.model_validate(doc.value), with errors as SpecError naming file:line:col."""
    try:
        return cls.model_validate(doc.value)
    except ValidationError as e:
        issues: list[Issue] = []
        seen: set[tuple] = set()
        errors = e.errors()
        # a misspelt key also makes its intended key 'missing': report the typo only
        typos = {
            (_raw_path(x["loc"], doc.value)[0][:-1], m)
            for x in errors
            if x["type"] == "extra_forbidden"
            for m in _closest(x["loc"][-1], cls, doc, x["loc"])
        }
        errors = [
            x
            for x in errors
            if not (
                x["type"] == "missing"
                and (_raw_path(x["loc"], doc.value)[0], x["loc"][-1]) in typos
            )
        ]
        for err in errors:
            issue = _issue(err, doc, cls, prefix)
            key = (str(issue.loc), _raw_path(err["loc"], doc.value)[0]) if issue else None
            if issue is not None and key not in seen:
                seen.add(key)
                issues.append(issue)
        issues.sort(key=lambda i: (i.loc.line, i.loc.col) if i.loc else (0, 0))
        raise SpecError(issues) from None


def load_doc(path: str, overrides: Sequence[str] = ()) -> Doc:
    doc = _resolve(path, ())
    for o in overrides:
        apply_override(doc, o)
    expand_layers(doc)
    expand_layers(doc, ("gan", "discriminator"))
    normalize(doc)
    return doc


def load(path: str, overrides: Sequence[str] = ()) -> RunSpec:
    """Load, merge, override, expand and validate a run config."""
    doc = load_doc(path, overrides)
    if isinstance(doc.value, dict):
        doc.value.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    spec = validate(RunSpec, doc)
    spec._source = Source(doc)
    spec.model._source = Source(doc, ("model",))
    if spec.gan is not None:
        spec.gan.discriminator._source = Source(doc, ("gan", "discriminator"))
    _cross_check(spec, Source(doc))
    return spec


def _cross_check(spec: RunSpec, src: Source) -> None:
    """Rules that span sections (each issue at the key to change)."""
    issues: list[Issue] = []
    d, m = spec.data, spec.model
    text = d.train.type == "text"
    texts = ("text", "text_folder")
    for key in ("validation", "test"):
        other = getattr(d, key)
        if (
            other is not None
            and other.type != d.train.type
            and (other.type in texts or d.train.type in texts)
        ):
            issues.append(
                Issue(
                    src.loc(("data", key, "type")),
                    f"data.{key} is '{other.type}' but data.train is '{d.train.type}'; use the "
                    "same kind of source",
                )
            )
    if (spec.task == "gan") != (spec.gan is not None):
        issues.append(
            Issue(
                src.loc(("task",) if spec.gan is None else ("gan",)),
                "task: gan and a `gan` section (the discriminator) go together",
            )
        )
    if spec.task == "gan":
        for bad, key, msg in (
            (spec.loss.type != "binary_crossentropy", ("loss",), "loss: binary_crossentropy"),
            (
                spec.train.gradient_accumulation_steps != 1,
                ("train", "gradient_accumulation_steps"),
                "gradient_accumulation_steps: 1",
            ),
            (
                d.validation is not None or d.validation_split > 0,
                ("data",),
                "no validation data (a GAN has no held-out score to watch)",
            ),
            (text, ("data", "train", "type"), "images or vectors, not text"),
        ):
            if bad:
                issues.append(Issue(src.loc(key), f"task: gan trains with {msg}"))
    if d.train.type in texts:
        if m.input_dtype != "int64" or len(m.input_shape) != 1:
            issues.append(
                Issue(
                    src.loc(("model", "input_shape")),
                    "a text source gives sequences of token ids: set model.input_shape to "
                    "[steps] and model.input_dtype to int64",
                )
            )
    for i, metric in enumerate(spec.metrics):
        ce = ("sparse_categorical_crossentropy", "categorical_crossentropy")
        if metric.type == "perplexity" and spec.loss.type not in ce:
            issues.append(
                Issue(
                    src.loc(("metrics", i)),
                    f"perplexity is exp(cross-entropy); the loss is "
                    f"{spec.loss.type}. Use a cross-entropy loss or drop the metric",
                )
            )
    if d.train.type == "text_folder" and spec.task != "classification":
        issues.append(
            Issue(
                src.loc(("task",)),
                "a text folder's subfolders are classes: task must be classification",
            )
        )
    if text:
        if spec.task != "classification":
            issues.append(
                Issue(
                    src.loc(("task",)),
                    "a text source trains a language model: task must "
                    "be classification (the next token)",
                )
            )
    if issues:
        raise SpecError(issues)


def load_model(path: str, overrides: Sequence[str] = ()) -> ModelSpec:
    """Only the `model` section (for `dltrain summary`)."""
    doc = load_doc(path, overrides)
    if not isinstance(doc.value, dict) or "model" not in doc.value:
        raise SpecError([Issue(doc.locs.get(()), "no 'model' section in this config")])
    sub = Doc(
        doc.value["model"],
        {p[1:]: v for p, v in doc.locs.items() if p[:1] == ("model",)},
        {p[1:]: v for p, v in doc.key_locs.items() if p[:1] == ("model",)},
    )
    model = validate(ModelSpec, sub, ("model",))
    model._source = Source(sub)
    return model
