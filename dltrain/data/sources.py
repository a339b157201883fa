"""Data sources: each returns raw features and labels as numpy arrays.

Features come back as the user has them (unscaled, channels-last for images); labels as
int64 class indices (classification) or float32 targets (regression). Every problem is a
DataError naming the file and the line, row, column or sample.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError
from .files import check_regular

MAX_NPZ_BYTES = 8 * 1024**3  # uncompressed size beyond which an archive is refused


@dataclass
class Dataset:
    x: Any  # np.ndarray, or StreamedImages read batch by batch
    y: np.ndarray
    classes: list[str] = field(default_factory=list)
    origin: str = ""
    image: bool = False  # x holds images (N, H, W, C)
    lines: np.ndarray | None = None  # file line of each sample (CSV), for error messages
    # windows of one text, in order: splits hold out its end, and drop the `overlap` training
    # windows before the cut that would share tokens with the held-out part
    overlap: int | None = None
    vocabulary: list[str] | None = None  # token table of a text folder
    paths: list[str] | None = None  # file of each sample (text folders), for error messages
    index: np.ndarray | None = None  # each sample's index in the file (splits keep it)
    groups: np.ndarray | None = None  # each sample's group (speaker): splits keep groups whole
    audio: bool = False  # x holds waveforms (N, samples)

    def where(self, i: int) -> str:
        """Sample i of this (possibly split) dataset as the user finds it in the file:
        'file:line: sample k' for a CSV, the file for a text folder, else
        'origin: sample k', k its index in the file."""
        k = int(self.index[i]) if self.index is not None else i
        if self.paths is not None:
            return self.paths[i]
        if self.lines is not None:
            return f"{self.origin.split(' (')[0]}:{int(self.lines[i])}: sample {k}"
        return f"{self.origin.split(' (')[0]}: sample {k}"


def numeric(a: np.ndarray, path: str, key: str) -> np.ndarray:
    """`a` if it holds real numbers (or booleans); DataError naming the array otherwise."""
    if a.dtype.kind == "c":
        raise DataError(
            f"{path}: '{key}' holds complex numbers; dltrain trains on real numbers (split "
            "real and imaginary parts into features if both matter)"
        )
    if a.dtype.kind not in "biuf":
        raise DataError(f"{path}: '{key}' has dtype {a.dtype}; it must hold numbers")
    return a


def _path(base: str, p: str) -> str:
    return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))


def load_source(
    src: Any,
    base_dir: str,
    task: str,
    input_shape: tuple[int, ...],
    max_in_memory_mb: float = 2048,
    workers: int = 2,
    vocabulary: list[str] | None = None,
) -> Dataset:
    """Read one `data.*` source; image folders are resized to `input_shape` (H, W, C) and,
    when larger than max_in_memory_mb decoded, streamed from disk by worker processes. A
    text source builds its vocabulary unless given the training text's."""
    ds = _load_source(src, base_dir, task, input_shape, max_in_memory_mb, workers, vocabulary)
    mode = getattr(src, "label_mode", None)
    if mode == "binary" and len(ds.classes) != 2:
        raise DataError(
            f"{ds.origin}: label_mode: binary needs exactly 2 class folders, found "
            f"{len(ds.classes)} ({', '.join(ds.classes[:8])})"
        )
    if mode == "categorical":  # one-hot rows, as Keras gives them
        ds.y = np.eye(len(ds.classes), dtype=np.float32)[ds.y]
    return ds


