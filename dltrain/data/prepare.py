"""Splits, checks and preprocessing fitted on the training split only.

`Preprocessor` is plain data (JSON in every checkpoint), so evaluate, predict and export
apply exactly the transformation training used.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import DataError
from .sources import Dataset, load_source
from .stream import StreamedImages


@dataclass
class Preprocessor:
    """raw (N, *input_shape channels-last) -> model input, as numpy float32/int64."""

    input_shape: list[int]
    input_dtype: str = "float32"
    rescale: float | None = None
    scaling: str = "none"
    shift: float = 0.0  # Keras Rescaling's offset: x * rescale + shift, before scaling
    offset: list[float] | None = None  # x' = (x * rescale - offset) * scale
    scale: list[float] | None = None
    classes: list[str] = field(default_factory=list)
    text: dict[str, Any] | None = None  # tokenizer of a text source: level, lowercase

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(**d)

    def fit(self, x: np.ndarray) -> None:
        flat = self._flat(x)
        if self.scaling == "standard":
            mean, std = flat.mean(0), flat.std(0)
            self.offset, self.scale = (
                mean.tolist(),
                np.where(std > 0, 1 / np.where(std > 0, std, 1), 1.0).tolist(),
            )
        elif self.scaling == "minmax":
            lo, hi = flat.min(0), flat.max(0)
            span = hi - lo
            self.offset = lo.tolist()
            self.scale = np.where(span > 0, 1 / np.where(span > 0, span, 1), 1.0).tolist()

    def fit_stream(self, chunks: Any) -> None:
        """fit() over chunks of samples, in one pass (sums in float64)."""
        n, s1, s2 = 0, np.zeros(()), np.zeros(())
        lo: Any = None
        hi: Any = None
        for chunk in chunks:
            f = self._flat(chunk)
            n += len(f)
            s1, s2 = s1 + f.sum(0), s2 + (f * f).sum(0)
            lo = f.min(0) if lo is None else np.minimum(lo, f.min(0))
            hi = f.max(0) if hi is None else np.maximum(hi, f.max(0))
        if self.scaling == "standard":
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean * mean, 0))
            self.offset = mean.tolist()
            self.scale = np.where(std > 0, 1 / np.where(std > 0, std, 1), 1.0).tolist()
        elif self.scaling == "minmax":
            span = hi - lo
            self.offset = lo.tolist()
            self.scale = np.where(span > 0, 1 / np.where(span > 0, span, 1), 1.0).tolist()

    def _flat(self, x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1).astype(np.float64)
        x = x * self.rescale if self.rescale is not None else x
        return x + self.shift if self.shift else x

    def shape_raw(self, x: np.ndarray, origin: str) -> np.ndarray:
        want = math.prod(self.input_shape)
        got = math.prod(x.shape[1:])
        if got != want:
            raise DataError(
                f"{origin}: each sample has {got} values (shape "
                f"{list(x.shape[1:])}) but model.input_shape {self.input_shape} "
                f"needs {want}"
            )
        return x.reshape((len(x),) + tuple(self.input_shape))

    def apply(self, x: np.ndarray, origin: str = "input") -> np.ndarray:
        """Raw samples -> model input in the engine's layout (channels first)."""
        x = self.shape_raw(np.asarray(x), origin)
        if self.input_dtype == "int64":
            return x.astype(np.int64)
        x = x.astype(np.float32)
        if self.rescale is not None:
            x = x * np.float32(self.rescale)
        if self.shift:
            x = x + np.float32(self.shift)
        if self.offset is not None and self.scale is not None:
            shape = (1,) + tuple(self.input_shape)
            x = (x - np.asarray(self.offset, np.float32).reshape(shape)) * np.asarray(
                self.scale, np.float32
            ).reshape(shape)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim >= 3:  # (N, ..., C) -> (N, C, ...) as a view: memory stays channels-last
            x = np.moveaxis(x, -1, 1)
        return x


@dataclass
class Splits:
    train: Dataset
    validation: Dataset | None
    test: Dataset | None


def check_finite(ds: Dataset, what: str) -> None:
    if isinstance(ds.x, StreamedImages):  # decoded 8-bit pixels: finite by construction
        return
    x = ds.x.reshape(len(ds.x), -1)
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            n = int(bad.any(1).sum())
            raise DataError(
                f"{ds.where(r)} ({what}), feature {c} is {x[r, c]}; {n} sample(s) "
                "hold NaN or Inf. Clean them first"
            )
    if np.issubdtype(ds.y.dtype, np.floating) and not np.isfinite(ds.y).all():
        r = int(np.argwhere(~np.isfinite(ds.y.reshape(len(ds.y), -1)))[0][0])
        raise DataError(f"{ds.where(r)} ({what}): the target is not finite")


