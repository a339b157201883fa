"""Keras weight files as data: Keras 3's `.weights.h5`, `.keras` archives (their
model.weights.h5 member) and Keras 2's `.h5` (what `keras.applications` ships). Read with
h5py and zipfile; nothing in them is executed and only numeric arrays are taken. Each layer's
arrays, in Keras's `get_weights()` order, are converted by its dltrain unit's `from_keras`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.checkpoint_read import max_file_bytes
from ..engine.model import Model
from ..errors import ConfigError

SUFFIXES = (".h5", ".hdf5", ".keras")
# Keras 3 nests some layers' variables in sub-objects; get_weights() lists them in this order
_NESTED = ("cell", "forward_layer", "backward_layer") + tuple(
    f"{p}_dense" for p in ("query", "key", "value", "output")
)
MAX_ARRAYS = 100_000


def is_keras_file(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def read_keras_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its arrays in get_weights() order."""
    import h5py

    limit = max_file_bytes()
    try:
        size = path.stat().st_size
        if size > limit:
            raise ConfigError(f"{path} is {size} bytes, more than half this machine's memory")
        if not path.is_file():
            raise ConfigError(f"{path} is not a regular file")
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as z:
                info = z.getinfo("model.weights.h5")
                if info.file_size > limit:
                    raise ConfigError(f"{path}: model.weights.h5 is {info.file_size} bytes")
                data = io.BytesIO(z.read(info))
            with h5py.File(data, "r") as f:
                return _keras3(f, path)
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "layer_names" in f.get("model_weights", f).attrs:
                return _keras2(f.get("model_weights", f), path)
            return _keras3(f, path)
    except KeyError as e:
        raise ConfigError(f"{path}: not a Keras weights file ({e})") from None
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise ConfigError(f"{path}: cannot read it as Keras weights ({e})") from None


def _array(ds: Any, path: Path) -> np.ndarray:
    import h5py

    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
        raise ConfigError(f"{path}: {getattr(ds, 'name', ds)} is not a numeric array")
    return np.asarray(ds[()], dtype=np.float32)


def _keras3(f: Any, path: Path) -> dict[str, list[np.ndarray]]:
    """`layers/<path>/vars/<i>`, the layer's name in the vars group's `name` attribute."""
    out: dict[str, list[np.ndarray]] = {}
    layers = f["layers"]
    count = 0

    def collect(group: Any) -> list[np.ndarray]:
        nonlocal count
        arrays: list[np.ndarray] = []
        if "vars" in group:
            v = group["vars"]
            keys = sorted((k for k in v if k.isdigit()), key=int)
            count += len(keys)
            if count > MAX_ARRAYS:
                raise ConfigError(f"{path}: more than {MAX_ARRAYS} arrays")
            arrays += [_array(v[k], path) for k in keys]
        subs = [k for k in group if k != "vars"]
        for k in sorted(subs, key=lambda k: (_NESTED.index(k) if k in _NESTED else 99, k)):
            arrays += collect(group[k])
        return arrays

    for key in layers:
        g = layers[key]
        name = g["vars"].attrs.get("name", key) if "vars" in g else key
        out[str(name.decode() if isinstance(name, bytes) else name)] = collect(g)
    return out


def _keras2(f: Any, path: Path) -> dict[str, list[np.ndarray]]:
    """Keras 2's HDF5: `layer_names`, and each layer's `weight_names` in order."""

    def names(attr: Any) -> list[str]:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in attr]

    out: dict[str, list[np.ndarray]] = {}
    layer_names = names(f.attrs["layer_names"])
    if len(layer_names) > MAX_ARRAYS:
        raise ConfigError(f"{path}: more than {MAX_ARRAYS} layers")
    for layer in layer_names:
        g = f[layer]
        out[layer] = [_array(g[w], path) for w in names(g.attrs.get("weight_names", []))]
    return out


def keras_tensors(path: Path, model: Model, where: str) -> dict[str, torch.Tensor]:
    """The file's weights as `<layer>.<weight>` tensors in dltrain's layouts, for every
    layer of the model the file names (other file entries keep their Keras names, with
    /<index>, so a report can list them as unused)."""
    by_name = read_keras_weights(path)
    out: dict[str, torch.Tensor] = {}
    layers = {layer.name: layer for layer in model.layers}
    problems = []
    for name, arrays in by_name.items():
        layer = layers.get(name)
        if layer is None or not (layer.params or layer.buffers):
            for i, a in enumerate(arrays):
                out[f"{name}.keras/{i}"] = torch.from_numpy(a)
            continue
        try:
            converted = layer.from_keras(arrays)
        except ValueError as e:
            problems.append(str(e))
            continue
        for k, a in converted.items():
            out[f"{name}.{k}"] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if problems:
        raise ConfigError("\n".join(f"{where}: {path}: {p}" for p in problems))
    return out
