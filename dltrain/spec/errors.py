"""Config errors: every problem in a file, each with its place and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Issue:
    loc: Any  # yamlpos.Loc or None
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc is not None else self.message


class SpecError(ConfigError):
    """One or more config problems; str() lists them one per line."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def suggest(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest valid names, or ''."""
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    if isinstance(word, str) and word.lower() in by_lower and by_lower[word.lower()] != word:
        return f"; did you mean '{by_lower[word.lower()]}'?"
    close = difflib.get_close_matches(str(word), choices, n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def path_str(path: Sequence[str | int]) -> str:
    """('model', 'layers', 2, 'units') -> 'model.layers[2].units'."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + p
    return out or "the top level"
