"""Safe YAML with positions: every key and value keeps its file, line and column.

Only YAML's plain data tags are accepted; a `!!python/...` or any other tag is an error and
nothing is constructed from it. Duplicate keys and multi-document files are errors.
Floats written the way people write them (`1e-4`, YAML 1.1 wants `1.0e-4`) are floats.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import Issue, SpecError
from .limits import MAX_CONFIG_BYTES, MAX_YAML_ALIASES, MAX_YAML_DEPTH, MAX_YAML_VALUES

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Loc:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-4 and 3E+2 as floats."""


_Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

_PLAIN = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_PLAIN + t for t in ("str", "int", "float", "bool", "null")}


@dataclass
class Doc:
    """A loaded document: plain Python data plus the position of every path in it."""

    value: Any
    locs: dict[Path, Loc]
    key_locs: dict[Path, Loc]
    budget: int = MAX_YAML_VALUES  # values left to build (aliases expand as they are used)


def _check_shape(text: str, file: str) -> None:
    """Nesting depth and alias uses, from the event stream (no recursion, nothing built)."""
    depth, aliases = 0, 0
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise _error(
                        file,
                        ev.start_mark,
                        f"nested more than {MAX_YAML_DEPTH} levels deep; a config is a few "
                        "levels of mappings and lists",
                    )
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(ev, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_YAML_ALIASES:
                    raise _error(
                        file,
                        ev.start_mark,
                        f"more than {MAX_YAML_ALIASES} uses of YAML aliases (*name); write the "
                        "values out or use blocks",
                    )
    except yaml.YAMLError:
        return  # the composer below reports syntax errors with their position


def load_text(text: str, file: str) -> Doc:
    """Parse YAML text; raise SpecError with the position of any problem."""
    _check_shape(text, file)
    loader = None
    try:
        loader = _Loader(text)  # (its reader refuses control characters right here)
        node = loader.get_single_node()
    except yaml.composer.ComposerError as e:
        mark = e.problem_mark
        raise SpecError(
            [
                Issue(
                    _loc(file, mark),
                    "a config holds one YAML document; found a second '---' document here",
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = (e.problem or "invalid YAML").strip()
        raise SpecError([Issue(_loc(file, mark), f"YAML syntax error: {what}")]) from None
    except yaml.reader.ReaderError as e:  # a control character YAML does not allow
        raise SpecError(
            [
                Issue(
                    Loc(file, 1, 1),
                    f"character {e.character!r} at offset {e.position} is "
                    "not allowed in YAML; remove it",
                )
            ]
        ) from None
    except yaml.YAMLError as e:
        raise SpecError([Issue(Loc(file, 1, 1), f"YAML error: {e}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return Doc({}, {(): Loc(file, 1, 1)}, {})
    doc = Doc(None, {}, {})
    issues: list[Issue] = []
    doc.budget = MAX_YAML_VALUES
    doc.value = _convert(node, (), file, doc, issues, _Loader(""))
    if issues:
        raise SpecError(issues)
    return doc


def _error(file: str, mark: Any, text: str) -> SpecError:
    return SpecError([Issue(_loc(file, mark), text)])


def _loc(file: str, mark: Any) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1) if mark else Loc(file, 1, 1)


def _convert(
    node: yaml.Node, path: Path, file: str, doc: Doc, issues: list[Issue], ctor: yaml.SafeLoader
) -> Any:
    doc.locs[path] = _loc(file, node.start_mark)
    doc.budget -= 1
    if doc.budget < 0:
        raise _error(
            file,
            node.start_mark,
            f"the document expands to more than {MAX_YAML_VALUES:,} values (YAML aliases "
            "repeat everything they point at); a config is far smaller",
        )
    if isinstance(node, yaml.MappingNode):
        if node.tag != _PLAIN + "map":
            return _bad_tag(node, path, file, issues)
        out: dict[str, Any] = {}
        for k_node, v_node in node.value:
            if k_node.tag == _PLAIN + "merge":
                issues.append(
                    Issue(
                        _loc(file, k_node.start_mark),
                        "YAML merge keys ('<<') are not supported; use 'extends:'",
                    )
                )
                continue
            key = _convert(k_node, path + ("<key>",), file, doc, issues, ctor)
            doc.locs.pop(path + ("<key>",), None)
            if not isinstance(key, str):
                issues.append(
                    Issue(_loc(file, k_node.start_mark), f"keys must be names (text), got {key!r}")
                )
                continue
            if key in out:
                first = doc.key_locs[path + (key,)]
                issues.append(
                    Issue(
                        _loc(file, k_node.start_mark),
                        f"duplicate key '{key}' (first given at line {first.line}); "
                        "keep one of them",
                    )
                )
                continue
            doc.key_locs[path + (key,)] = _loc(file, k_node.start_mark)
            out[key] = _convert(v_node, path + (key,), file, doc, issues, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _PLAIN + "seq":
            return _bad_tag(node, path, file, issues)
        return [_convert(v, path + (i,), file, doc, issues, ctor) for i, v in enumerate(node.value)]
    if node.tag not in _SCALAR_TAGS:
        return _bad_tag(node, path, file, issues)
    return ctor.construct_object(node, deep=True)


def _bad_tag(node: yaml.Node, path: Path, file: str, issues: list[Issue]) -> None:
    tag = node.tag.replace(_PLAIN, "!!")
    issues.append(
        Issue(
            _loc(file, node.start_mark),
            f"YAML tag '{tag}' is not allowed: configs hold plain data only "
            "(text, numbers, booleans, lists, mappings); nothing is executed",
        )
    )
    return None


def load_file(path: str) -> Doc:
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise SpecError([Issue(None, f"{path} is not a regular file (a pipe, device?)")])
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise SpecError(
                [
                    Issue(
                        None,
                        f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; a config is "
                        "a few KiB (data belongs in data files)",
                    )
                ]
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SpecError([Issue(None, f"config file not found: {path}")]) from None
    except IsADirectoryError:
        raise SpecError([Issue(None, f"{path} is a directory, not a config file")]) from None
    except UnicodeDecodeError as e:
        raise SpecError(
            [Issue(None, f"{path} is not UTF-8 text ({e.reason} at byte {e.start})")]
        ) from None
    except OSError as e:
        raise SpecError([Issue(None, f"cannot read config {path}: {e.strerror}")]) from None
    return load_text(text, path)
