"""What every layer spec shares: the base class, argument types, and the registry that
builds the discriminated union on `type` (each spec class is registered once, where it is
defined)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field

from .limits import MAX_REPEAT

ACTIVATION_NAMES = (
    "linear",
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "sigmoid",
    "tanh",
    "silu",
    "swish",
    "softplus",
    "softmax",
    "log_softmax",
)
INITIALIZER_NAMES = (
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "uniform",
    "random_normal",
    "random_uniform",
    "orthogonal",
    "zeros",
    "ones",
)

Activation = Literal[ACTIVATION_NAMES]  # type: ignore[valid-type]
Initializer = Literal[INITIALIZER_NAMES]  # type: ignore[valid-type]
PosInt = Annotated[int, Field(gt=0)]
IntOrPair = Union[PosInt, Annotated[list[PosInt], Field(min_length=2, max_length=2)]]
IntOrSingle = Union[PosInt, Annotated[list[PosInt], Field(min_length=1, max_length=1)]]
Padding = Literal["valid", "same"]


class LayerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None,
        description="Layer name, unique in the model; others can "
        "name it in `inputs`. Default: as Keras 3 names it: dense, dense_1, ...",
    )
    inputs: list[str] | None = Field(
        None,
        description="Names of the layers (or 'input') "
        "feeding this one. Default: the previous layer.",
    )
    trainable: bool = Field(True, description="false freezes the layer's weights.")
    repeat: PosInt = Field(
        1, le=MAX_REPEAT, description="Repeat this layer N times (expanded on load)."
    )

    if TYPE_CHECKING:  # every concrete spec class has its `type` literal
        type: str


class _Kernel(LayerBase):
    activation: Activation | None = Field(
        None, description="Activation applied after the layer (Keras name); none means linear."
    )
    use_bias: bool = Field(True, description="Whether the layer adds a bias vector.")
    kernel_initializer: Initializer = Field(
        "glorot_uniform", description="Initializer of the kernel weights."
    )
    bias_initializer: Initializer = Field("zeros", description="Initializer of the bias.")


# every layer spec class, in definition order; `layers.LayerSpec` is their union on `type`
LAYER_SPECS: list[type[LayerBase]] = []


_S = TypeVar("_S", bound=type[LayerBase])


def layer_spec(cls: _S) -> _S:
    """Register a layer spec class (its `type` literal is the YAML name)."""
    LAYER_SPECS.append(cls)
    return cls


def type_name(cls: type[LayerBase]) -> str:
    """The `type` literal of a spec class, e.g. 'Dense'."""
    return cls.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
