"""The training loop: batches -> forward (tape) -> loss -> backward -> optimizer.

Determinism and exact resume: the sample order of epoch e is a pure function of (seed, e);
dropout and augmentation draw from their own generators whose states go into every
checkpoint with the optimizer, the metric accumulators and the schedule. A resumed run
replays the same batches from the saved (epoch, batch) and ends bit-identical on CPU.
Nothing reads a device value per step: losses, metrics and a non-finite flag accumulate on
the device and are read at log intervals, epoch ends and before a checkpoint is committed.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import ConfigError, NonFiniteError
from ...spec import RunSpec
from ..distributed import SINGLE, RowsGenerator, World
from ..layers.base import RunContext
from ..model import Model
from ..optim import clip_grad_norm_, clip_grad_value_, make_optimizer
from ..params import FlatParams
from ..precision import PRECISIONS, LossScaler, autocast
from ..tensor import Tensor, no_grad
from .augment import augment, augment_audio
from .callbacks import Callback, Interrupted
from .losses import build_loss
from .metrics import MetricState
from .schedules import Schedule


@dataclass
class TrainData:
    """Model-ready tensors on the training device."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    image: bool = False
    classes: list[str] = field(default_factory=list)
    audio: bool = False
    noise: torch.Tensor | None = None  # background recordings for audio augmentation


def check_global_batch(batch_size: int, processes: int) -> None:
    if batch_size % processes:
        raise ConfigError(
            f"train.batch_size {batch_size} is the global batch and must split evenly over "
            f"the {processes} processes; use a multiple of {processes}"
        )


def _clip(g: torch.Tensor, o: Any) -> None:
    """The optimizer spec's clipnorm and clipvalue on a whole flat gradient."""
    if o.clipnorm:
        clip_grad_norm_(g, o.clipnorm)
    if o.clipvalue:
        clip_grad_value_(g, o.clipvalue)


def local_rows(total: int, rank: int, size: int) -> tuple[int, int]:
    """(offset, count) of rank's part of a global batch of `total`: near-equal contiguous
    parts, the first `total % size` one longer (torch.tensor_split's split)."""
    base, extra = divmod(total, size)
    return rank * base + min(rank, extra), base + (rank < extra)


