"""Walk the schema's types along a raw document: which model sits at a path, its keys."""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel

from .errors import path_str


def _concrete(tp: Any, raw: Any) -> Any:
    """Strip Annotated/Optional; pick the union member matching raw's `type` (or shape)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if isinstance(raw, dict) and models:
                tag = raw.get("type")
                for m in models:
                    ann = m.model_fields.get("type")
                    if ann is not None and tag in typing.get_args(ann.annotation):
                        return m
                if len(models) == 1:
                    return models[0]
                return None
            containers = [m for m in members if typing.get_origin(m) in (list, dict)]
            if isinstance(raw, (list, dict)) and containers:
                tp = containers[0]
                continue
            tp = members[0] if len(members) == 1 else None
            if tp is None:
                return None
            continue
        return tp


def type_at(cls: type[BaseModel], path: tuple, raw: Any) -> Any:
    tp: Any = cls
    cur = raw
    for part in path:
        tp = _concrete(tp, cur)
        if tp is None:
            return None
        origin = typing.get_origin(tp)
        if isinstance(part, int) and origin is list:
            tp = typing.get_args(tp)[0]
        elif isinstance(part, str) and origin is dict:
            tp = typing.get_args(tp)[1]
        elif isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        else:
            return None
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            cur = None
    return _concrete(tp, cur)


def fields_at(cls: type[BaseModel], path: tuple, raw: Any) -> list[str] | None:
    tp = type_at(cls, path, raw)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return None


_NOUNS = {
    "layers": "layer",
    "optimizer": "optimizer",
    "loss": "loss",
    "metrics": "metric",
    "callbacks": "callback",
    "schedule": "schedule",
    "train": "data source",
    "validation": "data source",
    "test": "data source",
}


def describe_kind(
    cls: type[BaseModel], path: tuple, raw: Any, prefix: tuple = (), noun_only: bool = False
) -> str:
    """'model.layers[2] (Dense)' / 'the top level'; with noun_only, 'layer' / 'optimizer'."""
    full = prefix + tuple(path)
    if noun_only:
        for p in reversed(full):
            if isinstance(p, str):
                return _NOUNS.get(p, p)
        return "value"
    cur = raw
    for part in path:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            cur = None
            break
    tag = f" ({cur['type']})" if isinstance(cur, dict) and isinstance(cur.get("type"), str) else ""
    return path_str(full) + tag