def classification_targets(
    ds: Dataset, n_classes: int, what: str, loss: str, flat_output: bool = True
) -> Dataset:
    """Labels checked against the loss before training (exit 3, naming the shapes):
    categorical_crossentropy takes one-hot or probability rows (N, classes), as Keras does,
    or integer classes; sparse_categorical_crossentropy takes integer classes. One-hot
    integer rows become float32 probabilities."""
    y, origin = ds.y, ds.origin.split(" (")[0]
    if flat_output and y.ndim == 2 and y.shape[1] != 1:
        if loss != "categorical_crossentropy":
            raise DataError(
                f"{origin} ({what}): labels of shape {tuple(y.shape)} look one-hot, but "
                f"{loss} takes integer class ids of shape ({len(y)},); use loss: "
                "categorical_crossentropy, or give class ids"
            )
        if y.shape[1] != n_classes:
            raise DataError(
                f"{origin} ({what}): one-hot labels of shape {tuple(y.shape)} but the model "
                f"has {n_classes} output classes (shape ({len(y)}, {n_classes}) expected)"
            )
        rows = y.astype(np.float64)
        bad = (rows < 0).any(1) | (np.abs(rows.sum(1) - 1) > 1e-3)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise DataError(
                f"{ds.where(i)} ({what}): the label row {rows[i].tolist()[:12]} is not one-hot "
                "or a probability distribution (non-negative, summing to 1)"
            )
        return replace(ds, y=y.astype(np.float32))
    if np.issubdtype(y.dtype, np.floating) and y.ndim == 1:
        raise DataError(
            f"{origin} ({what}): labels are floats of shape {tuple(y.shape)}; class labels "
            "are integers 0..C-1 (or one-hot rows with categorical_crossentropy)"
        )
    check_labels(ds, n_classes, what)
    return ds


def check_labels(ds: Dataset, n_classes: int, what: str) -> None:
    if ds.y.ndim != 1:
        if np.issubdtype(ds.y.dtype, np.integer):  # a class per step (language models)
            bad = (ds.y < 0) | (ds.y >= n_classes)
            if bad.any():
                i, j = (int(v) for v in np.argwhere(bad)[0][:2])
                raise DataError(
                    f"{ds.where(i)} ({what}), step {j}: token id {int(ds.y[i, j])} is outside "
                    f"the model's {n_classes} output classes; set the last layer's units to "
                    "the vocabulary size (data.train.vocabulary_size)"
                )
        return
    bad = (ds.y < 0) | (ds.y >= n_classes)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        label = ds.classes[ds.y[i]] if 0 <= ds.y[i] < len(ds.classes) else ds.y[i]
        raise DataError(
            f"{ds.where(i)} ({what}) has label {label}, outside the model's "
            f"{n_classes} classes (0..{n_classes - 1}); fix the label or the "
            "last layer's units"
        )


def _take(ds: Dataset, idx: np.ndarray, what: str, overlap: int | None = None) -> Dataset:
    lines = ds.lines[idx] if ds.lines is not None else None
    x = ds.x.subset(idx) if isinstance(ds.x, StreamedImages) else ds.x[idx]
    paths = [ds.paths[i] for i in idx] if ds.paths is not None else None
    groups = ds.groups[idx] if ds.groups is not None else None
    index = (ds.index if ds.index is not None else np.arange(len(ds.y)))[idx]
    base = ds.origin.split(" (")[0]
    return replace(
        ds,
        x=x,
        y=ds.y[idx],
        origin=f"{base} ({what} split)",
        lines=lines,
        overlap=overlap,
        paths=paths,
        index=index,
        groups=groups,
    )


