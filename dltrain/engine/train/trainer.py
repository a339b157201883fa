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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import ConfigError, NonFiniteError
from ...spec import RunSpec
from ..distributed import SINGLE, RowsGenerator, World
from ..layers.base import RunContext
from ..model import Model
from ..optim import clip_spec_, make_optimizer
from ..params import FlatParams
from ..precision import PRECISIONS, LossScaler, autocast
from ..tensor import Tensor, no_grad
from .augment import augment, augment_audio
from .callbacks import Callback, Interrupted
from .losses import build_loss
from .metrics import MetricState
from .replicas import Replicas, check_global_batch, local_rows
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
        self.flat = FlatParams(trainable, extra=Replicas.EXTRA if world.active else 0)
        self.opt = make_optimizer(spec.optimizer, self.flat)
        self.replicas = Replicas(
            world, self.flat, self.opt, model, tr.distributed.optimizer_sharding,
            tr.sync_batch_norm,
        )  # fmt: skip
        self._pending_signal: int | None = None  # asked here, not yet agreed by all ranks
        self.n_batches = math.ceil(len(data.x) / tr.batch_size)  # micro-batches in one pass
        last = len(data.x) % tr.batch_size
        if self.replicas.sync_bn and 0 < last < world.size:
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
        self.train_metrics: Any = self._metric_state()
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
                self.replicas.check(self.global_step)
            for cb in self.callbacks:
                cb.on_train_batch_end(self.global_step, logs)
            if self.stop_signal is not None:  # no checkpoint callback took it
                raise Interrupted(self.stop_signal, None)

    def _end_epoch(self) -> dict[str, float]:
        self.check_finite()
        self.replicas.sync_buffers()
        logs = self.metric_results(self.train_metrics)
        self.train_metrics.reset()
        self.last_validation = None
        if self.data.x_val is not None and self.data.y_val is not None:
            logs.update({f"val_{k}": v for k, v in self._validate().items()})
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
        if self.replicas.sync_bn:
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
            whole = self._keeps_grads()  # (histograms need the whole gradient)
            bad = self.replicas.reduce_gradients(bad, o, self._pending_signal, whole)
            # the stop decision is read where reading costs no device sync (CPU), else at
            # the logging steps: every rank reads the same sums at the same step
            tr = self.spec.train
            if self.device.type == "cpu" or self.global_step % tr.log_every_steps == 0:
                self.stop_signal = self.replicas.asked_stop() or self.stop_signal
        else:
            clip_spec_(flat.grad, o)
            bad = bad | ~torch.isfinite(flat.grad.sum())
        if self.scaler.enabled and flat is self.flat:  # one host read per step (float16 only)
            if not self.scaler.update(not bool(bad)):
                if self.scaler.scale >= 2.0**-24:
                    return False  # skipped; the scale was lowered
                # the scale fell through float16's range: the loss itself is not finite
        self.bad_step = torch.where(bad & (self.bad_step < 0), self.global_step, self.bad_step)
        return True

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
        """`ms.results()` over every process's samples."""
        return self.replicas.reduce_metrics(ms, self._metric_state).results()

    def _validate(self) -> dict[str, float]:
        """The validation split's loss and metrics; with several processes each evaluates
        its contiguous part (rank 0 the first rows, whose outputs TensorBoard's sample
        images show) and the metric sums are all-reduced, as a DistributedSampler over
        the validation set without padding: every sample counted once."""
        x, y = self.data.x_val, self.data.y_val
        assert x is not None and y is not None
        if self.world.active:
            off, n = local_rows(len(x), self.world.rank, self.world.size)
            x, y = x[off : off + n], y[off : off + n]
        keep = self.data.image and self.world.is_main and len(x) > 0
        _, ms, probs = self.evaluate(x, y, keep_outputs=keep)
        ms = self.replicas.reduce_metrics(ms, self._metric_state)
        self.last_validation = (ms, probs)
        return ms.results()

    def _metric_state(self) -> MetricState:
        return MetricState(
            list(self.spec.metrics), self.spec.task, self.model.output_shape[0], self.device
        )

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
        self.replicas.all_gather_weights()
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
        self.replicas.sync_buffers()
        opt_tensors, opt_meta = self.opt.state_dict()
        opt_tensors = self.replicas.gather_state(opt_tensors)
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`; callbacks get their part when `fit` starts."""
        meta, tt = state["state"], state["trainer"]
        self.model.load_state_tensors(state["model"])
        self.opt.load_state_dict(self.replicas.slice_state(state["optimizer"]), meta["optimizer"])
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
        ms = self._metric_state()
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
