"""The `data` section: sources (builtin, synthetic, csv, npz, idx, image and text folders,
text), splits, scaling and augmentation."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from .base import Spec
from .layers import PosInt


class BuiltinSource(Spec):
    type: Literal["builtin"] = Field(description="A dataset bundled with scikit-learn.")
    name: Literal["digits", "iris", "wine", "breast_cancer"] = Field(description="Dataset.")


class SyntheticSource(Spec):
    type: Literal["synthetic"] = Field(description="Seeded random data.")
    task: Literal["classification", "regression"] = Field(
        "classification", description="Kind of target."
    )
    samples: PosInt = Field(1000, description="Number of samples.")
    features: PosInt = Field(20, description="Number of features.")
    classes: Annotated[int, Field(ge=2)] = Field(2, description="Classes (classification).")
    informative: PosInt | None = Field(None, description="Informative features; default all.")
    noise: float = Field(
        0.1,
        ge=0,
        description="Noise: label flips (classification) or target noise std (regression).",
    )
    seed: int = Field(0, description="Seed of the generator.")
    targets: list[PosInt] | None = Field(
        None,
        description="Regression: shape of each target "
        "(channels-last), e.g. [64, 64, 3]; default one value.",
    )


class CsvSource(Spec):
    type: Literal["csv"] = Field(description="A CSV file with a header row.")
    path: str = Field(description="File path, relative to the config file.")
    label_column: str = Field(description="Column holding the label or target.")
    feature_columns: list[str] | None = Field(
        None, description="Feature columns; default all other columns."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")


class NpzSource(Spec):
    type: Literal["npz"] = Field(description="Arrays in a .npz (or .npy) file.")
    path: str = Field(description="File path, relative to the config file.")
    x_key: str = Field("x", description="Name of the features array.")
    y_key: str = Field("y", description="Name of the labels array.")


class IdxSource(Spec):
    type: Literal["idx"] = Field(description="MNIST's IDX format, gzipped or not.")
    images: str = Field(description="Images file (idx3), relative to the config file.")
    labels: str = Field(description="Labels file (idx1), relative to the config file.")


LabelMode = Annotated[
    Literal["int", "categorical", "binary"] | None,
    Field(
        description="Labels as Keras's *_dataset_from_directory gives them: int (class ids, "
        "for sparse_categorical_crossentropy), categorical (one-hot rows, for "
        "categorical_crossentropy) or binary (0/1 of two classes, for binary_crossentropy). "
        "Default: what the loss takes."
    ),
]


class ImageFolderSource(Spec):
    type: Literal["image_folder"] = Field(
        description="One subfolder per class of PNG/JPEG images, resized to the model's input."
    )
    path: str = Field(description="Folder path, relative to the config file.")
    label_mode: LabelMode = None


class TextSource(Spec):
    type: Literal["text"] = Field(
        description="A UTF-8 text file for language modelling: windows of "
        "model.input_shape[0] tokens, each step's target the next token."
    )
    path: str = Field(description="File path, relative to the config file.")
    level: Literal["char", "word"] = Field("char", description="Tokens: characters or words.")
    vocabulary_size: Annotated[int, Field(ge=3)] = Field(
        description="Token ids 0..vocabulary_size-1: 0 padding, 1 unknown, then the training "
        "text's most frequent tokens (Keras's TextVectorization max_tokens). The embedding's "
        "size and the last layer's units should equal it."
    )
    stride: PosInt | None = Field(
        None, description="Tokens between window starts; default the window length."
    )
    lowercase: bool = Field(False, description="Lower-case the text first.")


class TextFolderSource(Spec):
    type: Literal["text_folder"] = Field(
        description="One subfolder per class of UTF-8 .txt files, one sample each (Keras's "
        "text_dataset_from_directory): token ids, cut or padded to model.input_shape[0]."
    )
    path: str = Field(description="Folder path, relative to the config file.")
    level: Literal["char", "word"] = Field("word", description="Tokens: words or characters.")
    vocabulary_size: Annotated[int, Field(ge=3)] = Field(
        description="Token ids 0..vocabulary_size-1: 0 padding, 1 unknown, then the training "
        "texts' most frequent tokens; the Embedding's input_dim should equal it."
    )
    lowercase: bool = Field(True, description="Lower-case the text first.")
    label_mode: LabelMode = None


Source = Annotated[
    Union[
        BuiltinSource,
        SyntheticSource,
        CsvSource,
        NpzSource,
        IdxSource,
        ImageFolderSource,
        TextSource,
        TextFolderSource,
    ],
    Field(discriminator="type"),
]


class AugmentSpec(Spec):
    random_flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = Field(
        None, description="Random image flips during training."
    )
    random_crop_padding: Annotated[int, Field(ge=0)] = Field(
        0, description="Pad images by n pixels and crop back at random."
    )


class DataSpec(Spec):
    train: Source = Field(description="Training data.")
    validation: Source | None = Field(None, description="Validation data (else validation_split).")
    test: Source | None = Field(None, description="Test data (else test_split).")
    validation_split: float = Field(
        0.0, ge=0, lt=1, description="Fraction of the training data held out for validation."
    )
    test_split: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction of the training data "
        "held out for testing (before the validation split).",
    )
    scaling: Literal["none", "standard", "minmax"] = Field(
        "none", description="Feature scaling fitted on training data."
    )
    offset: float = Field(
        0.0,
        description="Added after rescale (Keras Rescaling's offset): rescale 1/127.5 "
        "with offset -1 maps pixels to [-1, 1].",
    )
    rescale: float | None = Field(
        None, description="Multiply inputs by this (Keras Rescaling), before scaling."
    )
    augment: AugmentSpec = Field(
        default_factory=AugmentSpec, description="Image augmentation during training."
    )
    max_in_memory_mb: float = Field(
        2048,
        gt=0,
        description="An image folder larger than this, "
        "decoded, is streamed from disk batch by batch instead "
        "of held in memory.",
    )
    workers: PosInt = Field(2, description="Worker processes decoding streamed images.")
