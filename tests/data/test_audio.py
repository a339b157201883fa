"""Audio folders (Keras's audio_dataset_from_directory semantics), audio augmentation,
SpecAugment, Normalization's adapt(), and the audio models end to end: train, evaluate on a
folder, predict files, folders and lists, and ONNX export on raw waveforms checked by
onnxruntime against `dltrain predict`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dltrain.data.audio import read_audio
from dltrain.engine.distributed import RowsGenerator
from dltrain.engine.train.augment import augment_audio
from dltrain.engine.train.replicas import local_rows
from dltrain.spec.data import AugmentSpec

from ..cli.helpers import ROOT, dltrain_here

SPEECH = ROOT / "configs" / "data" / "speech_commands"
CONFIG = ROOT / "configs" / "speech_commands.yaml"


def _tone(n: int, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(n) / rate
    a = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([a, -a * 0.5][:channels], axis=1) if channels > 1 else a


def _folder(root: Path, n_per_class: int = 6, rate: int = 8000, length: int = 800) -> Path:
    for c, f in (("high", 1200.0), ("low", 300.0)):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            sf.write(
                str(root / c / f"spk{i % 3}_{c}{i}.wav"), _tone(length, rate, f + 10 * i), rate
            )
    return root


def _config(tmp: Path, data: Path, extra: str = "") -> Path:
    cfg = tmp / "audio.yaml"
    cfg.write_text(
        f"""
name: tones
task: classification
data:
  train: {{type: audio_folder, path: {data}, sampling_rate: 8000, group_by: "^[^_]+"{extra}}}
  test_split: 0.3
model:
  input_shape: [800]
  layers:
    - {{type: MelSpectrogram, fft_length: 128, sequence_stride: 64, num_mel_bins: 16,
       sampling_rate: 8000}}
    - {{type: Normalization}}
    - {{type: Flatten}}
    - {{type: Dense, units: 2, activation: softmax}}
