"""`dltrain bench`: time full training steps of a config on a batch of its shape.

The step is the trainer's own: forward (tape) with the fused loss, backward, the optimizer
over the flat parameter buffer. Phases are timed separately (with a device sync between
them on CUDA); medians after a warm-up. `precision` (default: the config's
train.precision) runs forward and loss under autocast as the trainer does.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ..spec import RunSpec
from .layers.base import RunContext
from .model import compile_model
from .optim import make_optimizer
from .params import FlatParams
from .precision import PRECISIONS, autocast
from .tensor import Tensor
from .train.losses import build_loss


def make_batch(spec: RunSpec, model: Any, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    bs = spec.train.batch_size
    vocab = getattr(spec.data.train, "vocabulary_size", 2)
    if spec.model.input_dtype == "int64":
        x = torch.randint(0, vocab, (bs, *model.input_shape), generator=g)
    else:
        x = torch.randn(bs, *model.input_shape, generator=g)
        if x.dim() == 4:  # as the data pipeline delivers images: channels-last memory
            x = x.contiguous(memory_format=torch.channels_last)
    if spec.task == "classification" and len(model.output_shape) == 2:  # a class per step
        y = torch.randint(0, model.output_shape[0], (bs, model.output_shape[1]), generator=g)
    elif spec.task == "classification":
        y = torch.randint(0, max(model.output_shape[0], 2), (bs,), generator=g)
        if model.output_shape[0] == 1:
            y = y.float()
    else:
        y = torch.randn(bs, *model.output_shape, generator=g)
    return x.to(device), y.to(device)


class Stepper:
    """One full training step of a config, callable repeatedly; returns phase times (s)."""

    def __init__(self, spec: RunSpec, device: str = "cpu", precision: str | None = None) -> None:
        dev = torch.device(device)
        self.precision = precision or spec.train.precision
        self.compute = PRECISIONS[self.precision]
        self.model = compile_model(spec.model, seed=spec.seed, device=dev)
        self.loss = build_loss(spec, self.model)
        self.opt = make_optimizer(
            spec.optimizer, FlatParams(self.model.parameters(trainable_only=True))
        )
        self.x, self.y = make_batch(spec, self.model, dev)
        self.gen = torch.Generator(device=dev).manual_seed(1)
        self.sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        self.value = 0.0

    def __call__(self) -> tuple[float, float, float]:
        sync = self.sync
        sync()
        t0 = time.perf_counter()
        with autocast(self.compute):
            run = RunContext(training=True, generator=self.gen)
            out = self.model(Tensor(self.x), run, logits=self.loss.logits)
            value = self.loss.fn(out, self.y)
        sync()
        t1 = time.perf_counter()
        value.backward()
        sync()
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad()
        sync()
        t3 = time.perf_counter()
        self.value = value.data  # type: ignore[assignment]  # read at the end only
        return t1 - t0, t2 - t1, t3 - t2


def summarize(times: list[tuple[float, float, float]]) -> dict[str, float]:
    ms = lambda v: 1000 * statistics.median(v)  # noqa: E731
    return {
        "ms_per_step": ms([sum(t) for t in times]),
        "forward_ms": ms([t[0] for t in times]),
        "backward_ms": ms([t[1] for t in times]),
        "optimizer_ms": ms([t[2] for t in times]),
    }


def bench(
    spec: RunSpec,
    steps: int = 50,
    warmup: int = 10,
    device: str = "cpu",
    precision: str | None = None,
) -> dict[str, Any]:
    step = Stepper(spec, device, precision)
    for _ in range(warmup):
        step()
    times = [step() for _ in range(steps)]
    return {
        "config": spec.name,
        "device": device,
        "steps": steps,
        "batch_size": spec.train.batch_size,
        "precision": step.precision,
        "threads": torch.get_num_threads(),
        **summarize(times),
        "final_loss": float(step.value),
    }