def split(ds: Dataset, fraction: float, seed: int, what: str) -> tuple[Dataset, Dataset | None]:
    if fraction <= 0:
        return ds, None
    n = int(round(len(ds.x) * fraction))
    if ds.overlap is not None:  # a text: hold out its end, no window shared across the cut
        keep = len(ds.x) - n - ds.overlap
        if n == 0 or keep <= 0:
            raise DataError(
                f"{ds.origin}: a {what} split of {fraction} leaves an empty split "
                f"({len(ds.x)} windows, {ds.overlap} dropped at the cut); use a longer text"
            )
        cut = np.arange(len(ds.x))
        return (
            _take(ds, cut[:keep], "train", ds.overlap),
            _take(ds, cut[len(ds.x) - n :], what, ds.overlap),
        )
    if ds.groups is not None:  # whole groups (speakers) only: no voice in two splits
        return _split_groups(ds, n, seed, what, fraction)
    order = np.random.default_rng(seed).permutation(len(ds.x))
    if n == 0 or n == len(ds.x):
        raise DataError(
            f"{ds.origin}: a {what} split of {fraction} leaves an empty split ({len(ds.x)} samples)"
        )
    return _take(ds, np.sort(order[n:]), "train"), _take(ds, np.sort(order[:n]), what)


def _split_groups(
    ds: Dataset, n: int, seed: int, what: str, fraction: float
) -> tuple[Dataset, Dataset]:
    """Hold out whole groups, in a seeded order, until they hold at least n samples."""
    assert ds.groups is not None
    names = np.unique(ds.groups)
    order = names[np.random.default_rng(seed).permutation(len(names))]
    counts = {g: int(c) for g, c in zip(*np.unique(ds.groups, return_counts=True))}
    held, total = [], 0
    for g in order:
        if total >= max(n, 1):
            break
        held.append(g)
        total += counts[g]
    if len(held) == len(names):
        raise DataError(
            f"{ds.origin}: a {what} split of {fraction} by group takes all {len(names)} "
            "groups; use a smaller split or more groups (speakers)"
        )
    mask = np.isin(ds.groups, held)
    return _take(ds, np.flatnonzero(~mask), "train"), _take(ds, np.flatnonzero(mask), what)


def load_splits(spec: Any, base_dir: str) -> Splits:
    d = spec.data
    shape = tuple(spec.model.input_shape)
    load = lambda src: load_source(
        src,
        base_dir,
        spec.task,
        shape,
        d.max_in_memory_mb,  # noqa
        d.workers,
    )
    train = load(d.train)
    if train.vocabulary is not None:  # other splits are encoded with the training vocabulary
        load = lambda src: load_source(  # noqa: E731
            src, base_dir, spec.task, shape, vocabulary=train.vocabulary
        )
    test = load(d.test) if d.test else None
    if test is None and d.test_split:
        train, test = split(train, d.test_split, spec.seed + 1, "test")
    val = load(d.validation) if d.validation else None
    if val is None and d.validation_split:
        train, val = split(train, d.validation_split, spec.seed + 2, "validation")
    for ds, what in ((train, "training"), (val, "validation"), (test, "test")):
        if ds is not None:
            if len(ds.x) == 0:
                raise DataError(f"{ds.origin}: the {what} split is empty")
            check_finite(ds, what)
    return Splits(train, val, test)


def make_preprocessor(spec: Any, train: Dataset) -> Preprocessor:
    d = spec.data
    pre = Preprocessor(
        list(spec.model.input_shape),
        spec.model.input_dtype,
        d.rescale,
        d.scaling,
        shift=d.offset,
        classes=list(train.classes),
    )
    if d.train.type == "text":  # a language model: its classes are the vocabulary
        pre.text = {"level": d.train.level, "lowercase": d.train.lowercase}
    elif d.train.type == "text_folder":
        pre.text = {
            "level": d.train.level,
            "lowercase": d.train.lowercase,
            "vocabulary": train.vocabulary,
        }
    if spec.model.input_dtype == "float32" and isinstance(train.x, StreamedImages):
        if d.scaling != "none":  # fitted from one streamed pass over the training split
            pre.fit_stream(train.x.iter_chunks())
    elif spec.model.input_dtype == "float32":
        pre.fit(pre.shape_raw(train.x, train.origin))
    return pre


def model_input(x: Any, pre: Preprocessor, origin: str, device: Any) -> Any:
    """Raw samples -> what the model reads: one tensor on the device, or for streamed images
    an object whose indexing decodes, preprocesses and moves a batch."""
    import torch

    if isinstance(x, StreamedImages):
        from .stream import StreamedInputs

        return StreamedInputs(x, pre, device)
    return torch.from_numpy(pre.apply(x, origin)).to(device)


def config_dir(config_path: str | None) -> str:
    return os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()
