"""Audio layers: Keras 3's MelSpectrogram and STFTSpectrogram, and SpecAugment's masking.

MelSpectrogram runs torch's STFT (an FFT, as Keras's torch backend does: centred frames,
reflect padding, a periodic window) as primitive math (ONNX's STFT operator in exports);
as in Keras it is a fixed front end with no weights, and it passes no gradient to its
input (the model refuses layers with weights before it). STFTSpectrogram is, as in Keras,
a strided convolution with DFT kernels that are weights (trainable unless
`trainable: false`), so gradients flow through it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...spec import audio_layers as S
from .. import functional as F
from ..distributed import uniform_rows
from ..tensor import Tensor, make
from .base import (
    BuildContext,
    Layer,
    OnnxGraph,
    RunContext,
    Shape,
    ShapeError,
    keras_shape,
    register,
    same_pads,
    to_channels_first,
    to_channels_last,
)

EPSILON = 1e-7  # keras.backend.epsilon()


def mel_weight_matrix(
    num_mel_bins: int, num_bins: int, sampling_rate: float, lower: float, upper: float
) -> np.ndarray:
    """(num_bins, num_mel_bins) triangular filters on the HTK mel scale (mel = 1127
    ln(1 + f / 700)), peaks 1, the DC bin excluded: the definition of TensorFlow's
    linear_to_mel_weight_matrix and Keras's MelSpectrogram (ONNX's MelWeightMatrix floors
    the band edges to FFT bins: another matrix, so the ONNX export holds this one).
    Computed in float32 in Keras's order of operations: a band too narrow to hold a
    frequency bin then gets Keras's (tiny or zero) weights, not other ones."""
    f32 = torch.float32

    def mel(f: torch.Tensor) -> torch.Tensor:
        return 1127.0 * torch.log(1.0 + f / 700.0)

    freqs = torch.linspace(0.0, sampling_rate / 2.0, num_bins, dtype=f32)[1:]
    spec_mel = mel(freqs)[:, None]
    lo_hi = mel(torch.tensor([lower, upper], dtype=f32))
    edges = torch.linspace(float(lo_hi[0]), float(lo_hi[1]), num_mel_bins + 2, dtype=f32)
    lo, centre, hi = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    up = (spec_mel - lo) / (centre - lo)
    down = (hi - spec_mel) / (hi - centre)
    w = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([torch.zeros(1, num_mel_bins, dtype=f32), w]).numpy()


def window(kind: str | None, length: int, periodic: bool) -> np.ndarray:
    n = np.arange(length)
    denom = length if periodic else max(length - 1, 1)
    if kind is None:
        return np.ones(length)
    a = 0.5 if kind == "hann" else 0.54
    return a - (1 - a) * np.cos(2 * np.pi * n / denom)


def _stft_frames(samples: int, stride: int) -> int:
    return samples // stride + 1  # centred frames (padding fft // 2 on each side)