def _load_source(
    src: Any,
    base_dir: str,
    task: str,
    input_shape: tuple[int, ...],
    max_in_memory_mb: float,
    workers: int,
    vocabulary: list[str] | None,
) -> Dataset:
    if src.type == "image_folder":
        from .images import read_image_folder, scan_image_folder
        from .stream import stream_image_folder

        root = _path(base_dir, src.path)
        n = len(scan_image_folder(root, input_shape)[0])
        x: Any
        if n * math.prod(input_shape) * 4 > max_in_memory_mb * 1024**2:
            x, y, classes = stream_image_folder(root, input_shape, workers)
        else:
            x, y, classes = read_image_folder(root, input_shape)
        return Dataset(x, y, classes, root, image=True)
    if src.type == "audio_folder":
        return _audio_folder(src, base_dir, input_shape, max_in_memory_mb, workers)
    if src.type == "text":
        return _text(src, base_dir, input_shape, vocabulary)
    if src.type == "text_folder":
        return _text_folder(src, base_dir, input_shape, vocabulary)
    loader = {"builtin": _builtin, "synthetic": _synthetic, "csv": _csv, "npz": _npz, "idx": _idx}[
        src.type
    ]
    ds = loader(src, base_dir, task)
    if len(ds.x) == 0:
        raise DataError(f"{ds.origin}: no samples")
    if len(ds.x) != len(ds.y):
        raise DataError(f"{ds.origin}: {len(ds.x)} feature rows but {len(ds.y)} labels")
    return ds


def _audio_folder(
    src: Any, base_dir: str, input_shape: tuple[int, ...], max_in_memory_mb: float, workers: int
) -> Dataset:
    from functools import partial

    from .audio import groups_of, problem, read_audio, read_clips, scan_audio_folder

    root = _path(base_dir, src.path)
    length = src.output_sequence_length or input_shape[0]
    if tuple(input_shape) not in ((length,), (length, 1)):
        raise DataError(
            f"{root}: audio clips of {length} samples need model.input_shape [{length}] (or "
            f"[{length}, 1]), got {list(input_shape)}; set output_sequence_length or the shape"
        )
    paths, y, classes = scan_audio_folder(root)
    rate, resample = src.sampling_rate, src.resample
    x: Any
    if len(paths) * length * 4 > max_in_memory_mb * 1024**2:
        from .stream import stream_audio_folder

        reader = partial(read_audio, rate=rate, length=length, resample=resample)
        check = partial(problem, rate=rate, length=length, resample=resample)
        x = stream_audio_folder(root, paths, tuple(input_shape), workers, reader, check)
    else:
        x = read_clips(paths, rate, length, resample, root).reshape(len(paths), *input_shape)
    groups = groups_of(paths, src.group_by, root) if src.group_by else None
    return Dataset(x, y, classes, root, paths=paths, groups=groups, audio=True)


