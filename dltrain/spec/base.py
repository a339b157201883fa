"""The base of every spec section."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _source: Any = PrivateAttr(None)  # loader.Source: positions for errors found later