loss: sparse_categorical_crossentropy
optimizer: adam
train: {{epochs: 2, batch_size: 4}}
logging: {{tensorboard: false}}
"""
    )
    return cfg


def test_clips_are_mono_resampled_and_cut_or_padded(tmp_path):
    stereo = tmp_path / "s.flac"
    sf.write(str(stereo), _tone(1000, 8000, channels=2), 8000)
    x = read_audio(str(stereo), 8000, 800)
    np.testing.assert_allclose(x, (_tone(800, 8000) * 0.25).astype(np.float32), atol=1e-4)
    padded = read_audio(str(stereo), 8000, 1200)
    assert padded.shape == (1200,) and not padded[1000:].any()
    # a 16 kHz file read at 8 kHz: polyphase resampling keeps the tone
    hi = tmp_path / "hi.wav"
    sf.write(str(hi), _tone(16000, 16000, 500.0), 16000)
    y = read_audio(str(hi), 8000, 8000)
    np.testing.assert_allclose(y[100:-100], _tone(8000, 8000, 500.0)[100:-100], atol=2e-3)


@pytest.mark.parametrize(
    "bad,what",
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt garbage", "not a readable audio file"),
        (b"", "empty file (0 bytes)"),
        (b"just some text\n", "not audio"),
        ("rate", "recorded at 16000 Hz, the run reads 8000 Hz"),
        ("frames", "holds no samples"),
    ],
    ids=["corrupt", "empty", "stray_text", "rate", "no_frames"],
)
def test_bad_audio_is_a_data_error_naming_the_file(tmp_path, bad, what):
    data = _folder(tmp_path / "d")
    name = "spk9_bad.txt" if bad == b"just some text\n" else "spk9_bad.wav"
    path = data / "low" / name
    if bad == "rate":
        sf.write(str(path), _tone(1600, 16000), 16000)
    elif bad == "frames":
        sf.write(str(path), np.zeros((0,)), 8000)
    else:
        path.write_bytes(bad)
    extra = ", resample: false" if bad == "rate" else ""
    res = dltrain_here(
        "train", str(_config(tmp_path, data, extra)), "--run-dir", str(tmp_path / "run")
    )
    assert res.returncode == 3, res.stderr
    assert str(path) in res.stderr and what in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


def test_split_by_speaker_keeps_each_voice_in_one_split(tmp_path):
    from dltrain.data.prepare import load_splits
    from dltrain.spec import load

    spec = load(str(_config(tmp_path, _folder(tmp_path / "d", 9))), ["data.validation_split=0.3"])
    splits = load_splits(spec, str(tmp_path))
    seen = [set(ds.groups) for ds in (splits.train, splits.validation, splits.test)]
    assert all(seen) and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert set().union(*seen) == {"spk0", "spk1", "spk2"}


def test_audio_augmentation_is_seeded_and_rows_match_the_global_batch():
    aug = AugmentSpec(
        speed=(0.8, 1.2),
        time_shift=0.2,
        background_noise={"snr_db": (10.0, 10.0), "probability": 1.0},
    )
    x = torch.from_numpy(np.stack([_tone(800, 8000, 300 + 50 * i) for i in range(6)])).float()
    full = augment_audio(x, aug, torch.Generator().manual_seed(3))
    again = augment_audio(x, aug, torch.Generator().manual_seed(3))
    assert torch.equal(full, again) and not torch.equal(full, x)
    parts = [
        augment_audio(x[o : o + n], aug, torch.Generator().manual_seed(3), (o, 6))
        for o, n in (local_rows(6, r, 2) for r in range(2))
    ]
    assert torch.equal(torch.cat(parts), full)
    # noise alone at 10 dB: the added noise's power is a tenth of the clip's
    only = AugmentSpec(background_noise={"snr_db": (10.0, 10.0), "probability": 1.0})
    noisy = augment_audio(x, only, torch.Generator().manual_seed(0))
    ratio = (x.square().mean(1) / (noisy - x).square().mean(1)).numpy()
    np.testing.assert_allclose(10 * np.log10(ratio), 10.0, atol=0.01)
    # speed 1 and no shift: the identity
    assert torch.equal(augment_audio(x, AugmentSpec(speed=(1.0, 1.0)), torch.Generator()), x)


def test_spec_augment_masks_in_training_only():
    from dltrain.engine import Tensor
    from dltrain.engine.layers.base import RunContext
    from dltrain.engine.model import compile_model
    from dltrain.spec.schema import ModelSpec

    spec = ModelSpec.model_validate(
        {
            "input_shape": [20, 30],
            "layers": [
                {
                    "type": "SpecAugment",
                    "time_masks": 2,
                    "time_mask_width": 5,
                    "freq_masks": 1,
                    "freq_mask_width": 4,
                    "mask_value": -7.0,
                }
            ],
        }
    )
    model = compile_model(spec)
    x = torch.randn(4, 30, 20)  # engine order of Keras's (bins 20, frames 30)
    assert torch.equal(model(Tensor(x), RunContext(training=False)).data, x)
    y = model(Tensor(x), RunContext(training=True, generator=torch.Generator().manual_seed(0))).data
    masked = y == -7.0
    assert masked.any() and torch.equal(y[~masked], x[~masked])
    # masks are whole time steps (engine dim 1) or whole mel bins (engine dim 2)
    for i in range(4):
        m = masked[i]  # (frames, bins): every masked cell is in a whole masked frame or bin
        assert torch.equal(m, m.all(dim=1)[:, None] | m.all(dim=0)[None, :])
        assert m.all(dim=1).sum() <= 2 * 5 and m.all(dim=0).sum() <= 4
    rows = RowsGenerator(torch.Generator().manual_seed(0), 2, 4)
    part = model(Tensor(x[2:]), RunContext(training=True, generator=rows)).data
    assert torch.equal(part, y[2:])


def test_normalization_adapts_to_the_training_inputs(tmp_path):
    from dltrain.run.inference import load_checkpoint

    data = _folder(tmp_path / "d")
    run = tmp_path / "run"
    res = dltrain_here("train", str(_config(tmp_path, data)), "--run-dir", str(run))
    assert res.returncode == 0, res.stderr
    # predict names a file that is not audio, and reads a good one
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnot really")
    res = dltrain_here("predict", str(run), "-i", str(bad), "-o", str(tmp_path / "p.csv"))
    assert res.returncode == 3 and str(bad) in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "p.csv").exists()
    good = sorted((data / "low").iterdir())[0]
    assert (
        dltrain_here("predict", str(run), "-i", str(good), "-o", str(tmp_path / "p.npy")).returncode
        == 0
    )
    loaded = load_checkpoint(str(run))
    norm = loaded.model.layers[1]
    # the mel spectrogram of every training clip, by hand, then its mean and variance
    from dltrain.data.prepare import load_splits
    from dltrain.engine import Tensor
    from dltrain.engine.layers.base import RunContext

    train = load_splits(loaded.spec, str(tmp_path)).train
    mel = loaded.model.layers[0].forward([Tensor(torch.from_numpy(train.x))], RunContext()).data
    # axis -1 of Keras's (mel bins, frames): a mean and variance per frame, as Keras adapts
    m = mel.double()  # engine order (N, frames, mel bins)
    np.testing.assert_allclose(norm.buffers["mean"].numpy(), m.mean(dim=(0, 2)), rtol=1e-5)
    want = m.var(dim=(0, 2), unbiased=False)
    np.testing.assert_allclose(norm.buffers["variance"].numpy(), want, rtol=1e-4)
    assert int(norm.buffers["count"]) == m.shape[0] * m.shape[2]


def _speech_subset(tmp_path: Path, speakers: int = 10) -> Path:
    """The committed clips of a few speakers (and some silence): a quick end-to-end run."""
    keep = sorted({p.name.split("_")[0] for p in (SPEECH / "go").iterdir()})[:speakers]
    out = tmp_path / "speech"
    for c in sorted(SPEECH.iterdir()):
        (out / c.name).mkdir(parents=True)
        for p in sorted(c.iterdir()):
            if p.name.split("_")[0] in keep or (
                c.name == "silence" and len(list((out / c.name).iterdir())) < 8
            ):
                shutil.copy(p, out / c.name / p.name)
    return out


@pytest.mark.parametrize("config", ["speech_commands.yaml", "speech_commands_gru.yaml"])
def test_speech_models_train_predict_evaluate_and_export(tmp_path, config):
    import onnxruntime as ort

    from dltrain.export import export_checkpoint
    from dltrain.run.inference import load_checkpoint, predict_array

    data = _speech_subset(tmp_path)
    run = tmp_path / "run"
    res = dltrain_here(
        "train",
        str(ROOT / "configs" / config),
        "--run-dir",
        str(run),
        "--set",
        f"data.train.path={data}",
        "--set",
        "train.epochs=2",
        "-q",
    )
    assert res.returncode == 0, res.stderr
    # evaluate on any class-subfolder audio folder: the run's class names map its folders
    other = tmp_path / "other"
    (other / "yes").mkdir(parents=True)
    (other / "no").mkdir()
    for c in ("yes", "no"):
        for p in sorted((SPEECH / c).iterdir())[-3:]:
            shutil.copy(p, other / c / p.name)
    res = dltrain_here("evaluate", str(run), "--data", str(other), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["accuracy"] >= 0.0
    # predict a file, a folder and a list; CSV rows name each file
    wav = other / "yes" / sorted(p.name for p in (other / "yes").iterdir())[0]
    listing = tmp_path / "list.txt"
    listing.write_text("# clips\n" + "\n".join(str(p) for p in sorted((other / "no").iterdir())))
    for src, n in ((wav, 1), (other, 6), (listing, 3)):
        out = tmp_path / f"p{n}.csv"
        res = dltrain_here("predict", str(run), "-i", str(src), "-o", str(out))
        assert res.returncode == 0, res.stderr
        lines = out.read_text().splitlines()
        assert lines[0].startswith("file,label,p_down") and len(lines) == n + 1
    res = dltrain_here("predict", str(run), "-i", str(other))  # no -o: a table on stdout
    assert res.returncode == 0 and f"yes/{wav.name}" in res.stdout, res.stdout  # from the folder
    # ONNX on raw waveforms (STFT and MelWeightMatrix inside) against predict
    onnx_path = tmp_path / "m.onnx"
    export_checkpoint(str(run), "onnx", str(onnx_path))
    loaded = load_checkpoint(str(run))
    clips = sorted((other / "yes").iterdir()) + sorted((other / "no").iterdir())
    x = np.stack([read_audio(str(p), 16000, 16000) for p in clips])
    ours = predict_array(loaded, x)
    theirs = ort.InferenceSession(str(onnx_path)).run(None, {"input": x})[0]
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # about a minute each: the figures of the README's speech row
@pytest.mark.parametrize(
    "config,floor", [("speech_commands.yaml", 0.90), ("speech_commands_gru.yaml", 0.85)]
)
def test_speech_models_reach_their_accuracy_on_unheard_voices(tmp_path, config, floor):
    run = tmp_path / "run"
    res = dltrain_here("train", str(ROOT / "configs" / config), "--run-dir", str(run), "-q")
    assert res.returncode == 0, res.stderr
    res = dltrain_here("evaluate", str(run), "--json")
    assert json.loads(res.stdout)["accuracy"] >= floor


def test_streamed_audio_trains_like_in_memory_and_noise_recordings_mix_in(tmp_path):
    """A folder larger than data.max_in_memory_mb streams from disk in worker processes and
    trains bit-identically; background noise from a folder of recordings is mixed in."""
    data = _folder(tmp_path / "d")
    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(str(noise / "hum.wav"), _tone(4000, 8000, 60.0) + 0.01, 8000)
    aug = ["--set", "data.augment={background_noise: {path: " + str(noise) + ", snr_db: [5, 10]}}"]
    runs = {}
    for name, more in (("mem", []), ("stream", ["--set", "data.max_in_memory_mb=0.001"])):
        runs[name] = tmp_path / name
        res = dltrain_here(
            "train", str(_config(tmp_path, data)), "--run-dir", str(runs[name]), *aug, *more
        )
        assert res.returncode == 0, res.stderr
    from safetensors.torch import load_file

    a, b = (
        load_file(str(max((r / "checkpoints").glob("step-*")) / "model.safetensors"))
        for r in runs.values()
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    res = dltrain_here(
        "train",
        str(_config(tmp_path, data)),
        "--run-dir",
        str(tmp_path / "x"),
        "--set",
        "data.augment={background_noise: {path: nowhere}}",
    )
    assert res.returncode == 3 and "background noise folder not found" in res.stderr


def test_layers_with_weights_before_a_spectrogram_are_refused(tmp_path):
    from dltrain.engine.model import compile_model
    from dltrain.spec.errors import SpecError
    from dltrain.spec.schema import ModelSpec

    spec = ModelSpec.model_validate(
        {
            "input_shape": [400],
            "layers": [
                {"type": "Dense", "units": 400},
                {"type": "MelSpectrogram", "fft_length": 64, "sequence_stride": 32},
            ],
        }
    )
    with pytest.raises(SpecError, match="passes no gradient to its input"):
        compile_model(spec)


def test_resume_with_audio_augmentation_is_bit_exact(tmp_path):
    """Speed, shift, noise and SpecAugment draw from the run's saved generators: stopping
    after epoch 1 and resuming ends bit-identical to one uninterrupted run."""
    data = _folder(tmp_path / "d")
    cfg = _config(tmp_path, data)
    text = cfg.read_text().replace(
        "    - {type: Normalization}",
        "    - {type: SpecAugment, time_masks: 1, time_mask_width: 3, freq_masks: 1,\n"
        "       freq_mask_width: 3}\n    - {type: Normalization}",
    )
    text = text.replace(
        "  test_split: 0.3",
        "  test_split: 0.3\n  augment: {speed: [0.9, 1.1], "
        "time_shift: 0.1, background_noise: {snr_db: [5, 20]}}",
    )
    cfg.write_text(text)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert (
        dltrain_here(
            "train", str(cfg), "--run-dir", str(whole), "--set", "train.epochs=3"
        ).returncode
        == 0
    )
    assert (
        dltrain_here(
            "train", str(cfg), "--run-dir", str(parts), "--set", "train.epochs=1"
        ).returncode
        == 0
    )
    res = dltrain_here(
        "train",
        str(cfg),
        "--run-dir",
        str(parts),
        "--set",
        "train.epochs=3",
        "--resume",
        "--allow-config-change",
        "train.epochs",
    )
    assert res.returncode == 0, res.stderr
    from safetensors.torch import load_file

    for what in ("model", "optimizer", "trainer"):
        a, b = (
            load_file(str(max((r / "checkpoints").glob("step-*")) / f"{what}.safetensors"))
            for r in (whole, parts)
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), what
