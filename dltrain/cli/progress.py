"""Progress reporting for `dltrain train`: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..engine.train.callbacks import Callback
from .app import out


def _fmt(logs: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in logs.items())


class PlainProgress(Callback):
    """One line per epoch (logs, CI, pipes)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_begin(self, epoch: int) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        dt = time.perf_counter() - self.t0
        print(f"epoch {epoch + 1}/{self.trainer.epochs} {dt:.1f}s {_fmt(logs)}", flush=True)

    def message(self, text: str) -> None:
        print(text, flush=True)


class RichProgress(Callback):
    """A live bar per epoch with the running loss and metrics, a table at the end."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[logs]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=out,
            transient=True,
        )
        self.task = self.progress.add_task("", total=None, epoch="", logs="", rate="")
        self.table = Table(title="Training", title_justify="left")
        self.columns: list[str] = []

    def on_epoch_begin(self, epoch: int) -> None:
        self.progress.start()
        self.t0 = time.perf_counter()
        label = f"{epoch + 1}/{self.trainer.epochs}"
        steps = self.trainer.steps_per_epoch
        self.progress.reset(self.task, total=steps, epoch=label, logs="", rate="")

    def on_train_batch_end(self, step: int, logs: dict[str, float]) -> None:
        done = self.trainer.steps_done_in_epoch()
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = f"{done * self.batch_size / dt:,.0f} samples/s"
        self.progress.update(self.task, completed=done, rate=rate)
        if logs:
            self.progress.update(self.task, logs=_fmt(logs))

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.progress.stop()
        if not self.columns:
            self.columns = list(logs)
            for c in ["epoch", "time"] + self.columns:
                self.table.add_column(c, justify="right")
        dt = time.perf_counter() - self.t0
        row = [str(epoch + 1), f"{dt:.1f}s"] + [
            f"{logs.get(c, float('nan')):.4g}" for c in self.columns
        ]
        out.print("  ".join(f"{c}={v}" for c, v in zip(["epoch", "time"] + self.columns, row)))
        self.table.add_row(*row)

    def message(self, text: str) -> None:
        out.print(text)

    def close(self) -> None:
        self.progress.stop()
        if self.table.row_count:
            out.print(self.table)
