"""From a config path to a validated RunSpec: extends, --set overrides, blocks (blocks.py),
shorthands, validation, rules across sections (rules.py), and every error mapped back to its
file:line:col."""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from .blocks import expand_layers, zoo_blocks  # noqa: F401  (zoo_blocks: re-exported)
from .errors import Issue, SpecError, path_str, suggest
from .fields import describe_kind, fields_at
from .layer_base import LAYER_SPECS, type_name
from .rules import cross_check
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
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")


def key_segments(key: str, origin: str) -> list[str]:
    """'model.layers[1].units' (or 'model.layers.1.units') -> ['model', 'layers', '1', 'units']."""
    segs: list[str] = []
    for part in key.split("."):
        m = _SEGMENT.fullmatch(part)
        if m is None:
            raise SpecError(
                [
                    Issue(
                        Loc(origin, 1, 1),
                        f"'{key}' is not a key path; write it like model.layers[1].units",
                    )
                ]
            )
        segs.append(m.group(1))
        segs += re.findall(r"\[(\d+)\]", m.group(2))
    return segs


def apply_override(doc: Doc, text: str) -> None:
    """Set `a.b.0.c=value` in the document; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    origin = f"--set {text}"
    if not sep or not key.strip():
        raise SpecError([Issue(None, f"{origin}: expected KEY=VALUE, e.g. train.epochs=3")])
    value_doc = load_text(raw, origin)
    parts: list[str | int] = []
    cur = doc.value
    segs = key_segments(key.strip(), origin)
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
            if not last and seg not in cur:  # a new key: errors about it point at the --set
                cur[seg] = {}
                doc.locs[tuple(parts) + (seg,)] = Loc(origin, 1, 1)
                doc.key_locs[tuple(parts) + (seg,)] = Loc(origin, 1, 1)
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
            here = tuple(parts)
            if isinstance(cur[idx], str) and _takes_shorthand(here):  # `optimizer: adam`
                cur[idx] = {"type": cur[idx]}  # type: ignore[index]
            elif not isinstance(cur[idx], (dict, list)):  # type: ignore[index]
                raise SpecError(
                    [
                        Issue(
                            Loc(origin, 1, 1),
                            f"{path_str(parts)} is a single value, it has no key '{segs[i + 1]}'",
                        )
                    ]
                )
            cur = cur[idx]  # type: ignore[index]
    prefix = tuple(parts)
    for table in (doc.locs, doc.key_locs):
        for p in [p for p in table if p[: len(prefix)] == prefix]:
            del table[p]
    for p in value_doc.locs:
        doc.locs[prefix + p] = Loc(origin, 1, len(key) + 2)
    doc.key_locs[prefix] = Loc(origin, 1, 1)


# -- shorthands --------------------------------------------------------------------------------
def _takes_shorthand(path: Path) -> bool:
    """Keys whose value may be a bare type name (`optimizer: adam`, `loss: mse`, ...)."""
    return path in (("optimizer",), ("loss",), ("optimizer", "schedule")) or (
        len(path) == 2 and path[0] in ("metrics", "callbacks") and isinstance(path[1], int)
    )


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
    for root in (("model",), ("gan", "discriminator")):
        _first_layer_input(doc, root)


_SPEC_FIELDS = {type_name(c): set(c.model_fields) for c in LAYER_SPECS}


def _first_layer_input(doc: Doc, root: Path) -> None:
    """Keras 2/3 Sequential style: `input_dim: 100` or `input_shape: [28, 28, 1]` on the
    first layer is the model's input_shape."""
    model: Any = doc.value
    for key in root:
        model = model.get(key) if isinstance(model, dict) else None
    layers = model.get("layers") if isinstance(model, dict) else None
    if not isinstance(layers, list):
        return
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            continue
        own = _SPEC_FIELDS.get(str(layer.get("type")), set())
        for key in ("input_dim", "input_shape"):
            if key not in layer or key in own:  # Embedding's input_dim is its own argument
                continue
            where = doc.key_locs.get(root + ("layers", i, key))
            if i > 0:
                raise SpecError(
                    [Issue(where, f"{key} belongs on the first layer (or model.input_shape)")]
                )
            value = layer.pop(key)
            shape = [value] if key == "input_dim" else value
            if "input_shape" in model and model["input_shape"] != shape:
                raise SpecError(
                    [
                        Issue(
                            where,
                            f"{key}: {value} disagrees with model.input_shape "
                            f"{model['input_shape']}; keep one of them",
                        )
                    ]
                )
            model["input_shape"] = shape
            if where is not None:
                doc.locs[root + ("input_shape",)] = where


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
            issue = _issue(dict(err), doc, cls, prefix)
            key = (str(issue.loc), _raw_path(err["loc"], doc.value)[0]) if issue else None
            if issue is not None and key is not None and key not in seen:
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
    cross_check(spec, Source(doc))
    return spec


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
