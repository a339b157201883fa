"""Text for language models: tokens (characters or words), a vocabulary fitted on the
training text, and windows of token ids whose targets are the next token at every step.

Ids follow Keras's TextVectorization: 0 is padding, 1 the unknown token, then the training
text's tokens from most to least frequent (ties in code-point order), up to
`vocabulary_size`.
"""

from __future__ import annotations

import os
import re
from collections import Counter

import numpy as np

from ..errors import DataError
from .files import check_regular, regular_files

PAD, UNK = "", "[UNK]"
WORD = re.compile(r"\w+|[^\w\s]")
NO_SPACE_BEFORE = re.compile(r"\s+([.,;:!?)\]}'])")


def read_text(path: str, allow_empty: bool = False) -> str:
    if os.path.exists(path):
        check_regular(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check data.*.path") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); re-save the file "
            "as UTF-8"
        ) from None
    if not text.strip() and not allow_empty:
        raise DataError(f"{path}: the text is empty")
    return text


def tokenize(text: str, level: str, lowercase: bool = False) -> list[str]:
    if lowercase:
        text = text.lower()
    return list(text) if level == "char" else WORD.findall(text)


def build_vocabulary(tokens: list[str], size: int) -> list[str]:
    counts = Counter(tokens)
    ordered = sorted(counts, key=lambda t: (-counts[t], t))
    return [PAD, UNK] + ordered[: max(size - 2, 0)]


def encode(tokens: list[str], vocabulary: list[str]) -> np.ndarray:
    index = {t: i for i, t in enumerate(vocabulary) if i >= 2}
    return np.fromiter((index.get(t, 1) for t in tokens), np.int64, len(tokens))


def decode(ids: list[int], vocabulary: list[str], level: str) -> str:
    toks = [vocabulary[i] if 0 <= i < len(vocabulary) else UNK for i in ids if i != 0]
    if level == "char":
        return "".join(toks)
    return NO_SPACE_BEFORE.sub(r"\1", " ".join(toks))


def windows(ids: np.ndarray, steps: int, stride: int, origin: str) -> tuple[np.ndarray, ...]:
    """x[i] = ids[s : s + steps], y[i] = ids[s + 1 : s + steps + 1] for s = 0, stride, ..."""
    n = (len(ids) - 1 - steps) // stride + 1
    if len(ids) < steps + 1:
        raise DataError(
            f"{origin}: {len(ids)} tokens, fewer than one window of {steps} inputs and the "
            "next token; use a longer text or a shorter model.input_shape"
        )
    idx = (np.arange(n) * stride)[:, None] + np.arange(steps)
    return ids[idx], ids[idx + 1]


def read_text_folder(root: str) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """(texts, file paths, labels, class names) of a folder with one subfolder per class."""
    import os

    if not os.path.isdir(root):
        raise DataError(f"text folder not found: {root}")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected one folder per class)")
    texts, paths, labels = [], [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        for path in regular_files(folder, (".txt",)):
            texts.append(read_text(path, allow_empty=True))
            paths.append(path)
            labels.append(label)
    if not texts:
        raise DataError(f"{root}: no .txt files in the class folders")
    return texts, paths, np.asarray(labels, dtype=np.int64), classes


def encode_documents(
    texts: list[str], vocabulary: list[str], steps: int, level: str, lowercase: bool
) -> np.ndarray:
    """(N, steps) token ids: each text's first `steps` tokens, padded with 0 after (as
    TextVectorization's output_sequence_length does)."""
    out = np.zeros((len(texts), steps), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = encode(tokenize(text, level, lowercase)[:steps], vocabulary)
        out[i, : len(ids)] = ids
    return out
