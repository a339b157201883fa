"""Config loading and validation. Imports pydantic and yaml only (no torch), so
`dltrain validate` and `dltrain schema` answer fast."""

from .errors import Issue, SpecError
from .layers import ACTIVATION_NAMES, INITIALIZER_NAMES, LAYER_TYPES
from .loader import Source, load, load_model
from .schema import ModelSpec, RunSpec


def _with_shorthand(node: dict, aliases: dict[str, str]) -> dict:
    """Accept `name` as well as `{type: name, ...}` (the Keras shorthand)."""
    names = sorted(node.get("discriminator", {}).get("mapping", {}))
    names += sorted(a for a, target in aliases.items() if target in names)
    desc = node.pop("description", None)
    out = {"anyOf": [node, {"type": "string", "enum": names}]}
    if desc:
        out["description"] = desc
    return out


def json_schema() -> dict:
    """JSON Schema of a config file, for editors (yaml-language-server) and checks."""
    from .schema import LOSS_ALIASES, METRIC_ALIASES

    schema = RunSpec.model_json_schema()
    props = schema["properties"]
    props["loss"] = _with_shorthand(props["loss"], LOSS_ALIASES)
    props["optimizer"] = _with_shorthand(props["optimizer"], {})
    for key, aliases in (("metrics", METRIC_ALIASES), ("callbacks", {})):
        props[key]["items"] = _with_shorthand(props[key]["items"], aliases)
    for opt in ("SGDSpec", "AdamSpec", "AdamWSpec", "RMSpropSpec", "AdagradSpec"):
        sched = schema["$defs"][opt]["properties"]["schedule"]
        sched["anyOf"] = [
            _with_shorthand(a, {}) if "discriminator" in a else a for a in sched["anyOf"]
        ]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dltrain config"
    return schema


__all__ = [
    "ACTIVATION_NAMES",
    "INITIALIZER_NAMES",
    "Issue",
    "LAYER_TYPES",
    "ModelSpec",
    "RunSpec",
    "Source",
    "SpecError",
    "json_schema",
    "load",
    "load_model",
]
