"""Sequence layer specs: recurrent layers (Keras), attention (Keras), and the Transformer
blocks and embeddings of KerasHub, with their argument names and defaults."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from .layer_base import Initializer, LayerBase, PosInt, layer_spec

RecurrentActivation = Literal["tanh", "sigmoid", "relu", "linear"]
FfnActivation = Literal[
    "relu", "gelu", "silu", "swish", "tanh", "sigmoid", "elu", "leaky_relu", "softplus", "linear"
]
Rate = Annotated[float, Field(ge=0, lt=1)]


class _Recurrent(LayerBase):
    units: PosInt = Field(description="Size of the state (output features).")
    activation: RecurrentActivation = Field("tanh", description="Activation of the state.")
    use_bias: bool = Field(True, description="Whether the layer uses a bias vector.")
    kernel_initializer: Initializer = Field(
        "glorot_uniform", description="Initializer of the input kernel."
    )
    recurrent_initializer: Initializer = Field(
        "orthogonal", description="Initializer of the recurrent kernel."
    )
    bias_initializer: Initializer = Field("zeros", description="Initializer of the bias.")
    dropout: Rate = Field(
        0.0, description="Dropout of the inputs; one mask per sequence, as in Keras."
    )
    recurrent_dropout: Rate = Field(
        0.0, description="Dropout of the previous state in the recurrence; one mask per sequence."
    )
    return_sequences: bool = Field(
        False, description="Return every step's output (steps, units), else the last (units)."
    )
    go_backwards: bool = Field(
        False, description="Read the sequence from its end; outputs come in reading order."
    )


@layer_spec
class SimpleRNNSpec(_Recurrent):
    type: Literal["SimpleRNN"] = Field(description="Fully connected recurrent layer.")


class _Gated(_Recurrent):
    recurrent_activation: RecurrentActivation = Field(
        "sigmoid", description="Activation of the gates."
    )


@layer_spec
class LSTMSpec(_Gated):
    type: Literal["LSTM"] = Field(description="Long short-term memory layer.")
    unit_forget_bias: bool = Field(
        True, description="Start the forget gate's bias at 1 (Jozefowicz et al., 2015)."
    )


@layer_spec
class GRUSpec(_Gated):
    type: Literal["GRU"] = Field(description="Gated recurrent unit layer.")
    reset_after: Literal[True] = Field(
        True,
        description="Apply the reset gate after the recurrent matmul (Keras 2+ and cuDNN "
        "convention; the only one supported).",
    )


RecurrentSpec = Annotated[Union[SimpleRNNSpec, LSTMSpec, GRUSpec], Field(discriminator="type")]


@layer_spec
class BidirectionalSpec(LayerBase):
    type: Literal["Bidirectional"] = Field(
        description="Run a recurrent layer forwards and backwards and merge the outputs."
    )
    layer: RecurrentSpec = Field(description="The recurrent layer (SimpleRNN, LSTM or GRU).")
    merge_mode: Literal["concat", "sum", "mul", "ave"] = Field(
        "concat", description="How the two directions' outputs are combined."
    )

    @model_validator(mode="after")
    def _plain_inner(self) -> BidirectionalSpec:
        inner = self.layer
        if inner.inputs is not None or inner.repeat != 1 or inner.name is not None:
            raise ValueError(
                "the wrapped layer takes no name, inputs or repeat; set them on Bidirectional"
            )
        if inner.go_backwards:
            raise ValueError("the wrapped layer must read forwards (go_backwards: false)")
        return self


class _GlobalPool1D(LayerBase):
    keepdims: bool = Field(False, description="Keep the steps axis with length 1.")


@layer_spec
class GlobalAveragePooling1DSpec(_GlobalPool1D):
    type: Literal["GlobalAveragePooling1D"] = Field(description="Mean over the steps axis.")


@layer_spec
class GlobalMaxPooling1DSpec(_GlobalPool1D):
    type: Literal["GlobalMaxPooling1D"] = Field(description="Maximum over the steps axis.")


@layer_spec
class MultiHeadAttentionSpec(LayerBase):
    type: Literal["MultiHeadAttention"] = Field(
        description="Multi-head scaled dot-product attention. One input: self-attention; "
        "`inputs: [query, value]` or `[query, value, key]` as in Keras's call."
    )
    num_heads: PosInt = Field(description="Number of attention heads.")
    key_dim: PosInt = Field(description="Size of each head for query and key.")
    value_dim: PosInt | None = Field(
        None, description="Size of each head for value; default key_dim."
    )
    dropout: Rate = Field(0.0, description="Dropout of the attention weights.")
    use_bias: bool = Field(True, description="Whether the projections use biases.")
    output_shape: PosInt | None = Field(
        None, description="Output features; default the query's features."
    )
    use_causal_mask: bool = Field(
        False, description="Each step attends only to itself and earlier steps."
    )
    kernel_initializer: Initializer = Field(
        "glorot_uniform", description="Initializer of the projection kernels."
    )
    bias_initializer: Initializer = Field("zeros", description="Initializer of the biases.")


@layer_spec
class TokenAndPositionEmbeddingSpec(LayerBase):
    type: Literal["TokenAndPositionEmbedding"] = Field(
        description="Token embedding plus a learned position embedding (KerasHub)."
    )
    vocabulary_size: PosInt = Field(description="Number of token ids (largest id + 1).")
    sequence_length: PosInt = Field(description="Longest sequence (positions learned).")
    embedding_dim: PosInt = Field(description="Vector size.")
    embeddings_initializer: Initializer = Field(
        "uniform", description="Initializer of the token table."
    )
    mask_zero: bool = Field(
        False,
        description="Id 0 is padding: recurrent layers skip those steps, pooling and "
        "attention leave them out (Keras's mask_zero).",
    )


class _Transformer(LayerBase):
    intermediate_dim: PosInt = Field(description="Hidden size of the feedforward network.")
    num_heads: PosInt = Field(description="Attention heads; the model width must divide.")
    dropout: Rate = Field(0.0, description="Dropout after attention and in the feedforward.")
    activation: FfnActivation = Field("relu", description="Activation of the feedforward.")
    layer_norm_epsilon: float = Field(1e-5, gt=0, description="Epsilon of the layer norms.")
    kernel_initializer: Initializer = Field(
        "glorot_uniform", description="Initializer of the kernels."
    )
    bias_initializer: Initializer = Field("zeros", description="Initializer of the biases.")
    normalize_first: bool = Field(
        False, description="Pre-norm (layer norm before attention and feedforward)."
    )


@layer_spec
class TransformerEncoderSpec(_Transformer):
    type: Literal["TransformerEncoder"] = Field(
        description="Self-attention + feedforward block with residuals and layer norms (KerasHub)."
    )


@layer_spec
class TransformerDecoderSpec(_Transformer):
    type: Literal["TransformerDecoder"] = Field(
        description="Causal self-attention + feedforward block (KerasHub's decoder without "
        "an encoder sequence): GPT-style language models."
    )


@layer_spec
class UpSampling1DSpec(LayerBase):
    """A weightless layer written whole here (the engine serves it): Keras's UpSampling1D."""

    type: Literal["UpSampling1D"] = Field(
        description="Repeat each step `size` times along the time axis: (steps, features) "
        "-> (steps * size, features)."
    )
    size: PosInt = Field(2, description="How many times each step is repeated.")

    def compute_output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 2:
            raise ValueError(
                f"UpSampling1D needs a (steps, features) input per sample, got shape {shape}"
            )
        return (shape[0] * self.size, shape[1])

    def call(self, x: Any) -> Any:
        n, steps, features = x.shape
        return x.unsqueeze(2).expand(n, steps, self.size, features).reshape(n, -1, features)

    def to_onnx(self, g: Any, x: str, base: str, shape: tuple[int, ...]) -> str:
        y = g.op("Unsqueeze", [x, g.const("axes", [2])], base)
        y = g.op("Expand", [y, g.const("shape", [1, 1, self.size, 1])], base)
        return g.op("Reshape", [y, g.const("shape", [0, -1, shape[1]])], base)


@layer_spec
class PermuteSpec(LayerBase):
    """A weightless layer written whole here (the engine serves it): Keras's Permute."""

    type: Literal["Permute"] = Field(
        description="Reorder the axes of each example: dims are 1-based, as in Keras "
        "([2, 1] turns (bins, frames) into (frames, bins))."
    )
    dims: list[PosInt] = Field(min_length=1, description="The new order of axes 1..rank.")

    def compute_output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if sorted(self.dims) != list(range(1, len(shape) + 1)):
            raise ValueError(
                f"Permute dims {self.dims} must order the axes 1..{len(shape)} of the input "
                f"shape {shape}, each once"
            )
        return tuple(shape[d - 1] for d in self.dims)

    def call(self, x: Any) -> Any:
        return x.permute(0, *self.dims)

    def to_onnx(self, g: Any, x: str, base: str, shape: tuple[int, ...]) -> str:
        return g.op("Transpose", [x], base, perm=[0, *self.dims])
