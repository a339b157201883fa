"""Image folders: one subfolder per class, read with Pillow and resized to the model input."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .files import regular_files

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read_image(path: str, input_shape: tuple[int, ...]) -> np.ndarray:
    """One image as float32 (H, W, C) in 0..255, resized to input_shape. Pillow's
    decompression-bomb limit stays on."""
    h, w, c = input_shape
    with Image.open(path) as f:
        im = f.convert("L" if c == 1 else "RGB")
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.float32)
    return arr.reshape(h, w, c)


def scan_image_folder(
    root: str, input_shape: tuple[int, ...]
) -> tuple[list[str], np.ndarray, list[str]]:
    """(image paths, labels, class names) of a folder with one subfolder per class."""
    if len(input_shape) != 3 or input_shape[2] not in (1, 3):
        raise DataError(
            f"{root}: image folders need model.input_shape [height, width, 1 or 3],"
            f" got {list(input_shape)}"
        )
    if not os.path.isdir(root):
        raise DataError(f"image folder not found: {root}")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected one folder per class)")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        for p in regular_files(folder, IMAGE_EXTENSIONS):
            paths.append(p)
            labels.append(label)
    if not paths:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders")
    return paths, np.asarray(labels, dtype=np.int64), classes


def try_read(path: str, input_shape: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
    """(image, None), or (None, why not) for the list of bad files."""
    try:
        return read_image(path, input_shape), None
    except Image.DecompressionBombError as e:
        return None, f"  {path}: refused, too many pixels ({e})"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return None, f"  {path}: {type(e).__name__}: {e}"


def problem(path: str, input_shape: tuple[int, ...]) -> str | None:
    return try_read(path, input_shape)[1]


def raise_bad(root: str, bad: list[str]) -> None:
    if bad:
        raise DataError(
            f"{root}: {len(bad)} image(s) cannot be read; fix or remove them:\n" + "\n".join(bad)
        )


def read_image_folder(
    root: str, input_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    paths, ys, classes = scan_image_folder(root, input_shape)
    read = [try_read(p, input_shape) for p in paths]
    raise_bad(root, [why for _, why in read if why])
    return np.stack([img for img, _ in read if img is not None]), ys, classes
