"""Read raw inputs for `dltrain predict`: .npz / .npy arrays, CSV files, images."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from ..errors import DataError
from .files import regular_files
from .images import IMAGE_EXTENSIONS, read_image
from .sources import csv_rows, numeric, read_npz

STDIN_LIMIT = 1 << 30


def read_inputs(
    path: str,
    spec: Any,
    pre: Any = None,
    header: str = "auto",
    texts: list[str] | None = None,
    notes: list[str] | None = None,
    names: list[str] | None = None,
) -> np.ndarray:
    """Raw samples from `path` ('-': standard input), unscaled, as the user has them, or the
    given `texts`. A model trained on text reads text: a .txt file (a sample per line; blank
    lines are skipped and counted in `notes`), a folder of .txt files, or the texts. No
    samples is a data error: predict never writes an empty output. A model trained on an
    audio folder reads audio: a .wav/.flac/.ogg file, a folder of them (subfolders too),
    or a .txt list of their paths; their paths go to `names`."""
    notes = notes if notes is not None else []
    text = pre.text if pre is not None and pre.text and "vocabulary" in pre.text else None
    audio = getattr(spec.data.train, "type", None) == "audio_folder"
    if audio and (texts is not None or path == "-"):
        raise DataError(
            "this model reads audio: give a .wav/.flac/.ogg file, a folder of them or a .txt "
            "list of their paths with --input"
        )
    if audio:
        x = _audio(path, spec, names if names is not None else [])
    elif texts is not None:
        if text is None:
            raise DataError("--text: this model does not read text; give its inputs with --input")
        x = _encode(texts, text, pre.input_shape[0])
    elif text is not None:
        x = _texts(path, text, pre.input_shape[0], notes)
    elif path == "-":
        x = _stdin_csv(spec, pre, header)
    else:
        x = _read_inputs(path, spec, pre, header)
    if len(x) == 0:
        raise DataError(f"{'standard input' if path == '-' else path}: no samples to predict")
    return x


def _audio(path: str, spec: Any, names: list[str]) -> np.ndarray:
    from .audio import AUDIO_EXTENSIONS, read_clips

    if os.path.isdir(path):
        files = []
        for d, subdirs, _ in os.walk(path):
            subdirs.sort()
            files += regular_files(d, AUDIO_EXTENSIONS)
        if not files:
            raise DataError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) to predict")
    elif path.lower().endswith(AUDIO_EXTENSIONS):
        files = [path]
    elif path.lower().endswith((".txt", ".lst")):
        from .text import read_text

        base = os.path.dirname(os.path.abspath(path))
        files = [
            ln if os.path.isabs(ln) else os.path.join(base, ln)
            for ln in (x.strip() for x in read_text(path).splitlines())
            if ln and not ln.startswith("#")
        ]
        if not files:
            raise DataError(f"{path}: lists no audio files")
    else:
        if not os.path.exists(path):
            raise DataError(f"input file not found: {path}")
        raise DataError(
            f"{path}: this model reads audio; give a {'/'.join(AUDIO_EXTENSIONS)} file, a "
            "folder of them, or a .txt list of their paths"
        )
    src = spec.data.train
    shape = tuple(spec.model.input_shape)
    length = src.output_sequence_length or shape[0]
    x = read_clips(files, src.sampling_rate, length, src.resample, path)
    names.extend(files)
    return x.reshape(len(files), *shape)


def _stdin_bytes() -> bytes:
    import sys

    data = sys.stdin.buffer.read(STDIN_LIMIT + 1)
    if len(data) > STDIN_LIMIT:
        raise DataError(f"standard input: more than {STDIN_LIMIT >> 20} MiB; use a file")
    return data


def _stdin_csv(spec: Any, pre: Any, header: str) -> np.ndarray:
    """CSV rows from standard input (the only stdin form of numeric inputs)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "stdin.csv")
        with open(p, "wb") as f:
            f.write(_stdin_bytes())
        return _read_inputs(p, spec, pre, header)


