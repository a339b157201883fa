"""A training step reads nothing back from the device between the first forward and the
optimizer step (#17): every torch call is watched, and any that would make a GPU wait for
its values (`.item()`, `bool()`/`int()`/`float()` of a tensor, `.tolist()`, `.cpu()`,
`.numpy()`, `nonzero`, boolean-mask indexing, ...) fails the test. Metrics, the non-finite
flag and gradient clipping stay on the device; they are read at log intervals only."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from dltrain.engine.checks import check_run
from dltrain.engine.tensor import device_like
from dltrain.engine.train.trainer import Trainer, epoch_order
from dltrain.run.train import prepare_data
from dltrain.spec import load
from tests.cli.helpers import ROOT

READS_BACK = {
    "item",
    "tolist",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "cpu",
    "numpy",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "equal",
    "allclose",
}


class HostReadGuard(TorchFunctionMode):
    """Fails on any torch call that reads device values back to the host."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS_BACK:
            raise AssertionError(f"host read inside a training step: {name}")
        if name == "__getitem__" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in (args[1] if isinstance(args[1], tuple) else (args[1],))
        ):
            raise AssertionError("boolean-mask indexing (a data-dependent shape) inside a step")
        if name == "to" and any(str(a) == "cpu" for a in (*args[1:], *kwargs.values())):
            raise AssertionError("a copy to the host inside a training step")
        return func(*args, **kwargs)


def trainer_for(config: str, overrides: list[str]) -> Trainer:
    spec = load(str(ROOT / "configs" / config), overrides)
    model = check_run(spec)
    data, _, _ = prepare_data(spec, str(ROOT / "configs" / config), torch.device("cpu"))
    return Trainer(spec, model, data, torch.device("cpu"))


def guarded_steps(tr: Trainer, steps: int = 3) -> None:
    bs = tr.spec.train.batch_size
    order = epoch_order(tr.spec.seed, 0, len(tr.data.x), True)
    for k in range(steps):
        idx = order[k * bs : (k + 1) * bs]
        with device_like(), HostReadGuard():
            tr._micro_batch(idx, 1.0)
            tr._optimizer_step()
    tr.check_finite()  # the log interval: now the flag may be read


KINDS = {
    "mlp": ("digits_mlp.yaml", ["optimizer.clipnorm=1.0"]),
    "cnn": ("digits_cnn.yaml", []),
    "lstm": ("char_lstm.yaml", []),
    "transformer": ("tiny_gpt.yaml", []),
    "cnn_bf16": ("digits_cnn.yaml", ["train.precision=bf16-mixed"]),
    "transformer_bf16": ("tiny_gpt.yaml", ["train.precision=bf16-mixed"]),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_training_step_reads_nothing_back(kind):
    config, overrides = KINDS[kind]
    guarded_steps(trainer_for(config, overrides))


def test_the_guard_catches_a_planted_read(monkeypatch):
    tr = trainer_for(*KINDS["mlp"])
    real = tr._optimizer_step

    def planted() -> None:
        real()
        float(tr._last_loss.item())  # what a careless logging line would do

    monkeypatch.setattr(tr, "_optimizer_step", planted)
    with pytest.raises(AssertionError, match="host read inside a training step: item"):
        guarded_steps(tr, 1)
