"""Make a spoken-commands data set offline with espeak-ng (Debian: apt-get install espeak-ng).

    python tools/make_speech_commands.py OUT [--speakers 16] [--takes 2] [--seed 0]
        [--snr-db 10 30] [--silence 32] [--rate 16000] [--first-speaker 0]

The eight words of TensorFlow's "simple audio recognition" tutorial (mini Speech Commands:
down, go, left, no, right, stop, up, yes) and a `silence` class (background noise alone),
one subfolder per class of 1-second mono FLAC clips at `--rate` Hz. A speaker is an
espeak-ng accent (American, British, Scottish, Lancaster, RP, West Midlands, Caribbean)
with one of its human-like voice variants; each says every word `--takes` times at a
random speed (120-210 words per minute) and pitch (25-75), placed at a
random moment of the second, scaled to a random loudness, over background noise (white,
pink or brown, a random level between the two `--snr-db` bounds). Files are named
`SPEAKER_TAKE.flac` (the speaker before the `_`), so `group_by: "^[^_]+"` keeps every
voice in one split.

The committed set (configs/data/speech_commands) is `--speakers 32 --takes 1 --snr-db 20 40`.
A different `--seed` draws other speakers (of the 7 x 57 available), speeds, pitches and
noise: a set to check that a trained model generalises (`--first-speaker 16` skips the
committed ones with the same seed), or a larger one to train on (`--speakers 100`).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

WORDS = ["down", "go", "left", "no", "right", "stop", "up", "yes"]
ACCENTS = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
]
VARIANTS = """adam Alex Alicia Andrea Andy Annie antonio aunty belinda benjamin boris caleb
david Denis Diogo ed edward Gene gustave Henrique Hugo iven Jacky john Lee linda marcelo
Marco Mario max Michael michel miguel Mike Mr Nguyen pablo paul pedro quincy rob robert
steph Storm zac anika f1 f2 f3 f4 f5 m1 m2 m3 m4 m5 m6""".split()


def speakers(seed: int) -> list[tuple[str, str]]:
    """Every (accent, variant) pair in the seed's order."""
    pairs = [(a, v) for a in ACCENTS for v in VARIANTS]
    random.Random(seed).shuffle(pairs)
    return pairs


def speak(word: str, accent: str, variant: str, speed: int, pitch: int, rate: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "w.wav"
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                f"{accent}+{variant}",
                "-s",
                str(speed),
                "-p",
                str(pitch),
                "-w",
                str(wav),
                word,
            ],
            check=True,
            capture_output=True,
        )
        audio, sr = sf.read(str(wav), dtype="float64")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    from math import gcd

    g = gcd(rate, sr)
    audio = resample_poly(audio, rate // g, sr // g)
    voiced = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    return audio[voiced[0] : voiced[-1] + 1] if len(voiced) else audio


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(n)
    if kind == "white":
        out = w
    else:  # pink (1/f) or brown (1/f^2) by shaping the spectrum
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        shaped = np.fft.rfft(w) / (np.sqrt(f) if kind == "pink" else f)
        out = np.fft.irfft(shaped, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def clip(
    speech: np.ndarray | None, rate: int, snr_db: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    out = np.zeros(rate)
    level = 10 ** rng.uniform(-1.6, -0.5)  # speech RMS, about -32 to -10 dBFS
    if speech is not None:
        speech = speech[:rate]
        start = int(rng.integers(0, rate - len(speech) + 1))
        out[start : start + len(speech)] = speech / (np.sqrt(np.mean(speech**2)) + 1e-12)
        out *= level
    snr = rng.uniform(*snr_db)
    kind = str(rng.choice(["white", "pink", "brown"]))
    nlevel = level / 10 ** (snr / 20) if speech is not None else level * rng.uniform(0.02, 0.3)
    out += nlevel * noise(kind, rate, rng)
    return np.clip(out, -1.0, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--speakers", type=int, default=16)
    ap.add_argument("--first-speaker", type=int, default=0)
    ap.add_argument("--takes", type=int, default=2)
    ap.add_argument("--silence", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--snr-db", type=float, nargs=2, default=(10.0, 30.0))
    ap.add_argument("--rate", type=int, default=16000)
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    out = Path(args.out)
    chosen = speakers(args.seed)[args.first_speaker : args.first_speaker + args.speakers]
    rng = np.random.default_rng(args.seed)
    for accent, variant in chosen:
        name = f"{accent.replace('-', '')}-{variant.lower()}"
        for word in WORDS:
            (out / word).mkdir(parents=True, exist_ok=True)
            for take in range(args.takes):
                speed = int(rng.integers(120, 211))
                pitch = int(rng.integers(25, 76))
                s = speak(word, accent, variant, speed, pitch, args.rate)
                audio = clip(s, args.rate, tuple(args.snr_db), rng)
                sf.write(
                    str(out / word / f"{name}_{take}.flac"), audio, args.rate, subtype="PCM_16"
                )
    (out / "silence").mkdir(parents=True, exist_ok=True)
    for i in range(args.silence):
        audio = clip(None, args.rate, tuple(args.snr_db), rng)
        sf.write(
            str(out / "silence" / f"noise{args.seed}x{i}_0.flac"),
            audio,
            args.rate,
            subtype="PCM_16",
        )
    n = sum(1 for _ in out.rglob("*.flac"))
    size = sum(p.stat().st_size for p in out.rglob("*.flac"))
    print(f"{out}: {n} clips, {size / 1e6:.1f} MB, {len(chosen)} speakers")


if __name__ == "__main__":
    main()
