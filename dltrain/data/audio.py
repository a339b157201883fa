"""Audio folders: one subfolder per class of WAV/FLAC/OGG clips (Keras's
audio_dataset_from_directory), decoded with soundfile (libsndfile), mono, resampled with
scipy's polyphase resampler, cut or zero-padded to a fixed length.

Every file is untrusted: only regular files are opened, at most `MAX_AUDIO_BYTES` are
read, only the frames the clip needs are decoded, and every file that cannot be used is
listed in one data error (exit 3) naming it and why.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np

from ..errors import DataError
from .files import check_regular, regular_files

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
MAX_AUDIO_BYTES = 256 * 1024**2


def read_audio(path: str, rate: int, length: int, resample: bool = True) -> np.ndarray:
    """One clip as float32 (length,): channels averaged, at `rate`, cut or zero-padded.
    Raises DataError naming the file."""
    import soundfile as sf

    check_regular(path)
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes); not audio")
    if size > MAX_AUDIO_BYTES:
        raise DataError(f"{path}: {size >> 20} MiB, more than {MAX_AUDIO_BYTES >> 20} MiB")
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            if sr != rate and not resample:
                raise DataError(
                    f"{path}: recorded at {sr} Hz, the run reads {rate} Hz; convert the file, or "
                    "set resample: true in the audio_folder source"
                )
            need = math.ceil(length * sr / rate) + 64  # decode no more than the clip needs
            data = f.read(frames=need, dtype="float32", always_2d=True)
    except DataError:
        raise
    except (RuntimeError, ValueError, TypeError, OSError) as e:  # libsndfile's errors
        msg = str(e).split(": ", 1)[-1] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable audio file ({msg})") from None
    if data.size == 0:
        raise DataError(f"{path}: holds no samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise DataError(f"{path}: holds NaN or infinite samples")
    if sr != rate:
        from scipy.signal import resample_poly

        g = math.gcd(rate, sr)
        mono = resample_poly(mono, rate // g, sr // g).astype(np.float32)
    out = np.zeros(length, np.float32)
    n = min(length, len(mono))
    out[:n] = mono[:n]
    return out


def problem(path: str, rate: int, length: int, resample: bool) -> str | None:
    """Why the clip cannot be used, or None (for checking files in worker processes)."""
    return try_read(path, rate, length, resample)[1]


def try_read(path: str, rate: int, length: int, resample: bool) -> tuple[Any, str | None]:
    try:
        return read_audio(path, rate, length, resample), None
    except DataError as e:
        return None, f"  {e}"


def scan_audio_folder(root: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(clip paths, labels, class names). Files in a class folder that are not audio are
    errors (hidden files aside); so is a folder without clips."""
    if not os.path.isdir(root):
        raise DataError(f"audio folder not found: {root}")
    classes = sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and d[0] != "."
    )
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected one folder per class)")
    paths, labels, strays = [], [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        for p in regular_files(folder, AUDIO_EXTENSIONS):
            paths.append(p)
            labels.append(label)
        strays += [
            os.path.join(folder, f)
            for f in sorted(os.listdir(folder))
            if f[0] != "."
            and not f.lower().endswith(AUDIO_EXTENSIONS)
            and not os.path.isdir(os.path.join(folder, f))
        ]
    if strays:
        raise DataError(
            f"{root}: {len(strays)} file(s) in the class folders are not audio "
            f"({', '.join(AUDIO_EXTENSIONS)}); move them out:\n"
            + "\n".join(f"  {p}" for p in strays[:50])
        )
    if not paths:
        raise DataError(f"{root}: no clips ({', '.join(AUDIO_EXTENSIONS)}) in the class folders")
    return paths, np.asarray(labels, dtype=np.int64), classes


def raise_bad(root: str, bad: list[str]) -> None:
    if bad:
        raise DataError(
            f"{root}: {len(bad)} audio file(s) cannot be used; fix or remove them:\n"
            + "\n".join(bad[:50])
            + (f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else "")
        )


def read_clips(paths: list[str], rate: int, length: int, resample: bool, root: str) -> np.ndarray:
    read = [try_read(p, rate, length, resample) for p in paths]
    raise_bad(root, [why for _, why in read if why])
    return np.stack([a for a, _ in read]) if read else np.zeros((0, length), np.float32)


def groups_of(paths: list[str], pattern: str, root: str) -> np.ndarray:
    """Each file's group (speaker): the first match of `pattern` in its name without the
    extension, or the pattern's first group when it has one."""
    rx = re.compile(pattern)
    out, missing = [], []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        m = rx.search(stem)
        if m is None:
            missing.append(p)
            continue
        out.append(m.group(1) if rx.groups else m.group(0))
    if missing:
        raise DataError(
            f"{root}: group_by {pattern!r} matches nothing in {len(missing)} file name(s), e.g. "
            f"{missing[0]}; every file needs a group (speaker) for a split by group"
        )
    return np.asarray(out)


def noise_bank(folder: str, rate: int, max_seconds: float = 60.0) -> np.ndarray:
    """Background recordings for noise mixing: every clip of the folder (and its subfolders),
    mono at `rate`, at most `max_seconds` each, concatenated."""
    if not os.path.isdir(folder):
        raise DataError(f"background noise folder not found: {folder}")
    paths = []
    for d, _, _ in sorted(os.walk(folder)):
        paths += regular_files(d, AUDIO_EXTENSIONS)
    if not paths:
        raise DataError(f"{folder}: no noise recordings ({', '.join(AUDIO_EXTENSIONS)})")
    clips = read_clips(paths, rate, int(rate * max_seconds), True, folder)
    parts = [c[: np.flatnonzero(c).max() + 1] if c.any() else c[:0] for c in clips]
    bank = np.concatenate([p for p in parts if len(p)] or [np.zeros(0, np.float32)])
    if len(bank) < rate // 10:
        raise DataError(f"{folder}: the noise recordings are silent or too short")
    return bank
