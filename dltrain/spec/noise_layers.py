"""Regularization layer specs beside Dropout, in Keras's vocabulary: whole-channel dropout
(SpatialDropout1D/2D) and multiplicative or additive Gaussian noise. Each acts in training
only and is the identity at inference and in exports; the run's seed draws the noise."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .layer_base import LayerBase, layer_spec


@layer_spec
class SpatialDropout1DSpec(LayerBase):
    type: Literal["SpatialDropout1D"] = Field(
        description="Drop whole feature channels of (steps, channels) inputs in training."
    )
    rate: float = Field(ge=0, lt=1, description="Fraction of channels to drop, in [0, 1).")


@layer_spec
class SpatialDropout2DSpec(LayerBase):
    type: Literal["SpatialDropout2D"] = Field(
        description="Drop whole feature maps of (height, width, channels) inputs in training."
    )
    rate: float = Field(ge=0, lt=1, description="Fraction of channels to drop, in [0, 1).")


@layer_spec
class GaussianNoiseSpec(LayerBase):
    type: Literal["GaussianNoise"] = Field(description="Add zero-mean Gaussian noise in training.")
    stddev: float = Field(ge=0, description="Standard deviation of the noise.")


@layer_spec
class GaussianDropoutSpec(LayerBase):
    type: Literal["GaussianDropout"] = Field(
        description="Multiply by Gaussian noise of mean 1 and standard deviation "
        "sqrt(rate / (1 - rate)) in training."
    )
    rate: float = Field(ge=0, lt=1, description="Drop probability of the matching Dropout.")