def _read_inputs(path: str, spec: Any, pre: Any, header: str) -> np.ndarray:
    if os.path.isdir(path):
        files = regular_files(path, IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{path}: no image files to predict")
        return _images(files, spec)
    if not os.path.exists(path):
        raise DataError(f"input file not found: {path}")
    if not os.path.isfile(path):
        raise DataError(f"{path} is not a regular file (a pipe or device?)")
    low = path.lower()
    if low.endswith(IMAGE_EXTENSIONS):
        return _images([path], spec)
    if low.endswith(".npz"):
        arrays = read_npz(path)
        if "x" in arrays:
            return numeric(arrays["x"], path, "x")
        if len(arrays) == 1:
            key, value = next(iter(arrays.items()))
            return numeric(value, path, key)
        raise DataError(f"{path}: holds {', '.join(arrays)}; name the inputs 'x' or keep one array")
    if low.endswith(".npy"):
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":  # np.load would guess (a zip becomes an .npz)
                raise DataError(f"{path}: not a .npy file (no NUMPY header)")
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{path}: cannot read without pickle ({e})") from None
        except (OSError, EOFError) as e:  # truncated
            raise DataError(f"{path}: not a readable .npy file ({e or 'empty'})") from None
        return numeric(a, path, "the array")
    if low.endswith(".csv"):
        return _csv(path, spec, header)
    raise DataError(f"{path}: unknown input type; use .npz, .npy, .csv or image files")


def _images(paths: list[str], spec: Any) -> np.ndarray:
    shape = tuple(spec.model.input_shape)
    bad, out = [], []
    for p in paths:
        try:
            out.append(read_image(p, shape))
        except Exception as e:  # Pillow raises many kinds; list them all
            bad.append(f"  {p}: {e}")
    if bad:
        raise DataError(f"{len(bad)} image(s) cannot be read:\n" + "\n".join(bad))
    return np.stack(out)


def _csv(path: str, spec: Any, has_header: str = "auto") -> np.ndarray:
    """Feature rows of a CSV. With a header (`auto`: the first row is one when any of its
    fields is not a number) the training's feature columns are picked by name; without,
    every column is a feature, in the training's order. No row is ever dropped silently."""
    src = spec.data.train
    label = getattr(src, "label_column", None)
    wanted = getattr(src, "feature_columns", None)
    delim = getattr(src, "delimiter", ",")
    width = int(np.prod(spec.model.input_shape))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delim)
        rows_in = csv_rows(reader, path)
        first_line, first = next(rows_in, (0, []))
        named = has_header == "true" or (
            has_header == "auto" and not all(_is_float(c) for c in first)
        )
        pending = [] if named else [(first_line, first)]
        if named:
            header = [h.strip() for h in first]
            cols = wanted or [h for h in header if h != label]
            missing = [c for c in cols if c not in header]
            if missing:
                raise DataError(f"{path}:1: missing feature columns {', '.join(missing)}")
        else:
            header = [str(i) for i in range(len(first))]
            cols = header
            if first and len(first) != width:
                raise DataError(
                    f"{path}:{first_line}: {len(first)} columns but the model takes {width} "
                    "features; without a header row every column is a feature (give the "
                    "header row, or --header true if the first row is one)"
                )
        idx = [header.index(c) for c in cols]
        rows = []
        for _, row in [*pending, *rows_in]:
            if len(row) != len(header):
                raise DataError(
                    f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}"
                )
            try:
                rows.append([float(row[i]) for i in idx])
            except ValueError:
                bad = next(i for i in idx if not _is_float(row[i]))
                raise DataError(
                    f"{path}:{reader.line_num}: column '{header[bad]}' holds "
                    f"'{row[bad]}', which is not a number"
                ) from None
    x = np.asarray(rows, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{path}: row {r + 1}, column '{cols[c]}' is {x[r, c]}")
    return x


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _texts(path: str, text: dict[str, Any], steps: int, notes: list[str]) -> np.ndarray:
    from .text import read_text

    if os.path.isdir(path):
        files = regular_files(path, (".txt",))
        if not files:
            raise DataError(f"{path}: no .txt files to predict")
        return _encode([read_text(f, allow_empty=True) for f in files], text, steps)
    if path == "-":
        try:
            lines = _stdin_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataError(f"standard input: not UTF-8 text ({e.reason})") from None
    elif path.lower().endswith(".txt"):
        if not os.path.isfile(path):
            raise DataError(f"input file not found: {path}")
        lines = read_text(path).splitlines()
    else:
        raise DataError(
            f"{path}: this model reads text; give a .txt file (a sample per line), a folder "
            "of .txt files, --input - (lines on standard input) or --text"
        )
    docs = [ln for ln in lines if ln.strip()]
    if len(docs) < len(lines):
        notes.append(f"skipped {len(lines) - len(docs)} blank line(s)")
    return _encode(docs, text, steps)


def _encode(docs: list[str], text: dict[str, Any], steps: int) -> np.ndarray:
    from .text import encode_documents

    return encode_documents(docs, text["vocabulary"], steps, text["level"], text["lowercase"])
