"""Keras 3's spectrogram layers as the oracle for dltrain's: the same arguments, the same
waveform, the same output (MelSpectrogram in decibels to 1e-4 relative; STFTSpectrogram in
every mode, with Keras's own DFT kernels and with random ones)."""

from __future__ import annotations

import numpy as np
import pytest

from .test_keras_parity import keras, run_both  # noqa: F401  (skips without Keras)

MEL = [
    {},
    {"fft_length": 511, "sequence_stride": 123, "num_mel_bins": 40},
    {
        "fft_length": 256,
        "sequence_stride": 64,
        "sequence_length": 200,
        "window": "hamming",
        "mag_exp": 1.0,
        "top_db": 60.0,
        "min_freq": 50.0,
        "max_freq": 6000.0,
        "ref_power": 2.0,
    },
    {"fft_length": 400, "sequence_stride": 160, "power_to_db": False, "num_mel_bins": 64},
    {
        "fft_length": 255,
        "sequence_stride": 97,
        "sequence_length": 255,
        "window": None,
        "sampling_rate": 8000,
        "num_mel_bins": 20,
        "min_freq": 0.0,
    },
]


def _wave(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)[None]


@pytest.mark.parametrize(
    "kw", MEL, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults"
)
def test_mel_spectrogram_is_keras(kw):
    x = _wave(16000 if kw.get("sampling_rate", 16000) == 16000 else 8000)
    want, got = run_both([{"type": "MelSpectrogram", **kw}], [x.shape[1]], x)
    assert want.shape == got.shape
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-4, rel


@pytest.mark.parametrize("mode", ["log", "magnitude", "psd", "real", "imag", "angle", "stft"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"frame_length": 101, "frame_step": 37, "fft_length": 128, "padding": "same"},
        {
            "frame_length": 64,
            "window": "hamming",
            "periodic": True,
            "scaling": "spectrum",
            "expand_dims": True,
        },
        {"frame_length": 50, "window": None, "scaling": None},
    ],
    ids=["defaults", "odd_same", "hamming_expand", "rectangular"],
)
def test_stft_spectrogram_is_keras(mode, kw):
    x = np.stack([_wave(700, 1)[0], _wave(700, 2)[0]], axis=-1)[None]  # (1, 700, 2)
    layer = {"type": "STFTSpectrogram", "mode": mode, **kw}
    for seed in (None, 0):  # Keras's own DFT kernels, then random ones
        want, got = run_both([layer], [700, 2], x, seed=seed)
        assert want.shape == got.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
