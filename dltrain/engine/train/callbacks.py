"""Everything around a training step, as callbacks with Keras's hook names.

`Trainer.fit` calls, in list order: `on_train_begin`, then per epoch `on_epoch_begin`,
`on_train_batch_end` after every optimizer step (with the running logs at log intervals,
`{}` between them: reading device values costs a host sync), `on_epoch_end` with the
epoch's logs, and `on_train_end`. Callbacks with state (`state_key`) have it saved in every
checkpoint by `Trainer.state_dict()` and handed back by `load_state` before a resumed fit.
Order matters and is the run's: decisions (plateau, early stopping) before writers
(TensorBoard, metrics.jsonl, checkpoints), the progress line last.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...errors import DltrainError, DltrainIOError, NonFiniteError
from ...fsutil import atomic_write_text
from .. import checkpoint as ck
from .schedules import improved

if TYPE_CHECKING:
    from .trainer import Trainer


class Interrupted(DltrainError):
    """Stopped by SIGINT/SIGTERM after committing a checkpoint."""

    def __init__(self, signum: int, saved: str | None) -> None:
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name}" + (f"; saved {saved}, continue with --resume" if saved else "")
        )


class Callback:
    """A hook set; `trainer` is set by `Trainer.fit` before `on_train_begin`."""

    trainer: Trainer
    # name of this callback's entry in a checkpoint's state.json (None: no state)
    state_key: str | None = None
    # it changes the training (learning rate, stopping): every data-parallel rank runs it
    decides = False

    def on_train_begin(self) -> None: ...
    def on_epoch_begin(self, epoch: int) -> None: ...
    def on_train_batch_end(self, step: int, logs: dict[str, float]) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, logs: dict[str, float]) -> None: ...
    def close(self) -> None:
        """Always called, also when training stops with an error."""

    def flush(self) -> None:
        """Put what was logged so far on disk (called before a checkpoint is committed)."""

    def message(self, text: str) -> None:
        """Where the trainer's messages go (the progress display overrides it)."""

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """JSON state and tensors for a checkpoint."""
        return {}, {}

    def load_state(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None: ...


class ReduceLROnPlateau(Callback):
    """Cuts the learning rate of a `reduce_on_plateau` schedule (its state is the schedule's,
    saved with it)."""

    decides = True

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        msg = self.trainer.schedule.epoch_end(logs)
        if msg:
            self.trainer.message(msg)


class EarlyStopping(Callback):
    """Keras's EarlyStopping: stop when `monitor` has not improved for `patience` epochs;
    with restore_best_weights the weights of the best epoch are put back when it stops."""

    decides = True

    state_key = "early_stopping"

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.best: float | None = None
        self.wait = 0
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        es, tr = self.spec, self.trainer
        if es.monitor not in logs:
            return
        if improved(logs[es.monitor], self.best, es.mode, es.monitor, es.min_delta):
            self.best, self.wait, self.best_epoch = logs[es.monitor], 0, epoch
            if es.restore_best_weights:
                self.best_weights = {k: v.clone() for k, v in tr.model.state_tensors().items()}
            return
        self.wait += 1
        if self.wait < es.patience:
            return
        tr.stop_training = True
        tr.message(
            f"early stopping: {es.monitor} has not improved for {es.patience} epochs "
            f"(best {self.best:.4g} at epoch {(self.best_epoch or 0) + 1})"
        )
        if es.restore_best_weights and self.best_weights is not None:
            tr.model.load_state_tensors(self.best_weights)
            tr.message("restored the weights of the best epoch")

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        meta = {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch}
        return meta, dict(self.best_weights or {})

    def load_state(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.best, self.wait, self.best_epoch = meta["best"], meta["wait"], meta["best_epoch"]
        self.best_weights = tensors or None


class MetricsLog(Callback):
    """metrics.jsonl: one JSON line per epoch. A resumed run drops the lines of epochs it will
    redo; the line is written before the epoch's checkpoint, so a crash between the two
    never loses a line that a checkpoint covers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self) -> None:
        if not self.path.exists():
            return
        done = self.trainer.epoch
        kept, torn = [], 0
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise DltrainIOError(f"cannot read {self.path}: {e.strerror or e}") from None
        for ln in text.splitlines():
            try:
                entry = json.loads(ln)
                keep = isinstance(entry, dict) and int(entry["epoch"]) <= done
            except (ValueError, KeyError, TypeError):  # a line a crash tore mid-append
                torn += 1
                continue
            if keep:
                kept.append(ln)
        if torn:
            self.trainer.message(f"warning: dropped {torn} unreadable line(s) of {self.path}")
        atomic_write_text(self.path, "".join(x + "\n" for x in kept))

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        line = {"epoch": epoch + 1, "step": self.trainer.global_step, **logs}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as e:
            raise DltrainIOError(f"cannot write {self.path}: {e.strerror or e}") from None

    def last(self) -> dict[str, Any]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return json.loads(lines[-1]) if lines else {}


class ModelCheckpoint(Callback):
    """Checkpoints: every `every_steps` optimizer steps, every `every_epochs` epochs, on a new
    best of `monitor`, at the end, and when a stop signal arrives (then `Interrupted`).
    Each is committed atomically; `keep_last` are kept besides the best one."""

    state_key = "best"

    def __init__(
        self,
        root: Path,
        spec: Any,
        run_state: dict[str, Any],
        write: bool = True,
    ) -> None:
        """write=False: a data-parallel rank other than 0, which takes part in each save
        (gathering sharded optimizer state) and writes nothing."""
        self.root, self.spec, self.write = root, spec, write
        self.run_state = run_state  # run-level JSON (spec, preprocessing, versions, ...)
        self.best: dict[str, Any] = {}

    def save(self, finished: bool = False) -> str:
        tr = self.trainer
        tr.check_finite()
        if not bool(torch.isfinite(tr.flat.data).all()):
            raise NonFiniteError(
                f"parameters hold NaN/Inf at step {tr.global_step}; no checkpoint written"
                + tr.resumable_hint()
            )
        for cb in tr.callbacks:  # what was logged up to this step is on disk first
            cb.flush()
        name = f"step-{tr.global_step:08d}"
        state = tr.state_dict()
        if not self.write:
            tr.last_saved = name
            return name
        meta = {**state.pop("state"), **self.run_state, "finished": finished}
        files = {f"{k}.safetensors": ck.tensors_bytes(v) for k, v in state.items()}
        files["state.json"] = json.dumps(meta, indent=1).encode()
        ck.commit(self.root, name, files)
        ck.prune(self.root, self.spec.checkpoint.keep_last, {self.best.get("name", "")})
        tr.last_saved = name
        return name

    def on_train_batch_end(self, step: int, logs: dict[str, float]) -> None:
        every = self.spec.checkpoint.every_steps
        if every and step % every == 0:
            self.save()
        if self.trainer.stop_signal is not None:
            raise Interrupted(self.trainer.stop_signal, self.save())

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        tr, cks = self.trainer, self.spec.checkpoint
        mon = cks.monitor if cks.monitor in logs else "loss"
        is_best = (
            cks.save_best
            and tr.has_best_epoch
            and improved(logs[mon], self.best.get("value"), cks.mode, mon)
        )
        if is_best:
            self.best = {
                "name": f"step-{tr.global_step:08d}",
                "value": logs[mon],
                "monitor": mon,
                "epoch": tr.epoch,
            }
        last = tr.epoch >= tr.epochs or tr.stop_training
        if is_best or last or (cks.every_epochs and tr.epoch % cks.every_epochs == 0):
            self.save(finished=last)
            if is_best and self.write:
                ck.mark_best(self.root, self.best["name"])

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return dict(self.best), {}

    def load_state(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.best = dict(meta or {})