@register(S.MelSpectrogramSpec)
class MelSpectrogram(Layer):
    passes_gradient = False

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        s = self.spec
        if len(shape) != 1:
            raise ShapeError(
                f"MelSpectrogram needs a waveform (samples,) per example, got "
                f"{keras_shape(shape)}; mono audio (input_shape: [samples])"
            )
        if shape[0] <= s.fft_length // 2:
            raise ShapeError(
                f"MelSpectrogram's centred frames pad fft_length // 2 = {s.fft_length // 2} "
                f"samples by reflection, which needs more than that many samples; got {shape[0]}"
            )
        bins = s.fft_length // 2 + 1
        upper = s.max_freq if s.max_freq is not None else s.sampling_rate / 2
        mel = mel_weight_matrix(s.num_mel_bins, bins, s.sampling_rate, s.min_freq, upper)
        # constants of the definition, not weights: no checkpoint holds them
        self.mel_matrix = torch.from_numpy(mel)
        win = window(s.window, s.sequence_length or s.fft_length, periodic=True)
        self.window = torch.from_numpy(win.astype(np.float32))
        frames = _stft_frames(shape[0], s.sequence_stride)
        return (frames, s.num_mel_bins)  # engine order of Keras's (num_mel_bins, frames)

    def keras_keys(self) -> list[str]:
        return []  # Keras's MelSpectrogram has no variables

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        s = self.spec
        X = xs[0].data
        if self.window.device != X.device:
            self.window, self.mel_matrix = self.window.to(X.device), self.mel_matrix.to(X.device)
        spec = torch.stft(
            X,
            n_fft=s.fft_length,
            hop_length=s.sequence_stride,
            win_length=s.sequence_length or s.fft_length,
            window=self.window,
            center=True,
            return_complex=True,
        )  # (N, bins, frames)
        mag = torch.sqrt(spec.real.square() + spec.imag.square())
        power = mag.pow(s.mag_exp) if s.mag_exp != 1.0 else mag
        mel = torch.matmul(power.transpose(1, 2), self.mel_matrix)  # (N, frames, mel)
        if s.power_to_db:
            db = 10.0 * torch.log10(torch.clamp(mel, min=s.min_power))
            db = db - 10.0 * math.log10(max(abs(s.ref_power), s.min_power))
            peak = db.amax(dim=(1, 2), keepdim=True)  # each example's own maximum
            mel = torch.maximum(db, peak - s.top_db)
        return make(mel.contiguous(), (), lambda g: (), "mel_spectrogram")

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        s = self.spec
        n = self.name
        fft, stride = s.fft_length, s.sequence_stride
        half = fft // 2
        # centred frames: reflect-pad fft // 2 on each side, as torch.stft
        x = g.op(
            "Pad",
            [xs[0], g.const(f"{n}.pads", np.array([0, half, 0, half], np.int64))],
            n,
            mode="reflect",
        )
        x = g.op("Unsqueeze", [x, g.const(f"{n}.axis2", np.array([2], np.int64))], n)
        win = window(s.window, s.sequence_length or fft, periodic=True)
        full = np.zeros(fft, np.float32)  # the window centred in the FFT frame (torch.stft)
        left = (fft - len(win)) // 2
        full[left : left + len(win)] = win
        spec = g.op(
            "STFT",
            [
                x,
                g.const(f"{n}.step", np.array(stride, np.int64)),
                g.const(f"{n}.window", full),
                g.const(f"{n}.frame_length", np.array(fft, np.int64)),
            ],
            n,
            onesided=1,
        )  # (N, frames, bins, 2)
        sq = g.op("Mul", [spec, spec], n)
        power = g.op(
            "ReduceSum", [sq, g.const(f"{n}.last", np.array([3], np.int64))], n, keepdims=0
        )
        if s.mag_exp != 2.0:
            power = g.op(
                "Pow", [power, g.const(f"{n}.exp", np.array(s.mag_exp / 2, np.float32))], n
            )
        # Keras's (TensorFlow's) mel matrix as a constant. ONNX's MelWeightMatrix operator
        # defines its triangles on whole FFT bins (edges floored to bins), not with
        # TensorFlow's slopes in the mel domain, so it gives other weights (0.97 apart on a
        # 512-point FFT) and cannot reproduce the layer
        matrix = g.const(f"{n}.mel_matrix", self.mel_matrix.cpu().numpy())
        mel = g.op("MatMul", [power, matrix], n)  # (N, frames, mel): the engine order
        if not s.power_to_db:
            return mel
        floor = g.op("Max", [mel, g.const(f"{n}.min_power", np.array(s.min_power, np.float32))], n)
        log = g.op("Log", [floor], n)
        db = g.op("Mul", [log, g.const(f"{n}.db", np.array(10.0 / math.log(10.0), np.float32))], n)
        ref = 10.0 * math.log10(max(abs(s.ref_power), s.min_power))
        db = g.op("Sub", [db, g.const(f"{n}.ref", np.array(ref, np.float32))], n)
        peak = g.op("ReduceMax", [db], n, axes=[1, 2], keepdims=1)  # axes: an attribute in 17
        low = g.op("Sub", [peak, g.const(f"{n}.top_db", np.array(s.top_db, np.float32))], n)
        return g.op("Max", [db, low], n)


