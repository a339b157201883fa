"""Audio and preprocessing layer specs: Keras 3's spectrogram layers, Resizing, Rescaling and
Normalization (their names, arguments and defaults), and SpecAugment's masking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .layer_base import LayerBase, PosInt, layer_spec


@layer_spec
class MelSpectrogramSpec(LayerBase):
    type: Literal["MelSpectrogram"] = Field(
        description="Keras's MelSpectrogram: a waveform (samples,) to a mel spectrogram "
        "(num_mel_bins, frames), in decibels by default. Not trainable; it passes no gradient "
        "to its input, so it comes first in the model."
    )
    fft_length: PosInt = Field(2048, description="FFT size (frequency bins: fft_length // 2 + 1).")
    sequence_stride: PosInt = Field(512, description="Samples between frames.")
    sequence_length: PosInt | None = Field(
        None, description="Window length in samples (default fft_length); at most fft_length."
    )
    window: Literal["hann", "hamming"] | None = Field(
        "hann", description="Window function (periodic); null for a rectangular window."
    )
    sampling_rate: PosInt = Field(16000, description="Sample rate of the waveform, in Hz.")
    num_mel_bins: PosInt = Field(128, description="Mel bands.")
    min_freq: float = Field(20.0, ge=0, description="Lower edge of the lowest band, in Hz.")
    max_freq: float | None = Field(
        None, gt=0, description="Upper edge of the highest band, in Hz (default sampling_rate/2)."
    )
    power_to_db: bool = Field(True, description="Decibels: 10 log10(power / ref_power).")
    top_db: float = Field(
        80.0, gt=0, description="Decibels below each example's maximum that are kept."
    )
    mag_exp: float = Field(2.0, gt=0, description="Magnitude exponent (2: power, 1: magnitude).")
    min_power: float = Field(1e-10, gt=0, description="Floor of the power before the logarithm.")
    ref_power: float = Field(1.0, gt=0, description="Reference power of 0 dB.")

    @model_validator(mode="after")
    def _lengths(self) -> MelSpectrogramSpec:
        if self.sequence_length is not None and self.sequence_length > self.fft_length:
            raise ValueError(
                f"sequence_length {self.sequence_length} is longer than fft_length "
                f"{self.fft_length}; use a window no longer than the FFT"
            )
        top = self.max_freq if self.max_freq is not None else self.sampling_rate / 2
        if not self.min_freq < top <= self.sampling_rate / 2:
            raise ValueError(
                f"the mel bands span min_freq {self.min_freq} to max_freq {top} Hz; they "
                f"must rise and stay at or below half the sampling rate "
                f"({self.sampling_rate / 2} Hz)"
            )
        return self


@layer_spec
class STFTSpectrogramSpec(LayerBase):
    type: Literal["STFTSpectrogram"] = Field(
        description="Keras's STFTSpectrogram: a waveform (samples, channels) to a spectrogram "
        "(frames, bins x channels), or (frames, bins, channels) with expand_dims, computed as "
        "a convolution with fixed DFT kernels (channels-last)."
    )
    mode: Literal["log", "magnitude", "psd", "real", "imag", "angle", "stft"] = Field(
        "log", description="What each bin holds."
    )
    frame_length: PosInt = Field(256, description="Window length in samples.")
    frame_step: PosInt | None = Field(
        None, description="Samples between frames (default frame_length // 4)."
    )
    fft_length: PosInt | None = Field(
        None, description="FFT size (default frame_length); at least frame_length."
    )
    window: Literal["hann", "hamming"] | None = Field("hann", description="Window function.")
    periodic: bool = Field(False, description="Periodic window (else symmetric).")
    scaling: Literal["density", "spectrum"] | None = Field(
        "density",
        description="Normalise by sqrt of the window's energy (density) or its sum (spectrum).",
    )
    padding: Literal["valid", "same"] = Field("valid", description="Frame padding.")
    expand_dims: bool = Field(False, description="Keep channels as a last axis.")

    @model_validator(mode="after")
    def _lengths(self) -> STFTSpectrogramSpec:
        if self.fft_length is not None and self.fft_length < self.frame_length:
            raise ValueError(
                f"fft_length {self.fft_length} is shorter than frame_length {self.frame_length}"
            )
        return self


@layer_spec
class SpecAugmentSpec(LayerBase):
    type: Literal["SpecAugment"] = Field(
        description="SpecAugment's masking during training (Park et al. 2019): zero "
        "`time_masks` random runs of up to `time_mask_width` frames and `freq_masks` runs of "
        "up to `freq_mask_width` bins, per example; the identity at inference. Input "
        "(bins, frames) as MelSpectrogram gives it, or (bins, frames, channels)."
    )
    time_masks: int = Field(2, ge=0, description="Time masks per example.")
    time_mask_width: int = Field(10, ge=0, description="Longest time mask, in frames.")
    freq_masks: int = Field(2, ge=0, description="Frequency masks per example.")
    freq_mask_width: int = Field(8, ge=0, description="Widest frequency mask, in bins.")
    mask_value: float | Literal["mean"] = Field(
        "mean",
        description="What masked cells hold: a number, or each example's mean (the neutral "
        "value of a decibel spectrogram, whose silence is not 0).",
    )


@layer_spec
class ResizingSpec(LayerBase):
    type: Literal["Resizing"] = Field(
        description="Keras's Resizing: images (height, width, channels) to (height, width) "
        "of this layer, bilinear (half-pixel centres, no antialiasing) or nearest."
    )
    height: PosInt = Field(description="Output height.")
    width: PosInt = Field(description="Output width.")
    interpolation: Literal["bilinear", "nearest"] = Field("bilinear", description="Interpolation.")


@layer_spec
class RescalingSpec(LayerBase):
    type: Literal["Rescaling"] = Field(
        description="Keras's Rescaling: x * scale + offset (1/255 turns 0..255 pixels into "
        "0..1; scale 1/127.5 with offset -1 into -1..1)."
    )
    scale: float = Field(description="Factor.")
    offset: float = Field(0.0, description="Added after scaling.")


@layer_spec
class NormalizationSpec(LayerBase):
    type: Literal["Normalization"] = Field(
        description="Keras's Normalization: (x - mean) / sqrt(variance) per `axis` entry. "
        "Without mean and variance they are adapted to the training data (through the "
        "layers before it) when training starts, as Keras's adapt(), and saved with the "
        "weights."
    )
    axis: int | list[int] | None = Field(
        -1, description="Axes with their own mean (channels-last; null: one for all)."
    )
    mean: float | list[float] | None = Field(None, description="Fixed mean (else adapted).")
    variance: float | list[float] | None = Field(None, description="Fixed variance (else adapted).")
    invert: bool = Field(False, description="Undo the normalisation: x * sqrt(var) + mean.")

    @model_validator(mode="after")
    def _both(self) -> NormalizationSpec:
        if (self.mean is None) != (self.variance is None):
            raise ValueError("give both mean and variance, or neither (to adapt them)")
        return self
