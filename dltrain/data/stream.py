"""Image and audio folders too large for memory: keep the file paths, decode batches in
worker processes. Decoding is deterministic, so a streamed run trains exactly like an
in-memory one.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch

from .images import problem, raise_bad, read_image, scan_image_folder

_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """One pool per worker count, shared by every streamed split of the process."""
    if workers not in _POOLS:
        # spawn: the workers never inherit torch's threads or the trainer's state
        _POOLS[workers] = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn")
        )
    return _POOLS[workers]


Reader = Callable[[str], np.ndarray]  # a picklable path -> sample (a functools.partial)


def decode(
    paths: list[str], input_shape: tuple[int, ...], workers: int, reader: Reader | None = None
) -> np.ndarray:
    """Samples (N, *input_shape) float32, decoded in the pool, in order: images (0..255)
    unless `reader` reads something else (audio clips)."""
    if not paths:
        return np.zeros((0, *input_shape), np.float32)
    chunk = max(1, len(paths) // (4 * workers))
    read = reader or partial(read_image, input_shape=input_shape)
    out = np.stack(list(_pool(workers).map(read, paths, chunksize=chunk)))
    return out.reshape(len(paths), *input_shape)


def stream_image_folder(
    root: str, input_shape: tuple[int, ...], workers: int
) -> tuple[StreamedImages, np.ndarray, list[str]]:
    """Scan the folder and check every image in the workers (every bad file is listed up
    front, as for in-memory folders), keeping only the paths."""
    paths, labels, classes = scan_image_folder(root, input_shape)
    check = partial(problem, input_shape=input_shape)
    bad = [p for p in _pool(workers).map(check, paths, chunksize=max(1, len(paths) // 64)) if p]
    raise_bad(root, bad)
    return StreamedImages(np.asarray(paths), input_shape, workers), labels, classes


def stream_audio_folder(
    root: str,
    paths: list[str],
    input_shape: tuple[int, ...],
    workers: int,
    reader: Reader,
    check: Callable[[str], str | None],
) -> StreamedImages:
    """Audio clips by path, each checked up front in the workers (every bad file listed)."""
    from .audio import raise_bad as raise_bad_audio

    bad = [p for p in _pool(workers).map(check, paths, chunksize=max(1, len(paths) // 64)) if p]
    raise_bad_audio(root, bad)
    return StreamedImages(np.asarray(paths), input_shape, workers, reader)


class StreamedImages:
    """Raw samples by path (images, or audio clips with their `reader`): `subset` selects
    lazily; `iter_chunks` decodes in pieces."""

    def __init__(
        self,
        paths: np.ndarray,
        input_shape: tuple[int, ...],
        workers: int,
        reader: Reader | None = None,
    ) -> None:
        self.paths = paths
        self.input_shape = tuple(input_shape)
        self.workers = workers
        self.reader = reader

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.input_shape)

    def subset(self, idx: np.ndarray) -> StreamedImages:
        return StreamedImages(self.paths[idx], self.input_shape, self.workers, self.reader)

    def iter_chunks(self, size: int = 512):
        for i in range(0, len(self.paths), size):
            yield decode(
                list(self.paths[i : i + size]), self.input_shape, self.workers, self.reader
            )


class StreamedInputs:
    """Model-ready batches on demand: indexing decodes, preprocesses and moves to device."""

    def __init__(self, images: StreamedImages, pre: Any, device: torch.device) -> None:
        self.images, self.pre, self.device = images, pre, device

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        paths = self.images.paths[idx]
        im = self.images
        raw = decode(list(np.atleast_1d(paths)), im.input_shape, im.workers, im.reader)
        return torch.from_numpy(self.pre.apply(raw, "streamed samples")).to(self.device)
