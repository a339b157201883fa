"""Process settings for a training process: threads, and how freed memory is kept.

A training step allocates and frees the same large tensors (activations, their gradients)
every step. glibc's malloc serves blocks over its mmap threshold from fresh pages and
trims the heap's free top back to the kernel, so each step touches new pages: on the 2-core
CI machines the DCGAN generator's step took about 10,000 page faults (some 40 MB of zeroed
pages) and 97-106 ms. Told to keep freed memory for reuse (blocks up to 32 MB from the
heap, no trimming, the heap grown 64 MB at a time), the same step takes no page faults and
81 ms. The memory a process holds stays at its peak, as with PyTorch's CUDA caching
allocator. `DLTRAIN_MALLOC=default` leaves glibc's defaults (PyTorch's CPU performance
guide suggests jemalloc or tcmalloc for the same reason; a preloaded allocator is left
alone: these settings only reach glibc's)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed on 64-bit
TOP_PAD = 64 << 20
_DONE = {"kept": False}


def keep_freed_memory() -> bool:
    """Apply the malloc settings above (once, Linux with glibc); whether they took."""
    if _DONE["kept"]:
        return True
    if os.environ.get("DLTRAIN_MALLOC", "").lower() == "default" or sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    ok = all(
        mallopt(k, v) == 1
        for k, v in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, 1 << 62),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    _DONE["kept"] = ok
    return ok


def setup_training_process() -> None:
    """DLTRAIN_THREADS (torch's intra-op threads) and the malloc settings."""
    threads = os.environ.get("DLTRAIN_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    keep_freed_memory()
