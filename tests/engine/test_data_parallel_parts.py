"""The pieces of data-parallel training that need no second process: synchronised batch
norm's math (against torch under autograd; with one process the all-reduces are no-ops),
masks and augmentation drawn for the global batch, and the batch and buffer splits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from dltrain.engine import Tensor
from dltrain.engine import functional as F
from dltrain.engine.distributed import SINGLE, RowsGenerator, World, bernoulli_rows
from dltrain.engine.train.augment import augment
from dltrain.engine.train.replicas import local_rows
from dltrain.spec.data import AugmentSpec
from tests.oracle import check

D = torch.float64


@pytest.mark.parametrize("shape", [(7, 13), (4, 3, 5, 7)], ids=str)
def test_sync_batch_norm_is_batch_norm(shape):
    C = shape[1]
    stats = {}

    def eng(x, w, b):
        rm, rv = torch.zeros(C, dtype=D) + 0.3, torch.ones(C, dtype=D) * 1.7
        stats["e"] = (rm, rv)
        return F.sync_batch_norm(x, rm, rv, w, b, 0.2, 1e-3, SINGLE, x.shape[0])

    def ref(x, w, b):
        rm, rv = torch.zeros(C, dtype=D) + 0.3, torch.ones(C, dtype=D) * 1.7
        stats["t"] = (rm, rv)
        return TF.batch_norm(x, rm, rv, w, b, training=True, momentum=0.2, eps=1e-3)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=D) * 2 + 1
    check(eng, ref, x, torch.randn(C, generator=g, dtype=D), torch.randn(C, generator=g, dtype=D))
    for a, b in zip(stats["e"], stats["t"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_masks_for_rows_of_the_global_batch_are_the_global_masks():
    full = bernoulli_rows(
        (10, 3, 4), 0.6, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(5)
    )
    parts = []
    for off, n in [local_rows(10, r, 3) for r in range(3)]:
        gen = RowsGenerator(torch.Generator().manual_seed(5), off, 10)
        parts.append(bernoulli_rows((n, 3, 4), 0.6, torch.float32, torch.device("cpu"), gen))
    assert torch.equal(torch.cat(parts), full)
    # dropout's mask for rows 4:8 of a batch of 8 is rows 4:8 of the whole batch's mask
    whole = F.dropout(Tensor(torch.ones(8, 6)), 0.5, True, torch.Generator().manual_seed(1))
    rows = RowsGenerator(torch.Generator().manual_seed(1), 4, 8)
    assert torch.equal(F.dropout(Tensor(torch.ones(4, 6)), 0.5, True, rows).data, whole.data[4:])


def test_augmentation_of_rows_is_the_global_batch_augmentation():
    aug = AugmentSpec(random_flip="horizontal_and_vertical", random_crop_padding=2)
    x = torch.randn(9, 2, 6, 5, generator=torch.Generator().manual_seed(0))
    full = augment(x, aug, torch.Generator().manual_seed(7))
    parts = [
        augment(x[off : off + n], aug, torch.Generator().manual_seed(7), (off, 9))
        for off, n in (local_rows(9, r, 2) for r in range(2))
    ]
    assert torch.equal(torch.cat(parts), full)


@pytest.mark.parametrize("total,size", [(32, 2), (7, 3), (1, 2), (0, 4), (33, 4)])
def test_local_rows_split_the_batch(total, size):
    rows = [local_rows(total, r, size) for r in range(size)]
    assert sum(n for _, n in rows) == total
    assert [off for off, _ in rows] == [sum(n for _, n in rows[:r]) for r in range(size)]
    assert max(n for _, n in rows) - min(n for _, n in rows) <= 1


@pytest.mark.parametrize("n,size", [(10, 3), (9, 3), (2, 4), (1000, 7)])
def test_shards_cover_the_flat_buffer_once(n, size):
    seen = []
    for r in range(size):
        lo, hi, chunk = World(rank=r, size=size).shard(n)
        assert chunk * size >= n and hi - lo <= chunk
        seen += range(lo, hi)
    assert seen == list(range(n))
