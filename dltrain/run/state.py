"""What a checkpoint holds beyond the weights: optimizer, generators, metric sums, schedule,
early stopping, preprocessing and the spec (and for GANs the discriminator and its
optimizer); written as files for an atomic commit, read back for an exact resume."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data.prepare import Preprocessor
from ..engine import checkpoint as ck
from ..engine.train.gan import GanTrainer
from ..engine.train.trainer import Trainer
from ..spec import RunSpec


def checkpoint_files(
    tr: Trainer, spec: RunSpec, pre: Preprocessor, extra: dict[str, Any]
) -> dict[str, bytes]:
    opt_tensors, opt_meta = tr.opt.state_dict()
    trainer_tensors = {
        "rng.dropout": tr.dropout_gen.get_state(),
        "rng.augment": tr.augment_gen.get_state(),
    }
    trainer_tensors.update({f"metrics.{k}": v for k, v in tr.train_metrics.tensors().items()})
    if tr.es_weights is not None:
        trainer_tensors.update({f"es_best.{k}": v for k, v in tr.es_weights.items()})
    files: dict[str, bytes] = {}
    if isinstance(tr, GanTrainer):
        d_tensors, d_meta = tr.dopt.state_dict()
        trainer_tensors["rng.noise"] = tr.noise_gen.get_state()
        files["discriminator.safetensors"] = ck.tensors_bytes(tr.disc.state_tensors())
        files["discriminator_optimizer.safetensors"] = ck.tensors_bytes(d_tensors)
        extra = {
            **extra,
            "gan": {
                "optimizer": d_meta,
                "schedule": tr.dschedule.state(),
                "preprocessing": tr.data_pre.to_json(),
            },
        }
    state = {
        "format": ck.FORMAT_VERSION,
        "dltrain": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "global_step": tr.global_step,
        "epoch": tr.epoch,
        "batch": tr.batch,
        "optimizer": opt_meta,
        "schedule": tr.schedule.state(),
        "early_stopping": tr.es_state,
        "preprocessing": pre.to_json(),
        "spec": spec.model_dump(mode="json"),
        **extra,
    }
    return {
        **files,
        "model.safetensors": ck.tensors_bytes(tr.model.state_tensors()),
        "optimizer.safetensors": ck.tensors_bytes(opt_tensors),
        "trainer.safetensors": ck.tensors_bytes(trainer_tensors),
        "state.json": json.dumps(state, indent=1).encode(),
    }


def restore(tr: Trainer, ckpt: Path, state: dict[str, Any]) -> None:
    tr.model.load_state_tensors(ck.read_tensors(ckpt / "model.safetensors"))
    tr.opt.load_state_dict(ck.read_tensors(ckpt / "optimizer.safetensors"), state["optimizer"])
    tt = ck.read_tensors(ckpt / "trainer.safetensors")
    tr.dropout_gen.set_state(tt["rng.dropout"])
    tr.augment_gen.set_state(tt["rng.augment"])
    tr.train_metrics.load({k[8:]: v for k, v in tt.items() if k.startswith("metrics.")})
    es = {k[8:]: v for k, v in tt.items() if k.startswith("es_best.")}
    tr.es_weights = es or None
    tr.global_step, tr.epoch, tr.batch = state["global_step"], state["epoch"], state["batch"]
    tr.schedule.load(state["schedule"])
    tr.es_state = state["early_stopping"]
    if isinstance(tr, GanTrainer):
        tr.disc.load_state_tensors(ck.read_tensors(ckpt / "discriminator.safetensors"))
        tr.dopt.load_state_dict(
            ck.read_tensors(ckpt / "discriminator_optimizer.safetensors"), state["gan"]["optimizer"]
        )
        tr.dschedule.load(state["gan"]["schedule"])
        tr.noise_gen.set_state(tt["rng.noise"])
