"""The search space of `dltrain tune` against its config: every range's ends and every
choice must make a valid config and model (checked before anything is written), the Optuna
distribution of each key, the config's own values as the baseline trial, and the `--set`
text of a sampled value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from ..errors import ConfigError
from ..spec import RunSpec, load
from ..spec.errors import Issue, SpecError, suggest
from ..spec.tune import ParamSpec, SpaceSpec
from ..spec.yamlpos import Doc


def setting(key: str, value: Any) -> str:
    """A `--set` argument whose value reads back as the same YAML scalar."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def logged_names(spec: RunSpec) -> list[str]:
    """The epoch logs a run of `spec` writes (the metrics a study can optimise)."""
    names = ["loss"]
    for m in spec.metrics:
        names.append(f"top_{m.k}_accuracy" if m.type == "top_k_accuracy" else m.type)
    d = spec.data
    if d.validation is not None or d.validation_split > 0:
        names += [f"val_{n}" for n in names]
    return names


def check_space(config: str, sets: Sequence[str], space: SpaceSpec, sdoc: Doc) -> RunSpec:
    """Every range's ends and every choice must make a valid config and model; the metric
    must be one the run logs. SpecError at the space file's line otherwise."""
    from ..engine.checks import check_run

    spec = load(config, sets)
    issues: list[Issue] = []
    if space.metric not in logged_names(spec):
        names = logged_names(spec)
        hint = suggest(space.metric, names) or f"; this run logs {', '.join(names)}"
        if space.metric.startswith("val_") and not any(n.startswith("val_") for n in names):
            hint = "; the config has no validation data (set data.validation_split)"
        issues.append(Issue(sdoc.locs.get(("metric",)), f"metric '{space.metric}'{hint}"))
    for key, p in space.params.items():
        where = sdoc.key_locs.get(("params", key), sdoc.locs.get(("params", key)))
        for v in p.extremes():
            try:
                trial_spec = load(config, [*sets, setting(key, v)])
                check_run(trial_spec, meta=True)
            except SpecError as e:
                why = "; ".join(i.message for i in e.issues)
                issues.append(Issue(where, f"{key} = {v!r} does not make a valid config: {why}"))
                break
            except ConfigError as e:
                issues.append(Issue(where, f"{key} = {v!r} does not make a valid model: {e}"))
                break
    if issues:
        raise SpecError(issues)
    return spec


def distribution(p: ParamSpec) -> Any:
    import optuna.distributions as d

    if p.kind == "loguniform":
        lo, hi = p.loguniform  # type: ignore[misc]
        return d.FloatDistribution(lo, hi, log=True)
    if p.kind == "uniform":
        lo, hi = p.uniform  # type: ignore[misc]
        return d.FloatDistribution(lo, hi, step=p.step)
    if p.kind == "int":
        lo, hi = p.int_  # type: ignore[misc]
        return d.IntDistribution(lo, hi, log=p.log, step=int(p.step or 1))
    return d.CategoricalDistribution(p.choice)  # type: ignore[arg-type]


def own_values(spec: RunSpec, space: SpaceSpec) -> dict[str, Any] | None:
    """The config's own values of the searched keys (defaults included), when every one
    lies in the space."""
    from ..spec.loader import key_segments

    doc = spec.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key, p in space.params.items():
        cur: Any = doc
        for seg in key_segments(key, key):
            if isinstance(cur, list) and seg.isdigit() and int(seg) < len(cur):
                cur = cur[int(seg)]
            elif isinstance(cur, dict) and seg in cur:
                cur = cur[seg]
            else:
                return None
        dist = distribution(p)
        try:
            if not dist._contains(dist.to_internal_repr(cur)):
                return None
        except (ValueError, TypeError):
            return None
        out[key] = cur
    return out
