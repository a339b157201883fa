"""Config loading and validation. Imports pydantic and yaml only (no torch), so
`dltrain validate` and `dltrain schema` answer fast."""

from .errors import Issue, SpecError
from .layers import ACTIVATION_NAMES, INITIALIZER_NAMES, LAYER_TYPES
from .loader import Source, load, load_model
from .schema import ModelSpec, RunSpec


def json_schema() -> dict:
    """JSON Schema of a config file, for editors (yaml-language-server) and checks."""
    schema = RunSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dltrain config"
    return schema


__all__ = ["ACTIVATION_NAMES", "INITIALIZER_NAMES", "Issue", "LAYER_TYPES", "ModelSpec",
           "RunSpec", "Source", "SpecError", "json_schema", "load", "load_model"]
