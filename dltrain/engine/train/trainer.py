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
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ...errors import DltrainError, NonFiniteError
from ..layers.base import RunContext
from ..model import Model
from ..optim import OPTIMIZERS, Optimizer, clip_grad_norm_, clip_grad_value_
from ..params import FlatParams
from ..tensor import Tensor, no_grad
from .losses import build_loss
from .metrics import MetricState
from .schedules import Schedule, improved


class Reporter(Protocol):
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, step_in_epoch: int) -> None: ...  # every step: no device values
    def step(self, step_in_epoch: int, logs: dict[str, float]) -> None: ...
    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class NullReporter:
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, step_in_epoch: int) -> None: ...
    def step(self, step_in_epoch: int, logs: dict[str, float]) -> None: ...
    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class Interrupted(DltrainError):
    """Stopped by SIGINT/SIGTERM after committing a checkpoint."""

    def __init__(self, signum: int, saved: str | None) -> None:
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name}" + (f"; saved {saved}, continue with --resume" if saved else "")
        )


@dataclass
class TrainData:
    """Model-ready tensors on the training device."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    image: bool = False
    classes: list[str] = field(default_factory=list)


def make_optimizer(o: Any, params: FlatParams) -> Optimizer:
    """The engine optimizer for an OptimizerSpec over flat parameters."""
    t = o.type
    if t == "sgd":
        return OPTIMIZERS["SGD"](
            params,
            lr=o.learning_rate,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
        )
    if t in ("adam", "adamw"):
        cls = OPTIMIZERS["AdamW" if t == "adamw" else "Adam"]
        return cls(
            params,
            lr=o.learning_rate,
            betas=(o.beta_1, o.beta_2),
            eps=o.epsilon,
            weight_decay=o.weight_decay,
            amsgrad=o.amsgrad,
        )
    if t == "rmsprop":
        return OPTIMIZERS["RMSprop"](
            params,
            lr=o.learning_rate,
            alpha=o.rho,
            eps=o.epsilon,
            momentum=o.momentum,
            centered=o.centered,
            weight_decay=o.weight_decay,
        )
    return OPTIMIZERS["Adagrad"](
        params,
        lr=o.learning_rate,
        eps=o.epsilon,
        initial_accumulator_value=o.initial_accumulator_value,
        weight_decay=o.weight_decay,
    )


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> torch.Tensor:
    """The sample order of an epoch: a pure function of (seed, epoch)."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def augment(x: torch.Tensor, aug: Any, gen: torch.Generator) -> torch.Tensor:
    """Random flips and padded random crops of a (N, C, H, W) batch, per sample."""
    n = x.shape[0]
    if aug.random_flip in ("horizontal", "horizontal_and_vertical"):
        m = torch.rand(n, generator=gen, device=x.device) < 0.5
        x = torch.where(m.view(-1, 1, 1, 1), x.flip(-1), x)
    if aug.random_flip in ("vertical", "horizontal_and_vertical"):
        m = torch.rand(n, generator=gen, device=x.device) < 0.5
        x = torch.where(m.view(-1, 1, 1, 1), x.flip(-2), x)
    p = aug.random_crop_padding
    if p:
        _, _, h, w = x.shape
        xp = torch.nn.functional.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (n,), generator=gen, device=x.device)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=gen, device=x.device)
        rows = (oy.view(-1, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (ox.view(-1, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        idx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        x = xp.permute(0, 2, 3, 1)[idx, rows, cols].squeeze(1).permute(0, 3, 1, 2)
    return x.contiguous()


class Trainer:
    """Owns the model, optimizer, schedule, generators and accumulators of one run."""

    def __init__(
        self,
        spec: Any,
        model: Model,
        data: TrainData,
        device: torch.device,
        reporter: Reporter | None = None,
    ) -> None:
        self.spec, self.model, self.data, self.device = spec, model, data, device
        self.reporter = reporter or NullReporter()
        tr = spec.train
        self.loss = build_loss(spec, model)
        trainable = model.parameters(trainable_only=True)
        if not trainable:
            raise DltrainError("every layer is frozen (trainable: false); nothing to train")
        self.flat = FlatParams(trainable)
        self.opt = make_optimizer(spec.optimizer, self.flat)
        n = len(data.x)
        self.n_batches = math.ceil(n / tr.batch_size)
        self.steps_per_epoch = math.ceil(self.n_batches / tr.gradient_accumulation_steps)
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
        self.train_metrics = MetricState(list(spec.metrics), spec.task, n_out, device)
        self.epoch, self.batch, self.global_step = 0, 0, 0
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.stop_signal: int | None = None
        self.stop_early = False
        self.es = next((c for c in spec.callbacks if c.type == "early_stopping"), None)
        self.es_state: dict[str, Any] = {"best": None, "wait": 0, "best_epoch": None}
        self.es_weights: dict[str, torch.Tensor] | None = None
        self.epoch_grads: dict[str, torch.Tensor] = {}

    # -- one optimizer step -----------------------------------------------------------------
    def _micro_batch(self, idx: torch.Tensor, scale: float) -> None:
        x, y = self.data.x[idx], self.data.y[idx]
        if self.data.image and (
            self.spec.data.augment.random_flip or self.spec.data.augment.random_crop_padding
        ):
            x = augment(x, self.spec.data.augment, self.augment_gen)
        run = RunContext(training=True, generator=self.dropout_gen)
        out = self.model(Tensor(x), run, logits=self.loss.logits)
        loss = self.loss.fn(out, y)
        (loss * scale if scale != 1.0 else loss).backward()
        self.train_metrics.update(loss.data, out.data, y, self.loss.logits)
        self._last_loss = loss.data

    def _gradients_ready(self, flat: FlatParams, o: Any, loss: torch.Tensor) -> None:
        """Gather the flat gradient, clip it as the optimizer spec asks, and remember (on the
        device, no sync) the first step whose loss or gradient is not finite."""
        flat.sync_grads()
        g = flat.grad
        if o.clipnorm:
            clip_grad_norm_(g, o.clipnorm)
        if o.clipvalue:
            clip_grad_value_(g, o.clipvalue)
        bad = ~(torch.isfinite(loss) & torch.isfinite(g.sum()))
        self.bad_step = torch.where(bad & (self.bad_step < 0), self.global_step, self.bad_step)

    def _optimizer_step(self) -> None:
        self._gradients_ready(self.flat, self.spec.optimizer, self._last_loss)
        self.opt.lr = self.schedule.lr(self.global_step)
        log = self.spec.logging
        if self.batch >= self.n_batches and log.tensorboard and log.histograms:
            # the epoch's last step: keep grads for the gradient histograms
            self.epoch_grads = {
                k: p.grad.clone() for k, p in self.model.named_parameters() if p.grad is not None
            }
        self.opt.step()
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
            f"[{shown}]. No checkpoint was written after it; the last one is resumable. Try a "
            "lower learning rate, clipnorm, or check those samples"
        )

    def steps_done_in_epoch(self) -> int:
        return -(-self.batch // self.spec.train.gradient_accumulation_steps)

    # -- an epoch ---------------------------------------------------------------------------
    def run_epoch(self, on_step: Any) -> None:
        """Train the rest of the current epoch, from micro-batch self.batch."""
        tr = self.spec.train
        bs, accum = tr.batch_size, tr.gradient_accumulation_steps
        order = epoch_order(self.spec.seed, self.epoch, len(self.data.x), tr.shuffle)
        order = order.to(self.device)
        while self.batch < self.n_batches:
            group_end = min(self.batch + accum, self.n_batches)
            scale = 1.0 / (group_end - self.batch)
            for b in range(self.batch, group_end):
                self._micro_batch(order[b * bs : (b + 1) * bs], scale)
            self.batch = group_end
            self._optimizer_step()
            on_step()
            if self.stop_signal is not None:
                return

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
        return evaluate_model(
            self.model,
            self.loss,
            ms,
            x,
            y,
            batch_size or max(self.spec.train.batch_size, 256),
            keep_outputs,
        )

    # -- early stopping ---------------------------------------------------------------------
    def early_stopping(self, logs: dict[str, float]) -> str | None:
        es = self.es
        if es is None or es.monitor not in logs:
            return None
        st = self.es_state
        if improved(logs[es.monitor], st["best"], es.mode, es.monitor, es.min_delta):
            st.update(best=logs[es.monitor], wait=0, best_epoch=self.epoch)
            if es.restore_best_weights:
                self.es_weights = {k: v.clone() for k, v in self.model.state_tensors().items()}
            return None
        st["wait"] += 1
        if st["wait"] >= es.patience:
            self.stop_early = True
            return (
                f"early stopping: {es.monitor} has not improved for {es.patience} epochs "
                f"(best {st['best']:.4g} at epoch {st['best_epoch'] + 1})"
            )
        return None


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
