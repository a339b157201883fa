"""The search space of `dltrain tune`: its own YAML file, validated like a config (every
mistake at its file:line:col). Keys address config keys exactly as `--set` does."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt, model_validator

from .base import Spec
from .errors import Issue, SpecError
from .layer_base import PosInt
from .yamlpos import Doc, load_file

KINDS = ("loguniform", "uniform", "int", "choice")
Choice = Union[StrictBool, StrictInt, StrictFloat, str]


class ParamSpec(Spec):
    """One searched key: exactly one of loguniform, uniform, int or choice."""

    loguniform: tuple[float, float] | None = Field(
        None, description="[low, high], sampled on a log scale (low > 0)."
    )
    uniform: tuple[float, float] | None = Field(None, description="[low, high], uniformly.")
    int_: tuple[int, int] | None = Field(
        None, alias="int", description="[low, high], integers, both ends included."
    )
    choice: Annotated[list[Choice], Field(min_length=1)] | None = Field(
        None, description="One of these values."
    )
    step: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Grid step of an int or uniform range (an integer for int)."
    )
    log: bool = Field(False, description="Sample an int range on a log scale.")

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        given = [k for k in KINDS if self.bounds_of(k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of loguniform, uniform, int or choice"
                + (f" (found {', '.join(given)})" if given else "")
            )
        kind = given[0]
        rng = self.bounds_of(kind)
        if kind != "choice":
            lo, hi = rng  # type: ignore[misc]
            if lo > hi or (lo == hi and kind != "int"):
                raise ValueError(f"{kind}: low {lo} must be below high {hi}")
            if kind == "loguniform" and lo <= 0:
                raise ValueError(f"loguniform: low must be above 0, got {lo}")
            if self.log and lo < 1:
                raise ValueError(f"int with log: true needs low >= 1, got {lo}")
        if self.step is not None:
            if kind not in ("int", "uniform"):
                raise ValueError(f"step applies to int and uniform ranges, not {kind}")
            if kind == "int" and self.step != int(self.step):
                raise ValueError(f"step of an int range must be an integer, got {self.step}")
            if self.log:
                raise ValueError("an int range takes step or log: true, not both")
        if self.log and kind != "int":
            raise ValueError("log: true applies to int ranges (use loguniform for floats)")
        return self

    def bounds_of(self, kind: str) -> Any:
        return {
            "loguniform": self.loguniform,
            "uniform": self.uniform,
            "int": self.int_,
            "choice": self.choice,
        }[kind]

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if self.bounds_of(k) is not None)

    def extremes(self) -> list[Any]:
        """The values that must each make a valid config: both ends and, for a float range
        without a grid, a fractional value between them (a float range on an integer key
        fails there); or every choice."""
        if self.kind == "choice":
            return list(self.choice or [])
        lo, hi = self.bounds_of(self.kind)
        out = [lo, hi] if lo != hi else [lo]
        if self.kind in ("uniform", "loguniform") and self.step is None:
            mid = lo + (hi - lo) * 0.381966  # (3 - sqrt 5) / 2: rarely a whole number
            out.append(mid if mid != int(mid) else mid + (hi - mid) / 7)
        return out


class SamplerSpec(Spec):
    type: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler.")
    seed: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Sampler seed (default: the config's seed)."
    )
    n_startup_trials: Annotated[int, Field(ge=0)] = Field(
        5, description="TPE: random trials before the model of good values takes over."
    )


class PrunerSpec(Spec):
    type: Literal["median", "hyperband", "none"] = Field(
        "median", description="Stop unpromising trials at an epoch boundary."
    )
    n_startup_trials: Annotated[int, Field(ge=0)] = Field(
        5, description="median: trials that run to the end before any is pruned."
    )
    n_warmup_steps: Annotated[int, Field(ge=0)] = Field(
        0, description="median: epochs of a trial before it may be pruned."
    )
    min_resource: PosInt = Field(1, description="hyperband: epochs every trial runs.")
    reduction_factor: Annotated[int, Field(ge=2)] = Field(
        3, description="hyperband: the fraction (1/n) of trials kept at each rung."
    )


class SpaceSpec(Spec):
    """A `dltrain tune --space` file."""

    metric: str = Field(
        "val_loss", description="The logged metric to optimise (any epoch log: val_accuracy...)."
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: maximize accuracy/precision/recall/f1, minimize the rest."
    )
    trials: PosInt | None = Field(
        None, description="Trials to finish (complete, pruned or diverged); --trials overrides."
    )
    timeout: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Seconds after which no new trial starts; --timeout overrides."
    )
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)  # type: ignore[arg-type]
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)  # type: ignore[arg-type]
    baseline: bool = Field(
        True, description="Run the config's own values first, where they lie in the space."
    )
    study_name: str | None = Field(None, description="Default: the config's name.")
    params: Annotated[dict[str, ParamSpec], Field(min_length=1)] = Field(
        description="Config key (as --set writes it, e.g. model.layers[0].units) -> range."
    )


def load_space(path: str) -> tuple[SpaceSpec, Doc]:
    """Parse and validate a space file; SpecError with file:line:col on any problem."""
    from .loader import validate

    doc = load_file(path)
    if not isinstance(doc.value, dict):
        raise SpecError([Issue(doc.locs.get(()), "a search space is a mapping with `params`")])
    space = validate(SpaceSpec, doc)
    return space, doc
