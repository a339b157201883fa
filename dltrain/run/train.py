"""A training run end to end: run directory, data, resume, epochs, checkpoints, logs."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .. import __version__
from ..data.prepare import (
    Preprocessor,
    classification_targets,
    config_dir,
    load_splits,
    make_preprocessor,
    model_input,
)
from ..engine import checkpoint as ck
from ..engine.checks import check_run
from ..engine.distributed import SINGLE, World, join, launched_size
from ..engine.model import Model, compile_model, to_device
from ..engine.tensor import no_grad
from ..engine.train.callbacks import (
    Callback,
    EarlyStopping,
    Interrupted,
    MetricsLog,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from ..engine.train.gan import GanTrainer
from ..engine.train.replicas import check_global_batch
from ..engine.train.tblog import TensorBoard
from ..engine.train.trainer import TrainData, Trainer
from ..errors import CheckpointError, ConfigError, DltrainError
from ..fsutil import RunLock, atomic_write_text
from ..spec import RunSpec, load
from ..spec.schema import LoadWeightsSpec
from .host import setup_training_process
from .inference import LOAD_OPTIONS
from .resume import agreed_checkpoint, check_resumable

Log = Callable[[str], None]


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device is 'cuda' but no CUDA device is available here; use 'auto' or 'cpu'"
        )
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def prepare_data(
    spec: RunSpec,
    config_path: str | None,
    device: torch.device,
    pre: Preprocessor | None = None,
    output_shape: tuple[int, ...] | None = None,
) -> tuple[TrainData, Preprocessor, Any]:
    """Splits, preprocessing and model-ready tensors; with the model's `output_shape`, the
    labels are checked against it and the loss first (data errors before any tensor)."""
    if spec.gan is not None:  # the data are the discriminator's inputs
        spec = spec.model_copy(update={"model": spec.gan.discriminator})
    splits = load_splits(spec, config_dir(config_path))
    if spec.task == "classification" and output_shape is not None:
        n_classes = max(output_shape[0], 2)
        for name, what in (("train", "training"), ("validation", "validation"), ("test", "test")):
            ds = getattr(splits, name)
            if ds is not None:
                ds = classification_targets(
                    ds, n_classes, what, spec.loss.type, len(output_shape) == 1
                )
                setattr(splits, name, ds)
    pre = pre or make_preprocessor(spec, splits.train)

    def tensors(ds: Any) -> tuple[Any, torch.Tensor]:
        x = model_input(ds.x, pre, ds.origin, device)
        y = ds.y
        if y.ndim >= 4:  # image-shaped regression targets: channels first, like the model
            y = np.moveaxis(y, -1, 1)
        return x, torch.from_numpy(np.ascontiguousarray(y)).to(device)

    x, y = tensors(splits.train)
    data = TrainData(x, y, image=splits.train.image, classes=pre.classes, audio=splits.train.audio)
    noise = spec.data.augment.background_noise
    if splits.train.audio and noise is not None and noise.path:
        from ..data.audio import noise_bank

        src: Any = spec.data.train
        folder = noise.path
        folder = folder if os.path.isabs(folder) else os.path.join(config_dir(config_path), folder)
        bank = noise_bank(folder, src.sampling_rate)
        data.noise = torch.from_numpy(bank).to(device)
    if splits.validation is not None:
        data.x_val, data.y_val = tensors(splits.validation)
    return data, pre, splits


class _Signals:
    """First SIGINT/SIGTERM while training: finish the step, save, exit 130/143. A second
    one, or any during setup (loading data, building the model: nothing to save yet), stops
    at once."""

    def __init__(self) -> None:
        self.tr: Trainer | None = None
        self.old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for s in (signal.SIGINT, signal.SIGTERM):
            self.old[s] = signal.signal(s, self._handle)
        return self

    def attach(self, tr: Trainer) -> None:
        self.tr = tr

    first_at: float | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.tr is None:  # setup, data loading: nothing to save yet, stop now
            raise Interrupted(signum, None)
        now = time.monotonic()
        if self.first_at is not None:
            if self.tr.world.active and now - self.first_at < 1.0:
                # one of several processes: the terminal's Ctrl-C and the launcher passing
                # it on arrive together; that is one stop, not a second
                return
            raise Interrupted(signum, None)
        self.first_at = now
        self.tr.request_stop(signum)

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def train_run(
    config: str,
    overrides: Sequence[str] = (),
    run_dir: str | None = None,
    resume: bool = False,
    allow_changes: Sequence[str] = (),
    progress: Callback | None = None,
    log: Log = print,
    spec: RunSpec | None = None,
    extra_callbacks: Sequence[Callback] = (),
    import_weights: LoadWeightsSpec | None = None,
) -> Path:
    """Train the run described by `config` (already loaded as `spec`, or loaded here with
    `overrides`); returns the run directory. `extra_callbacks` decide (stop training) after
    the run's own decisions and before its writers. With `import_weights` (a
    LoadWeightsSpec) nothing trains: the run gets those weights as its first checkpoint."""
    with _Signals() as sig:
        spec = spec or load(config, overrides)
        setup_training_process()
        model = check_run(spec)  # config errors before anything is written
        if launched_size() > 1:  # one of the processes of `--nproc N` or torchrun
            check_distributable(spec, launched_size())
            world, device = join(spec.train.device, spec.train.distributed.timeout_seconds)
        else:
            world, device = SINGLE, pick_device(spec.train.device)
        rdir = Path(run_dir) if run_dir else Path("runs") / spec.name
        fresh: Path | None = None  # the outermost directory this run creates
        if world.is_main and not rdir.exists():
            fresh = rdir
            while not fresh.parent.exists():
                fresh = fresh.parent
        try:
            return _train_rank(
                sig,
                spec,
                model,
                device,
                world,
                config,
                rdir,
                resume,
                allow_changes,
                progress,
                log,
                extra_callbacks,
                import_weights,
            )
        except DltrainError:
            # a run that never started (config.yaml is written as training begins) leaves
            # nothing behind in a directory it created
            if fresh is not None and not (rdir / "config.yaml").exists():
                shutil.rmtree(fresh, ignore_errors=True)
            raise
        finally:
            world.close()


def check_distributable(spec: RunSpec, nproc: int) -> None:
    """Config errors of a data-parallel run, before any process joins."""
    if spec.gan is not None:
        raise ConfigError(
            "a GAN trains in one process for now (its two optimizers alternate on one "
            "batch); drop --nproc / torchrun for this config"
        )
    check_global_batch(spec.train.batch_size, nproc)


def _train_rank(
    sig: _Signals,
    spec: RunSpec,
    model: Model,
    device: torch.device,
    world: World,
    config: str,
    rdir: Path,
    resume: bool,
    allow_changes: Sequence[str],
    progress: Callback | None,
    log: Log,
    extra: Sequence[Callback],
    import_weights: LoadWeightsSpec | None = None,
) -> Path:
    """This process's part of the run: one process, or rank 0 of several, owns the run
    directory (lock, config, checkpoints, logs, progress); other ranks train beside it and
    write nothing."""
    main = world.is_main
    try:
        with RunLock(rdir) if main else contextlib.nullcontext():
            return _train(
                sig,
                spec,
                model,
                device,
                config,
                rdir,
                resume,
                allow_changes,
                progress if main else None,
                log if main else (lambda m: None),
                extra,
                import_weights,
                world=world,
            )
    except Interrupted as e:
        if not main:  # rank 0 says what it saved
            e.args = ("",)
            e.said = True  # type: ignore[attr-defined]
        raise


def _adapt(model: Model, data: TrainData, log: Log) -> None:
    """Adapt the Normalization layers without fixed statistics to the training split (on
    the CPU, before the model moves; a resumed run has them in its checkpoint)."""
    from ..engine.layers.preprocessing import adapt_normalization

    n, bs = len(data.x), 256

    def batches() -> Any:
        for i in range(0, n, bs):
            yield data.x[i : i + bs].cpu() if hasattr(data.x, "cpu") else data.x[i : i + bs]

    with no_grad():
        done = adapt_normalization(model, batches)
    if done:
        log(f"adapted {done} Normalization layer(s) to the {n} training samples")


def _train(
    sig: _Signals,
    spec: RunSpec,
    model: Model,
    device: torch.device,
    config: str,
    rdir: Path,
    resume: bool,
    allow_changes: Sequence[str],
    progress: Callback | None,
    log: Log,
    extra: Sequence[Callback],
    import_weights: LoadWeightsSpec | None = None,
    world: World = SINGLE,
) -> Path:
    root = rdir / "checkpoints"
    ckpt: Path | None = None
    if world.is_main:
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
    ckpt = agreed_checkpoint(world, root, ckpt)
    state = ck.read_state(ckpt) if ckpt else None
    if ckpt is not None and state is not None:
        check_resumable(spec, state, ckpt, allow_changes, log)
        if state.get("finished") and state["epoch"] >= spec.train.epochs:
            log(f"the run in {rdir} has already finished {spec.train.epochs} epochs")
            return rdir
    gan = spec.task == "gan"
    saved_pre = state and (state["data_preprocessing"] if gan else state["preprocessing"])
    data, data_pre, splits = prepare_data(
        spec,
        config,
        device,
        Preprocessor.from_json(saved_pre) if saved_pre else None,
        model.output_shape,
    )
    # predict and export feed a GAN's generator noise, unscaled
    pre = Preprocessor(list(spec.model.input_shape)) if gan else data_pre
    from .weights import load_initial_weights

    if state is None and import_weights is None and not gan:
        _adapt(model, data, log)  # Keras's adapt(): Normalization layers' statistics
    if import_weights is not None:
        load_initial_weights(model, import_weights, os.getcwd(), import_weights.path, log)
    elif spec.model.load_weights is not None and state is None:
        src = spec._source
        loc = src.loc(("model", "load_weights")) if src else None
        load_initial_weights(
            model, spec.model.load_weights, config_dir(config), str(loc or config), log
        )
    if str(device) != "cpu":
        to_device(model, device)
    if spec.gan is not None:
        disc = compile_model(spec.gan.discriminator, seed=spec.seed + 1)
        to_device(disc, device)
        tr: Trainer = GanTrainer(spec, model, disc, data, device)
    else:
        tr = Trainer(spec, model, data, device, world)
    sig.attach(tr)
    if ckpt is not None and state is not None:
        saved = ck.read_state_dict(ckpt, state)
        own = tr.model.state_tensors()
        saved["model"] = tr.model.upgrade_keys(saved["model"])
        ck.check_weights(ckpt, saved["model"], own, not LOAD_OPTIONS.allow_nonfinite)
        tr.load_state_dict(saved)
        tr.resumed_from = ckpt.name
        log(f"resuming from {ckpt} (epoch {tr.epoch + 1}, step {tr.global_step})")
    config_text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    if world.is_main:
        atomic_write_text(rdir / "config.yaml", config_text)
    if world.active:
        log(
            f"data-parallel: {world.size} processes ({world.backend}), "
            f"{spec.train.batch_size // world.size} samples each per step"
        )
    run_state = {
        "format": ck.FORMAT_VERSION,
        "dltrain": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "preprocessing": pre.to_json(),
        "spec": spec.model_dump(mode="json"),
        "config_dir": config_dir(config),
    }
    if gan:
        run_state["data_preprocessing"] = data_pre.to_json()
    if import_weights is not None:  # a run made from weights: its first checkpoint, no steps
        saver = ModelCheckpoint(rdir / "checkpoints", spec, run_state)
        tr.callbacks, saver.trainer = [saver], tr
        log(f"imported {import_weights.path} as {rdir / 'checkpoints' / saver.save()}")
        return rdir
    if world.is_main:
        cbs = _callbacks(spec, rdir, run_state, config_text, state is not None, progress, extra)
    else:  # the same decisions, no writers; its checkpoint "saves" join rank 0's gathers
        cbs = [c for c in _callbacks(spec, rdir, run_state, "", True, None, extra) if c.decides]
        cbs.append(ModelCheckpoint(rdir / "checkpoints", spec, run_state, write=False))
    tr.fit(cbs)
    return rdir


def _callbacks(
    spec: RunSpec,
    rdir: Path,
    run_state: dict[str, Any],
    config_text: str,
    resumed: bool,
    progress: Callback | None,
    extra: Sequence[Callback] = (),
) -> list[Callback]:
    """The run's callbacks, in the order they act: decisions, then writers, then progress."""
    cbs: list[Callback] = [ReduceLROnPlateau()]
    es = next((c for c in spec.callbacks if c.type == "early_stopping"), None)
    if es is not None:
        cbs.append(EarlyStopping(es))
    cbs += extra
    if spec.logging.tensorboard:
        cbs.append(TensorBoard(rdir / "tensorboard", spec, config_text, resumed))
    cbs.append(MetricsLog(rdir / "metrics.jsonl"))
    cbs.append(ModelCheckpoint(rdir / "checkpoints", spec, run_state))
    if progress is not None:
        cbs.append(progress)
    return cbs
