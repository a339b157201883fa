"""`evaluate` and `predict` on a verified checkpoint."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.inputs import read_inputs
from ..data.prepare import check_finite, classification_targets, load_splits, model_input
from ..data.sources import Dataset, numeric, read_npz
from ..engine.train.losses import build_loss
from ..engine.train.metrics import MetricState
from ..engine.train.trainer import evaluate_model
from ..errors import ConfigError, DataError
from ..fsutil import atomic_write_bytes, npy_bytes
from .inference import load_checkpoint, predict_array


@dataclass
class EvalResult:
    checkpoint: str
    split: str
    n: int
    metrics: dict[str, float]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)


def _dataset(loaded: Any, which: str) -> tuple[Dataset, str]:
    spec = loaded.spec
    if which.endswith(".npz"):
        arrays = read_npz(which)
        if "x" not in arrays or "y" not in arrays:
            raise DataError(f"{which}: needs arrays 'x' and 'y' (has {', '.join(arrays)})")
        x, y = numeric(arrays["x"], which, "x"), numeric(arrays["y"], which, "y")
        y = y.astype(np.int64 if spec.task == "classification" else np.float32)
        return Dataset(x, y, loaded.pre.classes, which), which
    if which not in ("test", "validation", "train"):
        return _like_training(loaded, which), which
    splits = load_splits(spec, loaded.state.get("config_dir") or os.getcwd())
    order = {"test": ["test", "validation"], "validation": ["validation"], "train": ["train"]}
    for name in order[which]:
        ds = getattr(splits, name)
        if ds is not None:
            return ds, name
    raise DataError(
        f"the run has no {which} split (set data.test or data.test_split, or "
        "data.validation / validation_split)"
    )


def _like_training(loaded: Any, path: str) -> Dataset:
    """A file or folder of the training source's kind (its label column, its text
    vocabulary), with its class names mapped onto the run's."""
    from ..data.sources import load_source

    spec, pre = loaded.spec, loaded.pre
    src = spec.data.train
    if "path" not in type(src).model_fields or src.type == "text":
        raise DataError(
            f"--data {path}: this run trained on {src.type} data; use test, validation, train "
            "or an .npz file with arrays x and y"
        )
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file or folder")
    vocab = (pre.text or {}).get("vocabulary")
    ds = load_source(
        src.model_copy(update={"path": os.path.abspath(path)}),
        os.getcwd(),
        spec.task,
        tuple(spec.model.input_shape),
        vocabulary=vocab,
    )
    if spec.task == "classification" and ds.classes and pre.classes and ds.classes != pre.classes:
        unknown = [c for c in ds.classes if c not in pre.classes]
        if unknown:
            raise DataError(
                f"--data {path}: class(es) {', '.join(map(str, unknown[:5]))} are not among the "
                f"run's classes ({', '.join(map(str, pre.classes[:10]))})"
            )
        remap = np.array([pre.classes.index(c) for c in ds.classes], dtype=np.int64)
        ds.y = remap[ds.y]
        ds.classes = list(pre.classes)
    return ds


def evaluate_checkpoint(path: str, which: str = "test") -> EvalResult:
    loaded = load_checkpoint(path)
    spec, model, pre = loaded.spec, loaded.model, loaded.pre
    if spec.task == "gan":
        raise ConfigError(
            f"{loaded.path}: a GAN has no labels to score; look at its samples with "
            f"`dltrain generate {path} -o samples.png` or in TensorBoard"
        )
    ds, split = _dataset(loaded, which)
    check_finite(ds, split)
    n_out = model.output_shape[0]
    if spec.task == "classification":
        ds = classification_targets(
            ds, max(n_out, 2), split, spec.loss.type, len(model.output_shape) == 1
        )
    x = model_input(ds.x, pre, ds.origin, torch.device("cpu"))
    y = torch.from_numpy(np.ascontiguousarray(ds.y))
    ms = MetricState(list(spec.metrics), spec.task, n_out, "cpu")
    metrics, ms, _ = evaluate_model(model, build_loss(spec, model), ms, x, y, 512)
    res = EvalResult(str(loaded.path), split, len(x), metrics)
    if spec.task == "classification" and ms.full and ds.y.ndim == 1:  # not per-token
        cm = ms.confusion_matrix().numpy()
        names = pre.classes if len(pre.classes) == len(cm) else [str(i) for i in range(len(cm))]
        res.class_names, res.confusion = names, cm.tolist()
        for i, name in enumerate(names):
            tp, pred, true = cm[i, i], cm[:, i].sum(), cm[i].sum()
            p = tp / pred if pred else 0.0
            r = tp / true if true else 0.0
            res.per_class.append(
                {
                    "class": name,
                    "precision": p,
                    "recall": r,
                    "f1": 2 * p * r / (p + r) if p + r else 0.0,
                    "support": int(true),
                }
            )
    return res


