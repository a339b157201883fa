"""A training run end to end: run directory, data, resume, epochs, checkpoints, logs."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .. import __version__
from ..data.prepare import (
    Preprocessor,
    check_labels,
    config_dir,
    load_splits,
    make_preprocessor,
    model_input,
)
from ..engine import checkpoint as ck
from ..engine.checks import check_run
from ..engine.model import compile_model
from ..engine.train.gan import GanTrainer
from ..engine.train.schedules import improved
from ..engine.train.tblog import TBLogger, confusion_image, sample_grid, tile
from ..engine.train.trainer import Interrupted, Reporter, TrainData, Trainer
from ..errors import CheckpointError, ConfigError, NonFiniteError
from ..fsutil import atomic_write_text
from ..spec import RunSpec, load
from .state import checkpoint_files, restore

Log = Callable[[str], None]


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device is 'cuda' but no CUDA device is available here; use 'auto' or 'cpu'"
        )
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: d}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def prepare_data(
    spec: RunSpec, config_path: str | None, device: torch.device, pre: Preprocessor | None = None
) -> tuple[TrainData, Preprocessor, Any]:
    if spec.task == "gan":  # the data are the discriminator's inputs
        spec = spec.model_copy(update={"model": spec.gan.discriminator})
    splits = load_splits(spec, config_dir(config_path))
    pre = pre or make_preprocessor(spec, splits.train)

    def tensors(ds: Any) -> tuple[Any, torch.Tensor]:
        x = model_input(ds.x, pre, ds.origin, device)
        y = ds.y
        if y.ndim >= 4:  # image-shaped regression targets: channels first, like the model
            y = np.moveaxis(y, -1, 1)
        return x, torch.from_numpy(np.ascontiguousarray(y)).to(device)

    x, y = tensors(splits.train)
    data = TrainData(x, y, image=splits.train.image, classes=pre.classes)
    if splits.validation is not None:
        data.x_val, data.y_val = tensors(splits.validation)
    return data, pre, splits


class _Signals:
    """First SIGINT/SIGTERM: finish the step, save, exit 130/143. Second: stop at once.

    Installed before anything else, so a signal during setup is remembered too."""

    def __init__(self) -> None:
        self.tr: Trainer | None = None
        self.pending: int | None = None
        self.old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for s in (signal.SIGINT, signal.SIGTERM):
            self.old[s] = signal.signal(s, self._handle)
        return self

    def attach(self, tr: Trainer) -> None:
        self.tr = tr
        tr.stop_signal = self.pending

    def _handle(self, signum: int, frame: Any) -> None:
        current = self.tr.stop_signal if self.tr is not None else self.pending
        if current is not None:
            raise Interrupted(signum, None)
        self.pending = signum
        if self.tr is not None:
            self.tr.stop_signal = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def train_run(
    config: str,
    overrides: Sequence[str] = (),
    run_dir: str | None = None,
    resume: bool = False,
    allow_changes: Sequence[str] = (),
    reporter: Reporter | None = None,
    log: Log = print,
) -> Path:
    """Train the run described by `config`; returns the run directory."""
    with _Signals() as sig:
        return _train(sig, config, overrides, run_dir, resume, allow_changes, reporter, log)


def _train(
    sig: _Signals,
    config: str,
    overrides: Sequence[str],
    run_dir: str | None,
    resume: bool,
    allow_changes: Sequence[str],
    reporter: Reporter | None,
    log: Log,
) -> Path:
    spec = load(config, overrides)
    threads = os.environ.get("DLTRAIN_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    device = pick_device(spec.train.device)
    model = check_run(spec)
    rdir = Path(run_dir) if run_dir else Path("runs") / spec.name
    root = rdir / "checkpoints"
    existing = ck.list_checkpoints(root)
    if existing and not resume:
        raise ConfigError(
            f"{rdir} already holds a run ({len(existing)} checkpoint(s)); pass "
            "--resume to continue it, or --run-dir DIR to start a new one"
        )
    ck.clean_leftovers(root, log)
    ckpt = ck.newest_valid(root, log) if resume else None
    if resume and ckpt is None and existing:
        raise CheckpointError(f"{root}: no valid checkpoint to resume from")
    state = ck.read_state(ckpt) if ckpt else None
    if state is not None:
        changes = [
            c
            for c in config_changes(state["spec"], spec.model_dump(mode="json"))
            if not any(c[0] == a or c[0].startswith(a + ".") for a in allow_changes)
        ]
        if changes:
            lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, a, b in changes)
            raise ConfigError(
                f"the config differs from the run being resumed ({ckpt}):\n"
                f"{lines}\nrevert it, or allow a change with "
                "--allow-config-change KEY"
            )
        if state["dltrain"] != __version__ or state["torch"] != torch.__version__:
            log(
                f"warning: resuming a run saved with dltrain {state['dltrain']} / torch "
                f"{state['torch']} on dltrain {__version__} / torch {torch.__version__}; "
                "bit-exact continuation is not promised across versions"
            )
    pre = Preprocessor.from_json(state["preprocessing"]) if state else None
    if state and spec.task == "gan":
        pre = Preprocessor.from_json(state["gan"]["preprocessing"])
    data, pre, splits = prepare_data(spec, config, device, pre)
    data_pre = pre
    if spec.task == "gan":  # predict and export feed the generator noise, unscaled
        pre = Preprocessor(list(spec.model.input_shape))
    if spec.task == "classification":
        n_classes = max(model.output_shape[0], 2)
        for ds, what in (
            (splits.train, "training"),
            (splits.validation, "validation"),
            (splits.test, "test"),
        ):
            if ds is not None:
                check_labels(ds, n_classes, what)
    if spec.model.load_weights is not None and state is None:
        from .weights import load_initial_weights

        src = spec._source
        loc = src.loc(("model", "load_weights")) if src else None
        load_initial_weights(
            model, spec.model.load_weights, config_dir(config), str(loc or config), log
        )
    disc = None
    if spec.task == "gan":
        disc = compile_model(spec.gan.discriminator, seed=spec.seed + 1)
    if str(device) != "cpu":
        from ..engine.model import to_device

        to_device(model, device)
        if disc is not None:
            to_device(disc, device)
    if disc is not None:
        tr: Trainer = GanTrainer(spec, model, disc, data, device, reporter, data_pre)
    else:
        tr = Trainer(spec, model, data, device, reporter)
    sig.attach(tr)
    if ckpt is not None and state is not None:
        restore(tr, ckpt, state)
        log(f"resuming from {ckpt} (epoch {tr.epoch + 1}, step {tr.global_step})")
    rdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        rdir / "config.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    )
    return _loop(tr, spec, pre, rdir, state, data, log, config_dir(config))


def _loop(
    tr: Trainer,
    spec: RunSpec,
    pre: Preprocessor,
    rdir: Path,
    state: dict[str, Any] | None,
    data: TrainData,
    log: Log,
    cfg_dir: str,
) -> Path:
    root = rdir / "checkpoints"
    cks = spec.checkpoint
    best: dict[str, Any] = dict(state.get("best") or {}) if state else {}
    # events up to the checkpoint's step were flushed before it was committed; later ones
    # belong to the crashed attempt and are purged (all of them if nothing was committed)
    tbdir = rdir / "tensorboard"
    purge = tr.global_step + 1 if state else (0 if tbdir.exists() else None)
    tb = TBLogger(tbdir, purge) if spec.logging.tensorboard else None
    mpath = rdir / "metrics.jsonl"
    if mpath.exists():  # drop epochs the resumed run will redo
        kept = [
            ln
            for ln in mpath.read_text().splitlines()
            if ln.strip() and json.loads(ln)["epoch"] <= tr.epoch
        ]
        atomic_write_text(mpath, "".join(x + "\n" for x in kept))
    if tb is not None and state is None:
        tb.text("config", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))

    def save(finished: bool = False) -> str:
        tr.check_finite()
        if not bool(torch.isfinite(tr.flat.data).all()):
            raise NonFiniteError(
                f"parameters hold NaN/Inf at step {tr.global_step}; no "
                "checkpoint written, the last one is resumable"
            )
        name = f"step-{tr.global_step:08d}"
        if tb is not None:
            tb.w.flush()
        files = checkpoint_files(
            tr, spec, pre, {"best": best, "finished": finished, "config_dir": cfg_dir}
        )
        ck.commit(root, name, files)
        ck.prune(root, cks.keep_last, {best.get("name", "")})
        return name

    def on_step() -> None:
        step = tr.global_step
        tr.reporter.advance(tr.steps_done_in_epoch())
        if step % spec.train.log_every_steps == 0:
            tr.check_finite()
            logs = tr.train_metrics.results()
            tr.reporter.step(tr.steps_done_in_epoch(), logs)
            if tb is not None:
                tb.scalars("train", {"loss": logs["loss"], "learning_rate": tr.opt.lr}, step)
        if cks.every_steps and step % cks.every_steps == 0:
            save()
        if tr.stop_signal is not None:
            raise Interrupted(tr.stop_signal, save())

    epochs = spec.train.epochs
    if state is not None and state.get("finished") and tr.epoch >= epochs:
        log(f"the run in {rdir} has already finished {epochs} epochs")
        return rdir
    try:
        while tr.epoch < epochs and not tr.stop_early:
            tr.reporter.epoch_start(tr.epoch, epochs, tr.steps_per_epoch)
            tr.run_epoch(on_step)
            logs = _end_epoch(tr, spec, data, tb)
            tr.epoch += 1
            tr.batch = 0
            mon = cks.monitor if cks.monitor in logs else "loss"
            is_best = (
                cks.save_best
                and spec.task != "gan"  # no loss of a GAN says which epoch is best
                and improved(logs[mon], best.get("value"), cks.mode, mon)
            )
            if is_best:
                best = {
                    "name": f"step-{tr.global_step:08d}",
                    "value": logs[mon],
                    "monitor": mon,
                    "epoch": tr.epoch,
                }
            last = tr.epoch >= epochs or tr.stop_early
            # the line goes first: a resume drops lines newer than its checkpoint, so a
            # crash between the two never loses an epoch's line
            with open(mpath, "a") as f:
                f.write(json.dumps({"epoch": tr.epoch, "step": tr.global_step, **logs}) + "\n")
            if is_best or last or (cks.every_epochs and tr.epoch % cks.every_epochs == 0):
                if (
                    last
                    and tr.es is not None
                    and tr.es.restore_best_weights
                    and tr.es_weights is not None
                    and tr.stop_early
                ):
                    tr.model.load_state_tensors(tr.es_weights)
                    log("restored the weights of the best epoch")
                save(finished=last)
                if is_best:
                    ck.mark_best(root, best["name"])
            tr.reporter.epoch_end(tr.epoch - 1, logs)
        if tb is not None:
            final = json.loads(mpath.read_text().splitlines()[-1]) if mpath.exists() else {}
            tb.hparams(
                {
                    "optimizer": spec.optimizer.type,
                    "learning_rate": spec.optimizer.learning_rate,
                    "batch_size": spec.train.batch_size,
                    "epochs": epochs,
                    "seed": spec.seed,
                },
                {k: v for k, v in final.items() if isinstance(v, float)},
            )
    finally:
        if tb is not None:
            tb.close()
    tr.reporter.close()
    return rdir


def _end_epoch(
    tr: Trainer, spec: RunSpec, data: TrainData, tb: TBLogger | None
) -> dict[str, float]:
    tr.check_finite()
    logs = tr.train_metrics.results()
    tr.train_metrics.reset()
    step = tr.global_step
    val_ms = None
    if data.x_val is not None and data.y_val is not None:
        vlogs, val_ms, probs = tr.evaluate(data.x_val, data.y_val, keep_outputs=data.image)
        logs.update({f"val_{k}": v for k, v in vlogs.items()})
    logs["learning_rate"] = tr.opt.lr
    for msg in (tr.schedule.epoch_end(logs), tr.early_stopping(logs)):
        if msg:
            tr.reporter.message(msg)
    if tb is not None:
        tb.scalars("epoch", {**logs, "epoch": tr.epoch + 1}, step)
        if isinstance(tr, GanTrainer) and spec.logging.images and len(tr.model.output_shape) == 3:
            imgs = np.moveaxis(tr.samples().float().cpu().numpy(), 1, -1)
            lo = float(imgs.min())
            tb.image("samples/generated", tile(imgs, lo, max(float(imgs.max()), lo + 1e-6)), step)
        if spec.logging.histograms:
            tb.histograms({k: p.data for k, p in tr.model.named_parameters()}, "weights", step)
            tb.histograms(tr.epoch_grads, "gradients", step)
        if (
            spec.logging.images
            and data.image
            and val_ms is not None
            and spec.task == "classification"
        ):
            n = min(32, len(data.x_val))
            imgs = data.x_val[:n].detach().cpu().numpy()
            imgs = np.moveaxis(imgs, 1, -1)
            pred = (
                probs[:n].argmax(1).cpu().numpy()
                if probs.shape[1] > 1
                else (probs[:n, 0] > 0.5).long().cpu().numpy()
            )
            tb.image(
                "samples/pred_true",
                sample_grid(imgs, data.y_val[:n].cpu().numpy(), pred, data.classes),
                step,
            )
            tb.image(
                "confusion_matrix",
                confusion_image(val_ms.confusion_matrix().numpy(), data.classes),
                step,
            )
    return logs
