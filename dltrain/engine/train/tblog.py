"""TensorBoard event files: scalars, histograms, images, the config and hparams.

Every event is logged at the optimizer step, and a resumed run opens its writer with
`purge_step`, so TensorBoard drops what a crashed run wrote past the checkpoint and each
step appears once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DltrainIOError
from ...fsutil import fault
from .callbacks import Callback


class TBLogger:
    def __init__(self, logdir: Path, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(logdir), purge_step=purge_step, flush_secs=30)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.w.add_scalar(f"{prefix}/{k}", v, step)

    def histograms(self, named: dict[str, Any], prefix: str, step: int) -> None:
        for k, v in named.items():
            if v is not None and v.numel():
                self.w.add_histogram(f"{prefix}/{k}", v.detach().float().cpu().numpy(), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.w.add_text(tag, "```\n" + text + "\n```", step)

    def image(self, tag: str, hwc: np.ndarray, step: int) -> None:
        self.w.add_image(tag, hwc, step, dataformats="HWC")

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        clean = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
        }
        self.w.add_hparams(clean, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")

    def close(self) -> None:
        self.w.flush()
        self.w.close()


def sample_grid(
    images: np.ndarray, true: np.ndarray, pred: np.ndarray, names: list[str]
) -> np.ndarray:
    """A grid of images (N, H, W, C in any range) captioned 'pred/true', red when wrong."""
    from PIL import Image, ImageDraw

    n = len(images)
    cols = min(8, n)
    rows = -(-n // cols)
    cell, cap = 64, 14
    canvas = Image.new("RGB", (cols * cell, rows * (cell + cap)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        img = images[i].astype(np.float32)
        lo, hi = img.min(), img.max()
        img = ((img - lo) / (hi - lo + 1e-8) * 255).astype(np.uint8)
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, -1)
        tile = Image.fromarray(img[..., :3]).resize((cell, cell), Image.Resampling.NEAREST)
        r, c = divmod(i, cols)
        canvas.paste(tile, (c * cell, r * (cell + cap)))
        label = f"{_name(pred[i], names)}/{_name(true[i], names)}"
        draw.text(
            (c * cell + 2, r * (cell + cap) + cell),
            label,
            fill=(0, 120, 0) if pred[i] == true[i] else (200, 0, 0),
        )
    return np.asarray(canvas)


def _name(i: int, names: list[str]) -> str:
    return names[i][:6] if i < len(names) else str(i)


def confusion_image(cm: np.ndarray, names: list[str]) -> np.ndarray:
    """The confusion matrix as a heat map with counts (rows: true, columns: predicted)."""
    from PIL import Image, ImageDraw

    n = len(cm)
    cell, margin = 28, 40
    canvas = Image.new("RGB", (margin + n * cell, margin + n * cell), "white")
    draw = ImageDraw.Draw(canvas)
    peak = max(int(cm.max()), 1)
    for i in range(n):
        draw.text((2, margin + i * cell + 8), _name(i, names), fill="black")
        draw.text((margin + i * cell + 4, 4), _name(i, names), fill="black")
        for j in range(n):
            v = int(cm[i, j])
            shade = 255 - int(200 * v / peak)
            x0, y0 = margin + j * cell, margin + i * cell
            draw.rectangle(
                [x0, y0, x0 + cell - 1, y0 + cell - 1],
                fill=(shade, shade, 255),
                outline=(220, 220, 220),
            )
            draw.text((x0 + 4, y0 + 8), str(v), fill="black" if shade > 120 else "white")
    return np.asarray(canvas)


def tile(
    images: np.ndarray, low: float = -1.0, high: float = 1.0, min_width: int = 512
) -> np.ndarray:
    """(N, H, W, C) images with values in [low, high] -> one uint8 HWC grid at least
    `min_width` pixels wide (8x8 digits are unreadable at their size): each image enlarged
    by a whole factor (nearest), one pixel of gap."""
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    scale = max(1, -(-min_width // (cols * w)))
    rows = -(-n // cols)
    unit = np.clip((images - low) / (high - low), 0, 1)
    x = (unit * 255).round().astype(np.uint8).repeat(scale, 1).repeat(scale, 2)
    hh, ww = h * scale + 1, w * scale + 1
    grid = np.full((rows * hh + 1, cols * ww + 1, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[1 + r * hh : 1 + r * hh + h * scale, 1 + q * ww : 1 + q * ww + w * scale] = x[i]
    return grid


class TensorBoard(Callback):
    """Scalars by step (train/* at log intervals, epoch/* per epoch), weight and gradient
    histograms, sample images with predicted/true labels, the confusion matrix, a GAN's
    samples, the config as text and the run's hparams at the end.

    A resumed run purges the events after its checkpoint's step (they belong to the crashed
    attempt); a fresh run in a directory that already has events purges them all."""

    def __init__(self, logdir: Path, spec: Any, config_text: str, resumed: bool) -> None:
        self.logdir, self.spec, self.config_text, self.resumed = logdir, spec, config_text, resumed
        self.tb: TBLogger | None = None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A full disk or a read-only file system is exit 6 naming the directory."""
        try:
            fault("tensorboard")
            yield
        except OSError as e:
            raise DltrainIOError(
                f"cannot write TensorBoard events in {self.logdir}: {e.strerror or e}; "
                "free space, or set logging.tensorboard: false"
            ) from None

    def on_train_begin(self) -> None:
        with self._writing():
            self._begin()

    def on_train_batch_end(self, step: int, logs: dict[str, float]) -> None:
        if logs and self.tb is not None:
            with self._writing():
                lr = self.trainer.opt.lr
                self.tb.scalars("train", {"loss": logs["loss"], "learning_rate": lr}, step)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        with self._writing():
            self._epoch_end(epoch, logs)

    def on_train_end(self, logs: dict[str, float]) -> None:
        with self._writing():
            self._train_end(logs)

    def flush(self) -> None:
        if self.tb is not None:
            with self._writing():
                self.tb.w.flush()

    def close(self) -> None:
        tb, self.tb = self.tb, None
        if tb is not None:
            with contextlib.suppress(OSError):  # never masks the error that ended training
                tb.close()

    def _begin(self) -> None:
        tr = self.trainer
        purge = tr.global_step + 1 if self.resumed else (0 if self.logdir.exists() else None)
        self.tb = TBLogger(self.logdir, purge)
        if not self.resumed:
            self.tb.text("config", self.config_text)

    def _epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        tr, tb, log = self.trainer, self.tb, self.spec.logging
        assert tb is not None
        step = tr.global_step
        tb.scalars("epoch", {**logs, "epoch": epoch + 1}, step)
        samples = tr.samples()
        if samples is not None and log.images and samples.dim() == 4:
            imgs = np.moveaxis(samples.float().cpu().numpy(), 1, -1)
            lo = float(imgs.min())
            tb.image("samples/generated", tile(imgs, lo, max(float(imgs.max()), lo + 1e-6)), step)
        if log.histograms:
            tb.histograms({k: p.data for k, p in tr.model.named_parameters()}, "weights", step)
            tb.histograms(tr.epoch_grads, "gradients", step)
        data, val = tr.data, tr.last_validation
        if log.images and data.image and val is not None and self.spec.task == "classification":
            ms, probs = val
            assert data.x_val is not None and data.y_val is not None and probs is not None
            n = min(32, len(probs))  # rank 0's part of the split with several processes
            imgs = np.moveaxis(data.x_val[:n].detach().cpu().numpy(), 1, -1)
            top = probs[:n]
            pred = (top.argmax(1) if top.shape[1] > 1 else (top[:, 0] > 0.5).long()).cpu().numpy()
            true = data.y_val[:n].cpu().numpy()
            tb.image("samples/pred_true", sample_grid(imgs, true, pred, data.classes), step)
            cm = ms.confusion_matrix().numpy()
            tb.image("confusion_matrix", confusion_image(cm, data.classes), step)

    def _train_end(self, logs: dict[str, float]) -> None:
        if self.tb is None:
            return
        s = self.spec
        hp = {
            "optimizer": s.optimizer.type,
            "learning_rate": s.optimizer.learning_rate,
            "batch_size": s.train.batch_size,
            "epochs": s.train.epochs,
            "seed": s.seed,
        }
        self.tb.hparams(hp, {k: v for k, v in logs.items() if isinstance(v, float)})
