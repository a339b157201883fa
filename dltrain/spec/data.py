"""The `data` section: sources (builtin, synthetic, csv, npz, idx, image and text and audio folders,
text), splits, scaling and augmentation."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

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


class AudioFolderSource(Spec):
    type: Literal["audio_folder"] = Field(
        description="One subfolder per class of WAV, FLAC or OGG files, one clip each (Keras's "
        "audio_dataset_from_directory): mono (channels averaged), at sampling_rate, cut or "
        "zero-padded to output_sequence_length samples."
    )
    path: str = Field(description="Folder path, relative to the config file.")
    sampling_rate: PosInt = Field(16000, description="Samples per second the model reads.")
    resample: bool = Field(
        True,
        description="Resample files recorded at another rate (polyphase, scipy); false: such "
        "a file is an error naming it.",
    )
    output_sequence_length: PosInt | None = Field(
        None, description="Samples per clip (default: the model's input_shape[0])."
    )
    group_by: str | None = Field(
        None,
        description="A regular expression on each file's name (without extension): files "
        "whose first match (or first group) is the same, e.g. one speaker's with '^[^_]+', "
        "stay in one split of validation_split/test_split.",
    )
    label_mode: LabelMode = None

    @model_validator(mode="after")
    def _pattern(self) -> AudioFolderSource:
        if self.group_by is not None:
            import re

            try:
                re.compile(self.group_by)
            except re.error as e:
                raise ValueError(
                    f"group_by {self.group_by!r} is not a regular expression: {e}"
                ) from None
        return self


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
        AudioFolderSource,
    ],
    Field(discriminator="type"),
]


class BackgroundNoiseSpec(Spec):
    snr_db: tuple[float, float] = Field(
        (5.0, 30.0), description="Signal-to-noise ratio range in dB, drawn per clip."
    )
    probability: float = Field(0.8, ge=0, le=1, description="Share of clips that get noise.")
    colors: list[Literal["white", "pink", "brown"]] = Field(
        ["white", "pink", "brown"],
        min_length=1,
        description="Generated noise (without `path`): one of these spectra per clip, at "
        "random (white: flat; pink: 1/f power, like rain or a fan; brown: 1/f^2, like "
        "rumble).",
    )
    path: str | None = Field(
        None,
        description="A folder of noise recordings (WAV/FLAC/OGG), relative to the config; a "
        "random stretch of a random one per clip. Default: white noise.",
    )

    @model_validator(mode="after")
    def _range(self) -> BackgroundNoiseSpec:
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db {list(self.snr_db)}: the low end comes first")
        return self


class AugmentSpec(Spec):
    random_flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = Field(
        None, description="Random image flips during training."
    )
    random_crop_padding: Annotated[int, Field(ge=0)] = Field(
        0, description="Pad images by n pixels and crop back at random."
    )
    time_shift: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Audio: shift each clip by up to this fraction of its length, earlier or "
        "later at random (zeros fill the gap).",
    )
    speed: tuple[float, float] | None = Field(
        None,
        description="Audio: play each clip at a random speed in this range (e.g. [0.85, 1.15]; "
        "pitch and formants move with it, as another voice's would: Kaldi's speed "
        "perturbation), resampled linearly; the length stays.",
    )
    background_noise: BackgroundNoiseSpec | None = Field(
        None, description="Audio: mix noise into training clips at a random SNR."
    )

    @model_validator(mode="after")
    def _speed(self) -> AugmentSpec:
        if self.speed is not None and not 0 < self.speed[0] <= self.speed[1] <= 4:
            raise ValueError(f"speed {list(self.speed)}: a rising range of factors in (0, 4]")
        return self


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
        default_factory=AugmentSpec, description="Augmentation of training images and audio."
    )
    max_in_memory_mb: float = Field(
        2048,
        gt=0,
        description="An image folder larger than this, "
        "decoded, is streamed from disk batch by batch instead "
        "of held in memory.",
    )
    workers: PosInt = Field(2, description="Worker processes decoding streamed images.")