def model_has_batch_norm(model: Model) -> bool:
    return any(layer.batch_statistics for layer in model.layers)


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> torch.Tensor:
    """The sample order of an epoch: a pure function of (seed, epoch)."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class Trainer:
    """Owns one run's model, optimizer, schedule, generators and accumulators, and its loop:
    `fit(callbacks)` runs the epochs; `state_dict()` is everything a checkpoint holds."""

    def __init__(
        self,
        spec: RunSpec,
        model: Model,
        data: TrainData,
        device: torch.device,
        world: World = SINGLE,
    ) -> None:
        self.spec, self.model, self.data, self.device = spec, model, data, device
        self.world = world
        tr = spec.train
        check_global_batch(tr.batch_size, world.size)
        self.loss = build_loss(spec, model)
        trainable = model.parameters(trainable_only=True)
        if not trainable:
            raise ConfigError(
                "every layer is frozen (trainable: false); nothing to train. Unfreeze at "
                "least one layer, or use the model as it is with predict/evaluate"
            )
        # extra slots all-reduced with the gradient: SIGINT asked, SIGTERM asked, a
        # non-finite loss (or sharded gradient slice), a slice's squared norm (sharded
        # clipnorm): one collective per step carries the step's decisions
        self.flat = FlatParams(trainable, extra=4 if world.active else 0)
        self.opt = make_optimizer(spec.optimizer, self.flat)
        self.sharded = world.active and tr.distributed.optimizer_sharding
        self.sync_bn = world.active and tr.sync_batch_norm and model_has_batch_norm(model)
        if self.sharded:
            lo, hi, chunk = world.shard(len(self.flat))
            self.opt.shard(lo, hi)
            self._padded = torch.zeros(
                chunk * world.size, dtype=self.flat.data.dtype, device=device
            )
        self._pending_signal: int | None = None  # asked here, not yet agreed by all ranks
        self.n_batches = math.ceil(len(data.x) / tr.batch_size)  # micro-batches in one pass
        last = len(data.x) % tr.batch_size
        if self.sync_bn and 0 < last < world.size:
            raise ConfigError(
                f"the last batch of each epoch holds {last} sample(s), fewer than the "
                f"{world.size} processes, and train.sync_batch_norm needs a sample on every "
                "process; pick a batch_size that leaves a larger last batch"
            )
        full = math.ceil(self.n_batches / tr.gradient_accumulation_steps)
        self.steps_per_epoch = min(tr.steps_per_epoch or full, full)
        # micro-batches an epoch runs (all of them unless train.steps_per_epoch cuts it short)
        self.epoch_batches = min(
            self.n_batches, self.steps_per_epoch * tr.gradient_accumulation_steps
        )
        self.epochs = tr.epochs
        self.schedule = Schedule(
            spec.optimizer.schedule,
            spec.optimizer.learning_rate,
            self.steps_per_epoch * tr.epochs,
            self.steps_per_epoch,
        )
        gdev = device if device.type == "cuda" else torch.device("cpu")
        self.dropout_gen = torch.Generator(device=gdev).manual_seed(spec.seed + 17)
        self.augment_gen = torch.Generator(device=gdev).manual_seed(spec.seed + 29)
        n_out = model.output_shape[0]
        self.train_metrics: Any = MetricState(list(spec.metrics), spec.task, n_out, device)
        self.epoch, self.batch, self.global_step = 0, 0, 0
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.stop_signal: int | None = None  # set by a signal handler: save and stop
        self.stop_training = False  # set by callbacks (early stopping): end after this epoch
        self.callbacks: list[Callback] = []
        self.last_saved: str | None = None  # the last checkpoint this process committed
        self.resumed_from: str | None = None
        self.last_validation: tuple[MetricState, torch.Tensor | None] | None = None
        self.epoch_grads: dict[str, torch.Tensor] = {}
        self._callback_state: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
        self._last_loss = torch.zeros((), device=device)
        # mixed precision: the autocast type of forward and loss, and float16's loss scale
        self.compute = PRECISIONS[tr.precision]
        self.scaler = LossScaler(tr.precision == "fp16-mixed")

    has_best_epoch = True  # whether a validation/loss value can pick a best epoch

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, callbacks: Sequence[Callback] = ()) -> dict[str, float]:
        """Train from the current (epoch, batch) to train.epochs; returns the last epoch's
        logs. Callbacks run in list order at each hook."""
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.trainer = self
        self._restore_callbacks()
        logs: dict[str, float] = {}
        try:
            for cb in self.callbacks:
                cb.on_train_begin()
            while self.epoch < self.epochs and not self.stop_training:
                for cb in self.callbacks:
                    cb.on_epoch_begin(self.epoch)
                self._run_epoch()
                logs = self._end_epoch()
                self.epoch += 1
                self.batch = 0
                for cb in self.callbacks:
                    cb.on_epoch_end(self.epoch - 1, logs)
            for cb in self.callbacks:
                cb.on_train_end(logs)
        finally:
            for cb in self.callbacks:
                cb.close()
        return logs

    def message(self, text: str) -> None:
        for cb in self.callbacks:
            cb.message(text)

    def _run_epoch(self) -> None:
        """The rest of the current epoch, from micro-batch self.batch."""
        tr = self.spec.train
        bs, accum = tr.batch_size, tr.gradient_accumulation_steps
        order = epoch_order(self.spec.seed, self.epoch, len(self.data.x), tr.shuffle)
        order = order.to(self.device)
        while self.batch < self.epoch_batches:
            group_end = min(self.batch + accum, self.epoch_batches)
            scale = 1.0 / (group_end - self.batch)
            for b in range(self.batch, group_end):
                self._micro_batch(order[b * bs : (b + 1) * bs], scale)
            self.batch = group_end
            self._optimizer_step()
            logs: dict[str, float] = {}
            if self.global_step % tr.log_every_steps == 0:  # the only per-step host sync
                self.check_finite()
                logs = self.metric_results(self.train_metrics)
            every = tr.distributed.check_every_steps
            if self.world.active and every and self.global_step % every == 0:
                self.check_replicas()
            for cb in self.callbacks:
                cb.on_train_batch_end(self.global_step, logs)
            if self.stop_signal is not None:  # no checkpoint callback took it
                raise Interrupted(self.stop_signal, None)

    def _end_epoch(self) -> dict[str, float]:
        self.check_finite()
        self.sync_buffers()
        logs = self.metric_results(self.train_metrics)
        self.train_metrics.reset()
        self.last_validation = None
        if self.data.x_val is not None and self.data.y_val is not None:
            vlogs, val_ms, probs = self.evaluate(
                self.data.x_val, self.data.y_val, keep_outputs=self.data.image
            )
            logs.update({f"val_{k}": v for k, v in vlogs.items()})
            self.last_validation = (val_ms, probs)
        logs["learning_rate"] = self.opt.lr
        return logs

    # -- one optimizer step -----------------------------------------------------------------
    def _micro_batch(self, idx: torch.Tensor, scale: float) -> None:
        """One micro-batch of global indices `idx`: with several processes this one takes
        its slice, and its loss counts by its share of the global batch (the summed
        gradients are then the global batch's mean-loss gradient)."""
        total, rows = len(idx), None
        gen: Any = self.dropout_gen
        if self.world.active:
            off, n = local_rows(total, self.world.rank, self.world.size)
            if n == 0:  # fewer samples than processes: this one adds nothing
                return
            idx, rows = idx[off : off + n], (off, total)
            gen = RowsGenerator(self.dropout_gen, off, total)
            scale *= n / total
        x, y = self.data.x[idx], self.data.y[idx]
        if self.data.image and (
            self.spec.data.augment.random_flip or self.spec.data.augment.random_crop_padding
        ):
            x = augment(x, self.spec.data.augment, self.augment_gen, rows)
        elif self.data.audio and (
            self.spec.data.augment.time_shift
            or self.spec.data.augment.background_noise
            or self.spec.data.augment.speed
        ):
            x = augment_audio(x, self.spec.data.augment, self.augment_gen, rows, self.data.noise)
        run = RunContext(training=True, generator=gen)
        if self.sync_bn:
            run.sync, run.global_rows = self.world, total
        with autocast(self.compute):
            out = self.model(Tensor(x), run, logits=self.loss.logits)
            loss = self.loss.fn(out, y)
        scale *= self.scaler.scale
        (loss * scale if scale != 1.0 else loss).backward()
        self.train_metrics.update(loss.data, out.data, y, self.loss.logits)
        self._last_loss = loss.data

    def _gradients_ready(self, flat: FlatParams, o: Any, loss: torch.Tensor) -> bool:
        """Gather the flat gradient, clip it as the optimizer spec asks, and remember (on the
        device, no sync) the first step whose loss or gradient is not finite. Returns
        whether to apply the step: always, except a float16 step whose scaled gradient
        overflowed (the loss scaler then skips it and lowers the scale)."""
        flat.sync_grads()
        if self.scaler.enabled:  # the scaled loss's gradient, scaled back
            flat.grad.mul_(1.0 / self.scaler.scale)
        bad = ~torch.isfinite(loss)
        if flat is self.flat and self.world.active:
            bad = self._reduce_gradients(bad, o)
        else:
            _clip(flat.grad, o)
            bad = bad | ~torch.isfinite(flat.grad.sum())
        if self.scaler.enabled and flat is self.flat:  # one host read per step (float16 only)
            if not self.scaler.update(not bool(bad)):
                if self.scaler.scale >= 2.0**-24:
                    return False  # skipped; the scale was lowered
                # the scale fell through float16's range: the loss itself is not finite
        self.bad_step = torch.where(bad & (self.bad_step < 0), self.global_step, self.bad_step)
        return True

    def _reduce_gradients(self, bad: torch.Tensor, o: Any) -> torch.Tensor:
        """Sum the gradient over the processes (each already weighted by its share of the
        global batch) with the step's flags in the same call, and clip it. With optimizer
        sharding, reduce-scatter it instead (this rank keeps its slice, the one it
        updates) and all-reduce the flags with each slice's non-finite check and squared
        norm. Returns whether any rank's loss or the gradient was non-finite: the same
        answer on every rank."""
        flat, world = self.flat, self.world
        pending = self._pending_signal
        extra = flat.extra
        extra.copy_(torch.tensor([pending == signal.SIGINT, pending == signal.SIGTERM, 0, 0]))
        extra[2:3].copy_(bad.reshape(1))
        if not self.sharded or self._keeps_grads():  # (histograms need the whole gradient)
            world.all_reduce_(flat.grad_and_extra)
            _clip(flat.grad, o)  # identical on every rank
            bad = (extra[2] > 0) | ~torch.isfinite(flat.grad.sum())
        else:
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
            bad = extra[2] > 0
        # the stop decision is read where reading costs no device sync (CPU), else at the
        # logging steps: every rank reads the same sums at the same step
        if self.device.type == "cpu" or self.global_step % self.spec.train.log_every_steps == 0:
            asked = extra[:2].tolist()
            if asked[0] > 0 or asked[1] > 0:
                self.stop_signal = signal.SIGINT if asked[0] > 0 else signal.SIGTERM
        return bad

    def _keeps_grads(self) -> bool:
        log = self.spec.logging
        return self.batch >= self.epoch_batches and log.tensorboard and log.histograms

    def request_stop(self, signum: int) -> None:
        """A stop signal arrived (SIGINT/SIGTERM): stop after this step with a checkpoint;
        with several processes, once every rank has heard of it in the step's all-reduce."""
        if self.world.active:
            self._pending_signal = signum
        else:
            self.stop_signal = signum

    def metric_results(self, ms: MetricState) -> dict[str, float]:
        """`ms.results()` over every process's samples (one all-reduce of the sums)."""
        if not self.world.active:
            return ms.results()
        parts = ms.tensors()
        flat = torch.cat([v.reshape(-1).to(torch.float64) for v in parts.values()])
        self.world.all_reduce_(flat)
        out = MetricState(
            list(self.spec.metrics), self.spec.task, self.model.output_shape[0], self.device
        )
        sizes = [v.numel() for v in parts.values()]
        out.load(
            {
                k: piece.view(v.shape).to(v.dtype)
                for (k, v), piece in zip(parts.items(), flat.split(sizes))
            }
        )
        return out.results()

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

    def check_replicas(self) -> None:
        """train.distributed.check_every_steps: every rank's weights (and, unsharded, its
        optimizer state) must be bit-identical."""
        tensors = {"weights": self.flat.data}
        if not self.sharded:
            tensors.update(self.opt.state_dict()[0])
        self.world.check_same(tensors, "weights and optimizer state", self.global_step)

    def _optimizer_step(self) -> None:
        apply = self._gradients_ready(self.flat, self.spec.optimizer, self._last_loss)
        self.opt.lr = self.schedule.lr(self.global_step)
        if not apply:  # float16 overflow: no update this step (the step still counts)
            self.opt.zero_grad()
            self.global_step += 1
            return
        if self._keeps_grads():
            # the epoch's last step: keep grads for the gradient histograms
            self.epoch_grads = {
                k: p.grad.clone() for k, p in self.model.named_parameters() if p.grad is not None
            }
        self.opt.step()
        if self.sharded:  # every rank's updated slice to every rank
            self.world.all_gather_(self.flat.data, self._padded)
        self.opt.zero_grad()
        self.global_step += 1

    def check_finite(self) -> None:
        """Raise NonFiniteError (exit 5) if any step so far had a NaN/Inf loss or gradient."""
        bad = int(self.bad_step.item())
        if bad < 0:
            return
        tr = self.spec.train
        epoch, k = divmod(bad, self.steps_per_epoch)
        order = epoch_order(self.spec.seed, epoch, len(self.data.x), tr.shuffle)
        per = tr.batch_size * tr.gradient_accumulation_steps
        samples = order[k * per : (k + 1) * per].tolist()
        shown = ", ".join(map(str, samples[:16])) + (" ..." if len(samples) > 16 else "")
        raise NonFiniteError(
            f"non-finite loss or gradient at step {bad + 1} (epoch {epoch + 1}, batch {k + 1}), "
            f"learning rate {self.schedule.lr(bad):.3g}; training samples of that step: "
            f"[{shown}]. No checkpoint was written after it" + self.resumable_hint() + ". Try a "
            "lower learning rate, clipnorm, or check those samples"
        )

    def resumable_hint(self) -> str:
        last = self.last_saved or self.resumed_from
        if last is None:
            return "; no checkpoint was written before it, so a new run starts from scratch"
        return f"; the last checkpoint ({last}) is resumable with --resume"

    def steps_done_in_epoch(self) -> int:
        return -(-self.batch // self.spec.train.gradient_accumulation_steps)

    def samples(self) -> torch.Tensor | None:
        """Generated samples to show (GANs); None for other models."""
        return None

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors by file (model, optimizer, trainer) and the JSON `state`: what a checkpoint
        holds to continue this run bit-exactly."""
        self.sync_buffers()
        opt_tensors, opt_meta = self.opt.state_dict()
        if self.sharded:  # the whole state, as one process holds it
            # in the same order on every rank (a loaded state's keys come in file order)
            opt_tensors = {k: self._gather(opt_tensors[k]) for k in sorted(opt_tensors)}
        trainer = {"rng.dropout": self.dropout_gen.get_state()}
        trainer["rng.augment"] = self.augment_gen.get_state()
        trainer.update({f"metrics.{k}": v for k, v in self.train_metrics.tensors().items()})
        meta: dict[str, Any] = {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batch": self.batch,
            "optimizer": opt_meta,
            "schedule": self.schedule.state(),
        }
        if self.scaler.enabled:
            meta["loss_scale"] = self.scaler.state_dict()
        for cb in self.callbacks:
            if cb.state_key:
                m, t = cb.state()
                meta[cb.state_key] = m
                trainer.update({f"{cb.state_key}.{k}": v for k, v in t.items()})
        return {
            "model": self.model.state_tensors(),
            "optimizer": opt_tensors,
            "trainer": trainer,
            "state": meta,
        }

    def _gather(self, shard: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(len(self.flat), dtype=shard.dtype, device=shard.device)
        lo, hi, _ = self.world.shard(len(self.flat))
        if shard.numel() != hi - lo:  # not an elementwise slot (a scalar step count)
            return shard
        full[lo:hi].copy_(shard)
        padded = torch.zeros_like(self._padded, dtype=shard.dtype)
        self.world.all_gather_(full, padded)
        return full

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`; callbacks get their part when `fit` starts."""
        meta, tt = state["state"], state["trainer"]
        self.model.load_state_tensors(state["model"])
        opt_tensors = state["optimizer"]
        if self.sharded:
            lo, hi, _ = self.world.shard(len(self.flat))
            opt_tensors = {
                k: v[lo:hi] if v.numel() == len(self.flat) else v for k, v in opt_tensors.items()
            }
        self.opt.load_state_dict(opt_tensors, meta["optimizer"])
        self.dropout_gen.set_state(tt["rng.dropout"])
        self.augment_gen.set_state(tt["rng.augment"])
        self.train_metrics.load({k[8:]: v for k, v in tt.items() if k.startswith("metrics.")})
        self.global_step, self.epoch, self.batch = meta["global_step"], meta["epoch"], meta["batch"]
        self.schedule.load(meta["schedule"])
        if self.scaler.enabled and "loss_scale" in meta:
            self.scaler.load_state_dict(meta["loss_scale"])
        self._callback_state = (meta, tt)

    def _restore_callbacks(self) -> None:
        if self._callback_state is None:
            return
        meta, tt = self._callback_state
        for cb in self.callbacks:
            key = cb.state_key
            if key and meta.get(key) is not None:
                n = len(key) + 1
                cb.load_state(
                    meta[key], {k[n:]: v for k, v in tt.items() if k.startswith(key + ".")}
                )

    # -- evaluation -------------------------------------------------------------------------
    @no_grad()
    def evaluate(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int | None = None,
        keep_outputs: bool = False,
    ) -> tuple[dict[str, float], MetricState, torch.Tensor | None]:
        ms = MetricState(
            list(self.spec.metrics), self.spec.task, self.model.output_shape[0], self.device
        )
        with autocast(self.compute):  # validation in the training's precision
            return evaluate_model(
                self.model,
                self.loss,
                ms,
                x,
                y,
                batch_size or max(self.spec.train.batch_size, 256),
                keep_outputs,
            )


@no_grad()
def evaluate_model(
    model: Model,
    loss: Any,
    ms: MetricState,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    keep_outputs: bool = False,
):
    """Loss and metrics over (x, y) in eval mode; optionally the probabilities."""
    outs = []
    run = RunContext(training=False)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        out = model(Tensor(xb), run, logits=loss.logits)
        ms.update(loss.fn(out, yb).data, out.data, yb, loss.logits)
        if keep_outputs:
            outs.append((model.probabilities(out) if loss.logits else out).data)
    return ms.results(), ms, (torch.cat(outs) if keep_outputs else None)
