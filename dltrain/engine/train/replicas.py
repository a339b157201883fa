"""The data-parallel side of a trainer (`dltrain train --nproc N`, torchrun): the global
batch's split, the one collective after backward (the flat gradient with the step's flags),
ZeRO-1's reduce-scatter and all-gather, the optimizer state gathered for a checkpoint and
sliced again on load, metric sums and BatchNormalization statistics reduced, and the
replica check. With one process every method is the identity or does nothing."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import torch

from ...errors import ConfigError
from ..distributed import World
from ..model import Model
from ..optim import Optimizer, clip_grad_value_, clip_spec_
from ..params import FlatParams
from .metrics import MetricState


def check_global_batch(batch_size: int, processes: int) -> None:
    if batch_size % processes:
        raise ConfigError(
            f"train.batch_size {batch_size} is the global batch and must split evenly over "
            f"the {processes} processes; use a multiple of {processes}"
        )


def local_rows(total: int, rank: int, size: int) -> tuple[int, int]:
    """(offset, count) of rank's part of a global batch of `total`: near-equal contiguous
    parts, the first `total % size` one longer (torch.tensor_split's split)."""
    base, extra = divmod(total, size)
    return rank * base + min(rank, extra), base + (rank < extra)


def model_has_batch_norm(model: Model) -> bool:
    return any(layer.batch_statistics for layer in model.layers)


class Replicas:
    """This process's part in keeping N replicas of one model identical."""

    # slots of the flat buffer's extra, all-reduced with the gradient: SIGINT asked,
    # SIGTERM asked, a non-finite loss (or sharded gradient slice), a slice's squared
    # norm (sharded clipnorm): one collective per step carries the step's decisions
    EXTRA = 4

    def __init__(
        self,
        world: World,
        flat: FlatParams,
        opt: Optimizer,
        model: Model,
        sharding: bool,
        sync_batch_norm: bool,
    ) -> None:
        self.world, self.flat, self.opt, self.model = world, flat, opt, model
        self.sharded = world.active and sharding
        self.sync_bn = world.active and sync_batch_norm and model_has_batch_norm(model)
        if self.sharded:
            lo, hi, chunk = world.shard(len(flat))
            opt.shard(lo, hi)
            self._padded = torch.zeros(
                chunk * world.size, dtype=flat.data.dtype, device=flat.data.device
            )

    def reduce_gradients(
        self, bad: torch.Tensor, o: Any, pending: int | None, whole: bool
    ) -> torch.Tensor:
        """Sum the gradient over the processes (each already weighted by its share of the
        global batch) with the step's flags in the same call, and clip it. With optimizer
        sharding (unless `whole`: histograms need the whole gradient), reduce-scatter it
        instead (this rank keeps its slice, the one it updates) and all-reduce the flags
        with each slice's non-finite check and squared norm. Returns whether any rank's
        loss or the gradient was non-finite: the same answer on every rank."""
        flat, world = self.flat, self.world
        extra = flat.extra
        extra.copy_(torch.tensor([pending == signal.SIGINT, pending == signal.SIGTERM, 0, 0]))
        extra[2:3].copy_(bad.reshape(1))
        if not self.sharded or whole:
            world.all_reduce_(flat.grad_and_extra)
            clip_spec_(flat.grad, o)  # identical on every rank
            return (extra[2] > 0) | ~torch.isfinite(flat.grad.sum())
        lo, hi, _ = world.shard(len(flat))
        g = flat.grad[lo:hi]
        g.copy_(world.reduce_scatter_(flat.grad, self._padded)[: hi - lo])
        extra[2:3].copy_(extra[2:3].bool() | ~torch.isfinite(g.sum()).reshape(1))
        if o.clipnorm:
            extra[3:4].copy_(g.double().square().sum().reshape(1))
        world.all_reduce_(extra)
        if o.clipnorm:  # the whole gradient's norm, from every slice's
            total = extra[3].double().sqrt().to(g.dtype)
            g.mul_(torch.clamp(o.clipnorm / (total + 1e-6), max=1.0))
        if o.clipvalue:
            clip_grad_value_(g, o.clipvalue)
        return extra[2] > 0

    def asked_stop(self) -> int | None:
        """The stop signal some rank asked for in the last reduction (a host read)."""
        asked = self.flat.extra[:2].tolist()
        if asked[0] > 0:
            return signal.SIGINT
        return signal.SIGTERM if asked[1] > 0 else None

    def all_gather_weights(self) -> None:
        """After a sharded update: every rank's updated slice to every rank."""
        if self.sharded:
            self.world.all_gather_(self.flat.data, self._padded)

    def gather_state(self, opt_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The whole optimizer state, as one process holds it (sharded: gathered, in the same
        key order on every rank; a loaded state's keys come in file order)."""
        if not self.sharded:
            return opt_tensors
        return {k: self._gather(opt_tensors[k]) for k in sorted(opt_tensors)}

    def _gather(self, shard: torch.Tensor) -> torch.Tensor:
        lo, hi, _ = self.world.shard(len(self.flat))
        if shard.numel() != hi - lo:  # not an elementwise slot (a scalar step count)
            return shard
        whole = torch.zeros(len(self.flat), dtype=shard.dtype, device=shard.device)
        whole[lo:hi].copy_(shard)
        self.world.all_gather_(whole, torch.zeros_like(self._padded, dtype=shard.dtype))
        return whole

    def slice_state(self, opt_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's whole optimizer state cut to this rank's slice (sharded)."""
        if not self.sharded:
            return opt_tensors
        n = len(self.flat)
        lo, hi, _ = self.world.shard(n)
        return {k: v[lo:hi] if v.numel() == n else v for k, v in opt_tensors.items()}

    def reduce_metrics(self, ms: MetricState, empty: Callable[[], MetricState]) -> MetricState:
        """The metric sums of every process's samples (one all-reduce), as a new state;
        `ms` itself in one process."""
        if not self.world.active:
            return ms
        parts = ms.tensors()
        flat = torch.cat([v.reshape(-1).to(torch.float64) for v in parts.values()])
        self.world.all_reduce_(flat)
        out = empty()
        sizes = [v.numel() for v in parts.values()]
        out.load(
            {
                k: piece.view(v.shape).to(v.dtype)
                for (k, v), piece in zip(parts.items(), flat.split(sizes))
            }
        )
        return out

    def sync_buffers(self) -> None:
        """Average the processes' BatchNormalization moving statistics (each tracked its
        own slice of the batches) so every rank holds the same model, as Keras's
        strategies read them; with sync_batch_norm they are identical already."""
        if not self.world.active or self.sync_bn:
            return
        bufs = [b for _, b in self.model.named_buffers() if b.is_floating_point()]
        if bufs:
            flat = torch.cat([b.reshape(-1) for b in bufs])
            self.world.all_reduce_(flat).div_(self.world.size)
            for b, piece in zip(bufs, flat.split([b.numel() for b in bufs])):
                b.copy_(piece.view(b.shape))

    def check(self, step: int) -> None:
        """train.distributed.check_every_steps: every rank's weights (and, unsharded, its
        optimizer state) must be bit-identical."""
        tensors = {"weights": self.flat.data}
        if not self.sharded:
            tensors.update(self.opt.state_dict()[0])
        self.world.check_same(tensors, "weights and optimizer state", step)