def _text(
    src: Any, base_dir: str, input_shape: tuple[int, ...], vocabulary: list[str] | None
) -> Dataset:
    from .text import build_vocabulary, encode, read_text, tokenize, windows

    path = _path(base_dir, src.path)
    tokens = tokenize(read_text(path), src.level, src.lowercase)
    if vocabulary is None:
        vocabulary = build_vocabulary(tokens, src.vocabulary_size)
    steps = input_shape[0]
    stride = src.stride or steps
    x, y = windows(encode(tokens, vocabulary), steps, stride, path)
    overlap = -(-(steps + 1) // stride) - 1
    return Dataset(x, y, list(vocabulary), path, overlap=overlap, vocabulary=list(vocabulary))


def _text_folder(
    src: Any, base_dir: str, input_shape: tuple[int, ...], vocabulary: list[str] | None
) -> Dataset:
    from .text import build_vocabulary, encode_documents, read_text_folder, tokenize

    root = _path(base_dir, src.path)
    texts, paths, y, classes = read_text_folder(root)
    if vocabulary is None:
        tokens = [t for text in texts for t in tokenize(text, src.level, src.lowercase)]
        vocabulary = build_vocabulary(tokens, src.vocabulary_size)
    x = encode_documents(texts, vocabulary, input_shape[0], src.level, src.lowercase)
    return Dataset(x, y, classes, root, vocabulary=list(vocabulary), paths=paths)


def _builtin(src: Any, base_dir: str, task: str) -> Dataset:
    from sklearn import datasets

    loaded = getattr(datasets, f"load_{src.name}")()
    x = loaded.data.astype(np.float32)
    names = [str(n) for n in getattr(loaded, "target_names", [])]
    y = loaded.target.astype(np.int64 if task == "classification" else np.float32)
    if src.name == "digits":
        x = x.reshape(-1, 8, 8, 1)
    return Dataset(x, y, names, f"builtin:{src.name}", image=src.name == "digits")


def _synthetic(src: Any, base_dir: str, task: str) -> Dataset:
    from sklearn.datasets import make_classification, make_regression

    if src.task == "classification":
        informative = src.informative or min(src.features, max(2, src.features // 2))
        x, y = make_classification(
            n_samples=src.samples,
            n_features=src.features,
            n_informative=informative,
            n_redundant=0,
            n_repeated=0,
            n_classes=src.classes,
            n_clusters_per_class=1,
            flip_y=src.noise,
            class_sep=1.5,
            random_state=src.seed,
        )
        y = y.astype(np.int64)
        classes = [str(i) for i in range(src.classes)]
    else:
        n_targets = int(np.prod(src.targets)) if src.targets else 1
        x, y = make_regression(
            n_samples=src.samples,
            n_features=src.features,
            n_informative=src.informative or src.features,
            noise=src.noise,
            n_targets=n_targets,
            random_state=src.seed,
        )
        y = y.astype(np.float32)
        if src.targets:  # squash into (-1, 1), e.g. for a tanh image output
            y = np.tanh(y / (np.abs(y).max() + 1e-8) * 2).reshape(-1, *src.targets)
        classes = []
    return Dataset(x.astype(np.float32), y, classes, f"synthetic(seed={src.seed})")


def _number(text: str, path: str, line: int, column: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(
            f"{path}:{line}: column '{column}' holds '{text}', which is not a "
            "number; fix or remove the row"
        ) from None
    return v


def _csv(src: Any, base_dir: str, task: str) -> Dataset:
    path = _path(base_dir, src.path)
    check_regular(path)
    try:
        f = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    with f:
        reader = csv.reader(f, delimiter=src.delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty; it needs a header row") from None
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except csv.Error as e:
            raise DataError(f"{path}:1: unreadable header ({e})") from None
        header = [h.strip() for h in header]
        if src.label_column not in header:
            raise DataError(
                f"{path}:1: no column '{src.label_column}' in the header ({', '.join(header)})"
            )
        feats = src.feature_columns or [h for h in header if h != src.label_column]
        missing = [c for c in feats if c not in header]
        if missing:
            raise DataError(f"{path}:1: feature columns not in the header: {', '.join(missing)}")
        fi = [header.index(c) for c in feats]
        li = header.index(src.label_column)
        rows, labels = [], []
        for line, row in csv_rows(reader, path):
            if len(row) != len(header):
                raise DataError(
                    f"{path}:{line}: {len(row)} fields, the header has "
                    f"{len(header)}; fix the row (a stray or missing "
                    f"'{src.delimiter}'?)"
                )
            rows.append([_number(row[i], path, line, header[i]) for i in fi])
            labels.append((row[li].strip(), line))
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    x = np.asarray(rows, dtype=np.float32)
    lines = np.asarray([ln for _, ln in labels])
    if task == "regression":
        y = np.asarray([_number(v, path, ln, src.label_column) for v, ln in labels], np.float32)
        return Dataset(x, y, [], path, lines=lines)
    if all(v.isdigit() for v, _ in labels):  # integer labels are the class indices
        y = np.asarray([int(v) for v, _ in labels], dtype=np.int64)
        return Dataset(x, y, [str(i) for i in range(int(y.max()) + 1)], path, lines=lines)
    names = sorted({v for v, _ in labels}, key=_label_key)
    index = {n: i for i, n in enumerate(names)}
    y = np.asarray([index[v] for v, _ in labels], dtype=np.int64)
    return Dataset(x, y, names, path, lines=lines)


def not_utf8(path: str) -> DataError:
    """The data error for a text file that is not UTF-8, naming the first bad line."""
    with open(path, "rb") as f:
        for line, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(
                    f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                    f"{e.start + 1}); save the file as UTF-8"
                )
    return DataError(f"{path}: not UTF-8 text; save the file as UTF-8")


def csv_rows(reader: Any, path: str) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of the non-blank rows; bytes that are not UTF-8 are a data error
    naming the line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: {e}") from None
        if row and any(c.strip() for c in row):
            yield reader.line_num, row


def _label_key(v: str) -> tuple:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _npz(src: Any, base_dir: str, task: str) -> Dataset:
    path = _path(base_dir, src.path)
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    if path.endswith(".npy"):
        raise DataError(
            f"{path}: a .npy holds one array; put features and labels in a .npz "
            f"with keys '{src.x_key}' and '{src.y_key}' (numpy.savez)"
        )
    arrays = read_npz(path)
    for key in (src.x_key, src.y_key):
        if key not in arrays:
            raise DataError(f"{path}: no array '{key}' (it has: {', '.join(arrays) or 'none'})")
    x, y = numeric(arrays[src.x_key], path, src.x_key), numeric(arrays[src.y_key], path, src.y_key)
    if task == "classification" and y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind == "f":
        # one-hot or probability rows (Keras's categorical targets); checked against the loss
        y = y.astype(np.float32)
        classes = [str(i) for i in range(y.shape[1])]
    elif task == "classification":
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{path}: labels '{src.y_key}' have dtype {y.dtype} and shape {y.shape}; class "
                "labels are integers 0..C-1, or one-hot rows (N, C) for "
                "categorical_crossentropy"
            )
        y = y.astype(np.int64)
        if y.ndim == 2 and y.shape[1] > 1 and set(np.unique(y).tolist()) <= {0, 1}:
            classes = [str(i) for i in range(y.shape[1])]  # one-hot rows
        else:
            classes = [str(i) for i in range(int(y.max()) + 1)] if len(y) else []
    else:
        y = y.astype(np.float32)
        classes = []
    return Dataset(x.astype(np.float32), y, classes, path, image=x.ndim == 4)


def read_npz(path: str, max_bytes: int = MAX_NPZ_BYTES) -> dict[str, np.ndarray]:
    """All arrays of an .npz, refusing object arrays (pickle) and absurd sizes up front."""
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    if not os.path.isfile(path):
        raise DataError(f"{path} is not a regular file")
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
            if total > max_bytes:
                raise DataError(
                    f"{path}: the archive declares {total / 1e9:.1f} GB "
                    f"uncompressed (limit {max_bytes / 1e9:.1f} GB); refusing to "
                    "read it"
                )
            for info in zf.infolist():
                if (
                    info.compress_size
                    and info.file_size / info.compress_size > 1000
                    and info.file_size > 64 * 1024**2
                ):
                    raise DataError(
                        f"{path}: member '{info.filename}' expands "
                        f"{info.file_size // info.compress_size}x to "
                        f"{info.file_size / 1e6:.0f} MB: a zip bomb? Refusing it"
                    )
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a valid .npz (zip) archive") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(
                f"{path}: holds object arrays, which need pickle; dltrain never "
                "unpickles. Save plain numeric arrays instead"
            ) from None
        raise DataError(f"{path}: cannot read: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None


_IDX_TYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not."""
    check_regular(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: broken gzip data: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = math.prod(dims) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != need:
        raise DataError(
            f"{path}: header promises {need} bytes of data for shape {dims}, the "
            f"file holds {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _idx(src: Any, base_dir: str, task: str) -> Dataset:
    ipath, lpath = _path(base_dir, src.images), _path(base_dir, src.labels)
    x, y = read_idx(ipath), read_idx(lpath)
    if x.ndim == 3:
        x = x[..., None]
    if len(x) != len(y):
        raise DataError(f"{ipath} has {len(x)} images but {lpath} has {len(y)} labels")
    y = y.astype(np.int64)
    classes = [str(i) for i in range(int(y.max()) + 1)] if len(y) else []
    return Dataset(x.astype(np.float32), y, classes, ipath, image=True)
