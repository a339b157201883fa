"""Layer specs in Keras's vocabulary: class names as `type`, Keras argument names/defaults.

The sequence layers' specs are in `seq_layers`; both register with `layer_spec`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import ConfigDict, Field, model_validator

from . import (  # noqa: F401  (register the sequence, audio and noise specs)
    audio_layers,
    noise_layers,
    seq_layers,
)
from .layer_base import (
    ACTIVATION_NAMES,
    INITIALIZER_NAMES,
    LAYER_SPECS,
    Activation,
    Initializer,
    IntOrPair,
    IntOrSingle,
    LayerBase,
    Padding,
    PosInt,
    _Kernel,
    layer_spec,
    type_name,
)

__all__ = ["ACTIVATION_NAMES", "INITIALIZER_NAMES", "LAYER_SPECS", "LAYER_TYPES", "LayerSpec"]


@layer_spec
class DenseSpec(_Kernel):
    type: Literal["Dense"] = Field(description="Fully connected layer.")
    units: PosInt = Field(description="Number of output units.")


class _Conv(_Kernel):
    filters: PosInt = Field(description="Number of output channels.")
    padding: Padding = Field(
        "valid", description="'valid' (no padding) or 'same' (output size = ceil(input / strides))."
    )


@layer_spec
class Conv1DSpec(_Conv):
    type: Literal["Conv1D"] = Field(description="1-D convolution over (steps, channels).")
    padding: Literal["valid", "same", "causal"] = Field(  # type: ignore[assignment]
        "valid",
        description="'valid', 'same', or 'causal' (zeros before the sequence: step t sees "
        "only steps up to t, as in WaveNet).",
    )
    kernel_size: IntOrSingle = Field(description="Length of the convolution window.")
    strides: IntOrSingle = Field(1, description="Stride of the window.")
    dilation_rate: IntOrSingle = Field(1, description="Dilation of the window.")


@layer_spec
class Conv2DSpec(_Conv):
    type: Literal["Conv2D"] = Field(description="2-D convolution over (height, width, channels).")
    kernel_size: IntOrPair = Field(description="Window size: one number or [height, width].")
    strides: IntOrPair = Field(1, description="Stride: one number or [height, width].")
    dilation_rate: IntOrPair = Field(1, description="Dilation: one number or [height, width].")
    groups: PosInt = Field(
        1, description="Channel groups; input channels and filters must both divide by it."
    )


@layer_spec
class Conv2DTransposeSpec(_Conv):
    type: Literal["Conv2DTranspose"] = Field(
        description="Transposed 2-D convolution (upsampling by strides)."
    )
    kernel_size: IntOrPair = Field(description="Window size: one number or [height, width].")
    strides: IntOrPair = Field(1, description="Upsampling stride: one number or [h, w].")
    output_padding: Union[Annotated[int, Field(ge=0)], list[Annotated[int, Field(ge=0)]], None] = (
        Field(
            None,
            description="Extra rows/columns on the output; "
            "must be smaller than strides. Default: inferred.",
        )
    )


class _Depthwise(LayerBase):
    kernel_size: IntOrPair = Field(description="Window size: one number or [height, width].")
    strides: IntOrPair = Field(1, description="Stride: one number or [height, width].")
    padding: Padding = Field(
        "valid", description="'valid' (no padding) or 'same' (output size = ceil(input / strides))."
    )
    dilation_rate: IntOrPair = Field(1, description="Dilation: one number or [height, width].")
    depth_multiplier: PosInt = Field(
        1, description="Output channels of the depthwise step per input channel."
    )
    activation: Activation | None = Field(
        None, description="Activation applied after the layer (Keras name); none means linear."
    )
    use_bias: bool = Field(True, description="Whether the layer adds a bias vector.")
    depthwise_initializer: Initializer = Field(
        "glorot_uniform", description="Initializer of the depthwise kernel."
    )
    bias_initializer: Initializer = Field("zeros", description="Initializer of the bias.")


@layer_spec
class DepthwiseConv2DSpec(_Depthwise):
    type: Literal["DepthwiseConv2D"] = Field(
        description="Each input channel convolved with its own depth_multiplier filters "
        "(MobileNet's depthwise step); output channels: channels x depth_multiplier."
    )


@layer_spec
class SeparableConv2DSpec(_Depthwise):
    type: Literal["SeparableConv2D"] = Field(
        description="A depthwise convolution (no bias) followed by a 1x1 convolution to "
        "`filters` channels (Xception's separable convolution)."
    )
    filters: PosInt = Field(description="Number of output channels.")
    pointwise_initializer: Initializer = Field(
        "glorot_uniform", description="Initializer of the 1x1 (pointwise) kernel."
    )


class _Pool(LayerBase):
    pool_size: IntOrPair = Field(2, description="Window size: one number or [height, width].")
    strides: IntOrPair | None = Field(None, description="Stride; default: pool_size.")
    padding: Padding = Field("valid", description="'valid' or 'same'.")


class _Pool1D(LayerBase):
    pool_size: IntOrSingle = Field(2, description="Window length.")
    strides: IntOrSingle | None = Field(None, description="Stride; default: pool_size.")
    padding: Padding = Field("valid", description="'valid' or 'same'.")


@layer_spec
class MaxPooling1DSpec(_Pool1D):
    type: Literal["MaxPooling1D"] = Field(description="Max over each window of steps.")


@layer_spec
class AveragePooling1DSpec(_Pool1D):
    type: Literal["AveragePooling1D"] = Field(description="Mean over each window of steps.")


@layer_spec
class MaskingSpec(LayerBase):
    type: Literal["Masking"] = Field(
        description="Steps whose features all equal mask_value are skipped by later layers "
        "(and zeroed), as in Keras."
    )
    mask_value: float = Field(0.0, description="The padding value.")


@layer_spec
class MaxPooling2DSpec(_Pool):
    type: Literal["MaxPooling2D"] = Field(description="Max over each window.")


@layer_spec
class AveragePooling2DSpec(_Pool):
    type: Literal["AveragePooling2D"] = Field(description="Mean over each window.")


@layer_spec
class GlobalAveragePooling2DSpec(LayerBase):
    type: Literal["GlobalAveragePooling2D"] = Field(description="Mean over height and width.")
    keepdims: bool = Field(False, description="Keep the spatial dims as size 1.")


@layer_spec
class GlobalMaxPooling2DSpec(LayerBase):
    type: Literal["GlobalMaxPooling2D"] = Field(description="Maximum over height and width.")
    keepdims: bool = Field(False, description="Keep the spatial dims as size 1.")


@layer_spec
class BatchNormalizationSpec(LayerBase):
    type: Literal["BatchNormalization"] = Field(
        description="Normalise each channel over the batch; running statistics for inference."
    )
    axis: Literal[-1] = Field(-1, description="Channel axis; only the last (channels-last).")
    momentum: float = Field(
        0.99,
        ge=0,
        lt=1,
        description="Keras momentum of the running "
        "statistics: new = momentum * old + (1 - momentum) * batch.",
    )
    epsilon: float = Field(1e-3, gt=0, description="Added to the variance.")
    center: bool = Field(True, description="Learn an offset (beta).")
    scale: bool = Field(True, description="Learn a scale (gamma).")


@layer_spec
class LayerNormalizationSpec(LayerBase):
    type: Literal["LayerNormalization"] = Field(
        description="Normalise each sample over its last axis."
    )
    axis: Literal[-1] = Field(-1, description="Normalised axis; only the last.")
    epsilon: float = Field(1e-3, gt=0, description="Added to the variance.")
    center: bool = Field(True, description="Learn an offset (beta).")
    scale: bool = Field(True, description="Learn a scale (gamma).")


@layer_spec
class GroupNormalizationSpec(LayerBase):
    type: Literal["GroupNormalization"] = Field(
        description="Normalise each sample over groups of channels (and every other axis); "
        "groups: -1 is instance normalization, 1 normalises over all channels."
    )
    groups: int = Field(32, description="Channel groups (must divide the channels); -1: one each.")
    axis: Literal[-1] = Field(-1, description="Channel axis; only the last (channels-last).")
    epsilon: float = Field(1e-3, gt=0, description="Added to the variance.")
    center: bool = Field(True, description="Learn an offset (beta).")
    scale: bool = Field(True, description="Learn a scale (gamma).")

    @model_validator(mode="after")
    def _groups(self) -> GroupNormalizationSpec:
        if self.groups == 0 or self.groups < -1:
            raise ValueError("groups must be a positive number of groups, or -1 (one per channel)")
        return self


@layer_spec
class DropoutSpec(LayerBase):
    type: Literal["Dropout"] = Field(description="Randomly zero inputs during training.")
    rate: float = Field(ge=0, lt=1, description="Fraction of inputs to drop, in [0, 1).")


@layer_spec
class FlattenSpec(LayerBase):
    type: Literal["Flatten"] = Field(description="Flatten all but the batch dim.")


@layer_spec
class RepeatVectorSpec(LayerBase):
    type: Literal["RepeatVector"] = Field(
        description="Repeat a (features,) input n times: (n, features), e.g. to feed a "
        "decoder RNN one vector per step."
    )
    n: PosInt = Field(description="How many times to repeat the input (the output's steps).")


@layer_spec
class ReshapeSpec(LayerBase):
    type: Literal["Reshape"] = Field(description="Reshape each sample (batch dim excluded).")
    target_shape: list[int] = Field(
        min_length=1, description="New shape, channels-last; one entry may be -1."
    )


@layer_spec
class ActivationSpec(LayerBase):
    type: Literal["Activation"] = Field(description="Apply an activation function.")
    activation: Activation = Field(description="Activation name (Keras).")


@layer_spec
class ReLUSpec(LayerBase):
    type: Literal["ReLU"] = Field(description="Rectified linear unit.")
    max_value: float | None = Field(None, gt=0, description="Upper bound of the output.")
    negative_slope: float = Field(0.0, ge=0, description="Slope below zero.")


@layer_spec
class LeakyReLUSpec(LayerBase):
    type: Literal["LeakyReLU"] = Field(description="Leaky ReLU.")
    negative_slope: float = Field(0.3, ge=0, description="Slope below zero (Keras default 0.3).")


@layer_spec
class ELUSpec(LayerBase):
    type: Literal["ELU"] = Field(description="Exponential linear unit.")
    alpha: float = Field(1.0, description="Scale of the negative part.")


@layer_spec
class SoftmaxSpec(LayerBase):
    type: Literal["Softmax"] = Field(description="Softmax over the last axis.")
    axis: Literal[-1] = Field(-1, description="Axis; only the last.")


@layer_spec
class EmbeddingSpec(LayerBase):
    type: Literal["Embedding"] = Field(description="Integer ids to dense vectors.")
    input_dim: PosInt = Field(description="Vocabulary size (largest id + 1).")
    output_dim: PosInt = Field(description="Vector size.")
    embeddings_initializer: Initializer = Field("uniform", description="Initializer of the table.")
    mask_zero: bool = Field(
        False,
        description="Id 0 is padding: recurrent layers skip those steps, pooling and "
        "attention leave them out (Keras's mask_zero).",
    )


# rows and columns taken or added at the edges: n, [h, w] or [[top, bottom], [left, right]]
NonNeg = Annotated[int, Field(ge=0)]
Edges2D = Union[NonNeg, list[NonNeg], list[list[NonNeg]]]


@layer_spec
class ZeroPadding2DSpec(LayerBase):
    type: Literal["ZeroPadding2D"] = Field(description="Pad height and width with zeros.")
    padding: Edges2D = Field(1, description="n, [h, w] or [[top, bottom], [left, right]].")


@layer_spec
class Cropping2DSpec(LayerBase):
    type: Literal["Cropping2D"] = Field(description="Cut rows and columns off the edges.")
    cropping: Edges2D = Field(0, description="n, [h, w] or [[top, bottom], [left, right]].")


@layer_spec
class Cropping1DSpec(LayerBase):
    type: Literal["Cropping1D"] = Field(description="Cut steps off the start and end.")
    cropping: Union[NonNeg, list[NonNeg]] = Field([1, 1], description="n, or [start, end].")


@layer_spec
class UpSampling2DSpec(LayerBase):
    type: Literal["UpSampling2D"] = Field(description="Repeat rows and columns.")
    size: IntOrPair = Field(2, description="Factor: one number or [height, width].")
    interpolation: Literal["nearest"] = Field("nearest", description="Only 'nearest'.")


class _Merge(LayerBase):
    @model_validator(mode="after")
    def _two_inputs(self) -> _Merge:
        if self.inputs is not None and len(self.inputs) < 2:
            raise ValueError(f"{self.type} merges two or more layers; list them in `inputs`")
        return self


@layer_spec
class AddSpec(_Merge):
    type: Literal["Add"] = Field(description="Elementwise sum of the inputs.")


@layer_spec
class SubtractSpec(_Merge):
    type: Literal["Subtract"] = Field(description="The first input minus the second.")

    @model_validator(mode="after")
    def _exactly_two(self) -> SubtractSpec:
        if self.inputs is not None and len(self.inputs) != 2:
            raise ValueError("Subtract takes exactly two inputs (first minus second)")
        return self


@layer_spec
class MultiplySpec(_Merge):
    type: Literal["Multiply"] = Field(description="Elementwise product of the inputs.")


@layer_spec
class AverageSpec(_Merge):
    type: Literal["Average"] = Field(description="Elementwise mean of the inputs.")


@layer_spec
class MaximumSpec(_Merge):
    type: Literal["Maximum"] = Field(description="Elementwise maximum of the inputs.")


@layer_spec
class MinimumSpec(_Merge):
    type: Literal["Minimum"] = Field(description="Elementwise minimum of the inputs.")


@layer_spec
class ConcatenateSpec(_Merge):
    type: Literal["Concatenate"] = Field(description="Join the inputs along an axis.")
    axis: int = Field(-1, description="Axis (channels-last numbering; -1 = channels).")


class BlockUseSpec(LayerBase):
    """Placeholder for a block's layers; the loader expands it before validation."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["Block"] = Field(
        description="Insert a block defined under model.blocks; other keys set the block's params."
    )
    use: str = Field(description="Name of the block.")
    # `name:` prefixes the block's layer names; `trainable: false` freezes every layer in it


LAYER_TYPES = tuple(type_name(c) for c in LAYER_SPECS)

if TYPE_CHECKING:  # any layer spec; the union below is what pydantic validates
    LayerSpec = LayerBase
else:
    LayerSpec = Annotated[Union[tuple(LAYER_SPECS) + (BlockUseSpec,)], Field(discriminator="type")]