def predict_file(
    path: str,
    input_path: str,
    output: str | None,
    header: str = "auto",
    texts: list[str] | None = None,
    notes: list[str] | None = None,
) -> tuple[int, list[list[str]]]:
    """Predictions for the inputs at `input_path` ('-': standard input) or for `texts`,
    written to `output`, or without one returned as table rows (input, label,
    probability); returns their number and the rows. What was skipped goes to `notes`."""
    loaded = load_checkpoint(path)
    names: list[str] = []
    raw = read_inputs(input_path, loaded.spec, loaded.pre, header, texts, notes, names)
    probs = predict_array(loaded, raw, origin=input_path)
    classify = loaded.spec.task == "classification"
    class_names = loaded.pre.classes
    n_out = probs.shape[1] if probs.ndim == 2 else 1
    binary = n_out == 1
    labels = (
        ((probs[:, 0] > 0.5).astype(int) if binary else probs.reshape(len(probs), -1).argmax(1))
        if classify and probs.ndim == 2
        else None
    )

    def label(i: int) -> str:
        assert labels is not None
        lab = int(labels[i])
        return str(class_names[lab]) if lab < len(class_names) else str(lab)

    if output is None:  # a table: each input as the user named it (inside a folder: from it)
        rows = []
        inside = bool(names) and os.path.isdir(input_path)
        for i in range(len(probs)):
            who = str(i)
            if names:
                who = os.path.relpath(names[i], input_path) if inside else names[i]
            if labels is not None and binary:
                rows.append([who, label(i), f"{float(probs[i, 0]):.4f}", ""])
            elif labels is not None:
                order = np.argsort(-probs[i])
                p = float(probs[i, order[0]])
                runners = ", ".join(
                    f"{class_names[j] if j < len(class_names) else j} {probs[i, j]:.3f}"
                    for j in order[1:3]
                )
                rows.append([who, label(i), f"{p:.4f}", runners])
            else:
                rows.append([who, "", " ".join(f"{v:.4g}" for v in np.ravel(probs[i])[:8]), ""])
        return len(probs), rows
    low = output.lower()
    if low.endswith(".npy"):
        data = npy_bytes(probs)
    elif low.endswith(".csv"):
        s = io.StringIO()
        w = csv.writer(s)
        first = ["file"] if names else []
        if classify and labels is not None:
            cols = [
                f"p_{class_names[i] if i < len(class_names) else i}" for i in range(max(n_out, 1))
            ]
            w.writerow(first + ["label"] + cols)
            for i, row in enumerate(probs):
                w.writerow(([names[i]] if names else []) + [label(i)] + [f"{v:.6g}" for v in row])
        else:
            w.writerow(first + [f"prediction_{i}" for i in range(probs.shape[1])])
            for i, row in enumerate(probs):
                w.writerow(([names[i]] if names else []) + [f"{v:.6g}" for v in row])
        data = s.getvalue().encode()
    else:
        raise DataError(f"--output {output}: use a .npy or .csv file name")
    atomic_write_bytes(output, data)
    return len(probs), []
