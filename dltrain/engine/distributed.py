"""Data parallelism on torch.distributed: the process group and the few collectives the
trainer uses (gloo on CPU, NCCL on GPUs; torchrun's environment names the peers).

One process is the same `World` with size 1: every method is then a no-op, so the trainer
has one code path. Collectives that fail because a peer is gone raise DistributedError.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import DistributedError


class World:
    """This process's place among the data-parallel processes."""

    def __init__(
        self,
        rank: int = 0,
        size: int = 1,
        local_rank: int = 0,
        local_size: int = 1,
        backend: str | None = None,
    ) -> None:
        self.rank, self.size = rank, size
        self.local_rank, self.local_size = local_rank, local_size
        self.backend = backend

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size} ({self.backend})"

    # -- collectives (no-ops in one process) ------------------------------------------------
    def all_reduce_(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.active:
            import torch.distributed as dist

            red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
            with self._guard("all-reduce"):
                dist.all_reduce(t, op=red[op])
        return t

    def shard(self, n: int) -> tuple[int, int, int]:
        """(lo, hi, chunk): this rank's slice of n elements in equal chunks (the last ones
        shorter or empty), as reduce-scatter and all-gather need them."""
        chunk = -(-n // self.size)
        lo = min(self.rank * chunk, n)
        return lo, min(lo + chunk, n), chunk

    def reduce_scatter_(self, full: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
        """Sum `full` over ranks and return this rank's chunk (`chunk` long; `padded`, of
        `chunk * size`, is the scratch that holds `full` followed by zeros)."""
        if not self.active:
            return full
        import torch.distributed as dist

        _, _, chunk = self.shard(full.numel())
        padded[: full.numel()].copy_(full)
        fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        out = torch.empty(chunk, dtype=full.dtype, device=full.device)
        with self._guard("reduce-scatter"):
            fn(out, padded)
        return out

    def all_gather_(self, full: torch.Tensor, padded: torch.Tensor) -> None:
        """Every rank's chunk of `full` (its own from `full` itself) into `full`."""
        if not self.active:
            return
        import torch.distributed as dist

        lo, hi, chunk = self.shard(full.numel())
        mine = torch.zeros(chunk, dtype=full.dtype, device=full.device)
        mine[: hi - lo].copy_(full[lo:hi])
        fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        with self._guard("all-gather"):
            fn(padded, mine)
        full.copy_(padded[: full.numel()])

    def check_same(self, tensors: dict[str, torch.Tensor], what: str, step: int) -> None:
        """Stop with an error when the tensors are not bit-identical on every rank."""
        if not self.active:
            return
        digest = hashlib.sha256()
        for k in sorted(tensors):
            digest.update(k.encode())
            digest.update(
                tensors[k].detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
            )
        mine = int.from_bytes(digest.digest()[:7], "big")
        dev = self.device()
        lo = torch.tensor([mine], dtype=torch.int64, device=dev)
        hi = lo.clone()
        self.all_reduce_(lo, "min")
        self.all_reduce_(hi, "max")
        if int(lo.item()) != int(hi.item()):
            raise DistributedError(
                f"the processes' {what} differ at step {step} ({self.describe()}); a "
                "data-parallel run must hold identical copies. This is a bug (or "
                "non-deterministic hardware): please report it with the config"
            )

    def device(self) -> torch.device:
        return (
            torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        )

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as e:  # gloo/NCCL: a peer closed its connection or timed out
            raise DistributedError(
                f"{what} failed on {self.describe()}: another process of the job is gone or "
                f"not answering ({str(e).splitlines()[0][:200]}). Rerun with --resume to "
                "continue from the last checkpoint"
            ) from None

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


SINGLE = World()


def launched_size() -> int:
    """WORLD_SIZE as torchrun (or `dltrain train --nproc`) set it; 1 when not launched."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(int(raw), 1)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={raw!r} is not a number of processes") from None


def join(device_choice: str, timeout_s: int) -> tuple[World, torch.device]:
    """Join the process group torchrun's environment describes; the device this rank trains
    on: one GPU per local rank (NCCL) when `auto`/`cuda` finds GPUs, else the CPU (gloo),
    with the cores split between the local ranks."""
    env = os.environ
    size = launched_size()
    if size == 1:
        return SINGLE, torch.device("cpu")
    try:
        rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
        local_size = int(env.get("LOCAL_WORLD_SIZE", size))
    except (KeyError, ValueError) as e:
        raise DistributedError(
            f"WORLD_SIZE is {size} but {e} is missing or not a number; start the processes "
            "with `dltrain train --nproc N` or torchrun"
        ) from None
    import torch.distributed as dist

    use_cuda = device_choice in ("auto", "cuda") and torch.cuda.is_available()
    if device_choice == "cuda" and not use_cuda:
        raise DistributedError("train.device is 'cuda' but this machine has no CUDA device")
    if use_cuda and local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"local rank {local_rank} needs GPU {local_rank}, but this machine has "
            f"{torch.cuda.device_count()}; start at most that many processes per machine"
        )
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        if not env.get("DLTRAIN_THREADS"):
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_size, 1)))
    where = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    except (RuntimeError, ValueError, OSError) as e:
        raise DistributedError(
            f"rank {rank} could not join the process group at {where} ({backend}): "
            f"{str(e).splitlines()[0][:300]}. Check MASTER_ADDR/MASTER_PORT (or torchrun's "
            "--rdzv-endpoint) and that the port is free and reachable"
        ) from None
    return World(rank, size, local_rank, local_size, backend), device


class RowsGenerator:
    """A dropout/augmentation generator for one rank's rows of the global batch: draws
    for all `total` rows and keeps `offset:offset + n`, so masks equal one process's."""

    def __init__(self, generator: torch.Generator, offset: int, total: int) -> None:
        self.generator, self.offset, self.total = generator, offset, total


def bernoulli_rows(
    shape: tuple[int, ...],
    keep: float,
    dtype: torch.dtype,
    device: torch.device,
    gen: torch.Generator | RowsGenerator | None,
) -> torch.Tensor:
    """A 0/1 tensor of `shape` (rows first), 1 with probability `keep`: uniform float32
    draws compared in place (u < keep), a third faster than `bernoulli_` on CPU and the same
    masks in every dtype."""
    if isinstance(gen, RowsGenerator):
        full = torch.rand((gen.total, *shape[1:]), generator=gen.generator, device=device)
        mask = full.lt_(keep)[gen.offset : gen.offset + shape[0]]
        return mask.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    mask = torch.rand(shape, generator=gen, device=device).lt_(keep)
    return mask if dtype == torch.float32 else mask.to(dtype)


def normal_rows(
    shape: tuple[int, ...], gen: torch.Generator | RowsGenerator | None, device: torch.device
) -> torch.Tensor:
    """Standard normal draws of `shape` (rows first), a rank's rows of the global batch's."""
    if isinstance(gen, RowsGenerator):
        full = torch.randn((gen.total, *shape[1:]), generator=gen.generator, device=device)
        return full[gen.offset : gen.offset + shape[0]]
    return torch.randn(shape, generator=gen, device=device)


def uniform_rows(
    shape: tuple[int, ...], gen: torch.Generator | RowsGenerator | None, device: torch.device
) -> torch.Tensor:
    """Uniform [0, 1) draws of `shape` (rows first), a rank's rows of the global batch's."""
    if isinstance(gen, RowsGenerator):
        full = torch.rand((gen.total, *shape[1:]), generator=gen.generator, device=device)
        return full[gen.offset : gen.offset + shape[0]]
    return torch.rand(shape, generator=gen, device=device)