@register(S.STFTSpectrogramSpec)
class STFTSpectrogram(Layer):
    def _geometry(self) -> tuple[int, int]:
        s = self.spec
        fft = s.fft_length or 2 ** int(math.ceil(math.log2(s.frame_length)))
        return fft, s.frame_step or s.frame_length // 2

    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes  # engine (channels, samples)
        s = self.spec
        if len(shape) != 2:
            raise ShapeError(
                f"STFTSpectrogram needs a waveform (samples, channels) per example, got "
                f"{keras_shape(shape)}; mono audio is input_shape [samples, 1]"
            )
        channels, samples = shape
        fft, step = self._geometry()
        bins = fft // 2 + 1
        t = np.arange(s.frame_length)[:, None]
        f = np.arange(bins)[None, :] / ((bins - 1) * 2)
        args = -2.0 * t * f * np.pi
        win = window(s.window, s.frame_length, s.periodic) if s.window else None
        scale = 1.0
        if win is not None and s.scaling == "density":
            scale = float(np.sqrt(np.sum(win**2)))
        elif win is not None and s.scaling == "spectrum":
            scale = float(np.sum(np.abs(win)))
        for side, fn in (("real", np.cos), ("imag", np.sin)):
            if (s.mode == "real" and side == "imag") or (s.mode == "imag" and side == "real"):
                continue
            k = fn(args)
            if win is not None:
                k = k * win[:, None] / scale
            # torch's (out, in, k) of Keras's (frame_length, 1, bins) kernel
            w = torch.from_numpy(k.T[:, None, :].astype(np.float32)).to(ctx.device)
            self.params[f"{side}_kernel"] = Tensor(w, requires_grad=s.trainable)
        if s.padding == "valid":
            if samples < s.frame_length:
                raise ShapeError(
                    f"STFTSpectrogram: {samples} samples are fewer than frame_length "
                    f"{s.frame_length} (padding 'valid'); use padding 'same' or a shorter frame"
                )
            frames = (samples - s.frame_length) // step + 1
        else:
            frames = -(-samples // step)
        out_bins = bins * (2 if s.mode == "stft" else 1)
        if s.expand_dims:
            return (channels, frames, out_bins)  # Keras (frames, bins, channels)
        return (channels * out_bins, frames)  # Keras (frames, channels * bins)

    def keras_keys(self) -> list[str]:
        return [k for k in ("real_kernel", "imag_kernel") if k in self.params]

    def _conv(self, x: Tensor, kernel: Tensor) -> Tensor:
        s = self.spec
        n, c, length = x.shape
        _, step = self._geometry()
        flat = x.reshape(n * c, 1, length)
        if s.padding == "same":
            flat = F.pad(flat, same_pads(length, s.frame_length, step))
        out = F.conv1d(flat, kernel, stride=step)  # (N * C, bins, frames)
        return out.reshape(n, c, out.shape[1], out.shape[2])

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        s = self.spec
        x = xs[0]
        re = self._conv(x, self.params["real_kernel"]) if s.mode != "imag" else None
        im = self._conv(x, self.params["imag_kernel"]) if s.mode != "real" else None
        if s.mode == "real":
            assert re is not None
            out = re
        elif s.mode == "imag":
            assert im is not None
            out = im
        else:
            assert re is not None and im is not None
            if s.mode == "angle":
                out = _atan2(im, re)
            elif s.mode == "stft":
                out = _cat2(re, im)
            else:
                power = re * re + im * im
                if s.mode == "psd":  # interior bins doubled (one-sided density), as Keras
                    inner = power[:, :, 1:-1, :]
                    out = power + F.pad(inner, (0, 0, 1, 1))
                else:
                    mag = power.clamp(min=EPSILON).sqrt()
                    out = mag if s.mode == "magnitude" else mag.clamp(min=EPSILON).log()
        n, c, f, t = out.shape
        if s.expand_dims:
            return out.permute(0, 1, 3, 2)  # engine (C, frames, bins)
        return out.reshape(n, c * f, t)

    def keras_layout(self, key: str, w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(w.transpose(2, 1, 0))  # (frame, 1, bins) -> (bins, 1, frame)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        s, n = self.spec, self.name
        if s.mode == "angle":
            raise_refusal(self, "mode 'angle' needs atan2, which ONNX has no operator for")
        channels, samples = self.input_shapes[0]
        _, step = self._geometry()
        flat = g.op(
            "Reshape", [xs[0], g.const(f"{n}.flat", np.array([-1, 1, samples], np.int64))], n
        )
        if s.padding == "same":
            lo, hi = same_pads(samples, s.frame_length, step)
            flat = g.op(
                "Pad", [flat, g.const(f"{n}.pads", np.array([0, 0, lo, 0, 0, hi], np.int64))], n
            )
        parts = {
            k: g.op("Conv", [flat, self.onnx_weight(g, f"{k}_kernel")], n, strides=[step])
            for k in ("real", "imag")
            if f"{k}_kernel" in self.params
        }  # (N * C, bins, frames)
        if s.mode in ("real", "imag"):
            out = parts[s.mode]
        elif s.mode == "stft":
            out = g.op("Concat", [parts["real"], parts["imag"]], n, axis=1)
        else:
            power = g.op(
                "Add",
                [
                    g.op("Mul", [parts["real"], parts["real"]], n),
                    g.op("Mul", [parts["imag"], parts["imag"]], n),
                ],
                n,
            )
            if s.mode == "psd":
                inner = g.op(
                    "Slice",
                    [
                        power,
                        g.const(f"{n}.s", np.array([1], np.int64)),
                        g.const(f"{n}.e", np.array([-1], np.int64)),
                        g.const(f"{n}.ax", np.array([1], np.int64)),
                    ],
                    n,
                )
                padded = g.op(
                    "Pad", [inner, g.const(f"{n}.ppad", np.array([0, 1, 0, 0, 1, 0], np.int64))], n
                )
                out = g.op("Add", [power, padded], n)
            else:
                eps = g.const(f"{n}.eps", np.array(EPSILON, np.float32))
                out = g.op("Sqrt", [g.op("Max", [power, eps], n)], n)
                if s.mode == "log":
                    out = g.op("Log", [g.op("Max", [out, eps], n)], n)
        frames = self.output_shape[1]
        bins = self.output_shape[2] if s.expand_dims else self.output_shape[0] // channels
        shape4 = np.array([-1, channels, bins, frames], np.int64)
        four = g.op("Reshape", [out, g.const(f"{n}.four", shape4)], n)
        if s.expand_dims:
            return g.op("Transpose", [four], n, perm=[0, 1, 3, 2])
        flat_out = np.array([-1, channels * bins, frames], np.int64)
        return g.op("Reshape", [four, g.const(f"{n}.out", flat_out)], n)


def _atan2(y: Tensor, x: Tensor) -> Tensor:
    Y, X = y.data, x.data
    d = X * X + Y * Y

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        safe = torch.where(d > 0, d, torch.ones_like(d))
        return g * X / safe, -g * Y / safe

    return make(torch.atan2(Y, X), (y, x), vjp, "atan2")


def _cat2(a: Tensor, b: Tensor) -> Tensor:
    fa = a.shape[2]

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return g[:, :, :fa], g[:, :, fa:]

    return make(torch.cat([a.data, b.data], dim=2), (a, b), vjp, "cat")


@register(S.SpecAugmentSpec)
class SpecAugment(Layer):
    def build(self, shapes: list[Shape], ctx: BuildContext) -> Shape:
        (shape,) = shapes
        if len(shape) not in (2, 3):
            raise ShapeError(
                f"SpecAugment needs a spectrogram (bins, frames) or (bins, frames, channels) "
                f"per example, got {keras_shape(shape)}"
            )
        return shape

    def forward(self, xs: list[Tensor], run: RunContext) -> Tensor:
        s = self.spec
        x = xs[0]
        if not run.training or not (s.time_masks or s.freq_masks):
            return x
        k = to_channels_last(x)  # Keras layout: (N, bins, frames[, channels])
        n, bins, frames = k.shape[0], k.shape[1], k.shape[2]
        keep = torch.ones(n, bins, frames, dtype=k.dtype, device=k.device)
        for count, width, axis, size in (
            (s.time_masks, s.time_mask_width, 2, frames),
            (s.freq_masks, s.freq_mask_width, 1, bins),
        ):
            if not count or not width:
                continue
            u = uniform_rows((n, count, 2), run.generator, k.device)
            w = torch.floor(u[..., 0] * (min(width, size) + 1)).long()  # 0..width
            start = torch.floor(u[..., 1] * (size - w + 1).float()).long()
            pos = torch.arange(size, device=k.device)
            for j in range(count):
                inside = (pos[None, :] >= start[:, j, None]) & (
                    pos[None, :] < (start[:, j] + w[:, j])[:, None]
                )
                if axis == 2:
                    keep *= (~inside).to(k.dtype)[:, None, :]
                else:
                    keep *= (~inside).to(k.dtype)[:, :, None]
        if k.ndim == 4:
            keep4 = keep[..., None]
        else:
            keep4 = keep
        if s.mask_value == "mean":
            fill = k.data.mean(dim=tuple(range(1, k.ndim)), keepdim=True)
        else:
            fill = torch.full((), float(s.mask_value), dtype=k.dtype, device=k.device)
        out = k * Tensor(keep4) + Tensor((1 - keep4) * fill)
        return to_channels_first(out)

    def to_onnx(self, g: OnnxGraph, xs: list[str], rank: int) -> str:
        return g.op("Identity", [xs[0]], self.name)


def raise_refusal(layer: Layer, why: str) -> None:
    from ...errors import ExportError

    raise ExportError(f"{layer.spec.type} '{layer.name}': {why}")
