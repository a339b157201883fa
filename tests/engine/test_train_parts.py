"""Trainer parts against independent oracles: metrics vs scikit-learn, schedules vs their
formulas, early stopping."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dltrain.engine.train.metrics import MetricState
from dltrain.engine.train.schedules import Schedule
from dltrain.spec.schema import (
    AccuracySpec,
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    F1Spec,
    MAESpec,
    MSESpec,
    PrecisionSpec,
    RecallSpec,
    ReduceOnPlateauSchedule,
    StepSchedule,
    TopKAccuracySpec,
)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    specs = [
        AccuracySpec(type="accuracy"),
        PrecisionSpec(type="precision"),
        RecallSpec(type="recall"),
        F1Spec(type="f1"),
        TopKAccuracySpec(type="top_k_accuracy", k=3),
    ]
    ms = MetricState(specs, "classification", 5, "cpu")
    ys, outs = [], []
    for _ in range(4):  # several batches accumulate
        out = torch.tensor(rng.standard_normal((37, 5)), dtype=torch.float32)
        y = torch.tensor(rng.integers(0, 5, 37))
        ms.update(torch.tensor(0.5), out, y)
        ys.append(y.numpy())
        outs.append(out.numpy())
    y, out = np.concatenate(ys), np.concatenate(outs)
    pred = out.argmax(1)
    res = ms.results()
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for name, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        assert res[name] == pytest.approx(fn(y, pred, average="macro", zero_division=0))
    assert res["top_3_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, out, k=3))
    assert np.array_equal(ms.confusion_matrix().numpy(), skm.confusion_matrix(y, pred))
    assert res["loss"] == pytest.approx(0.5)


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    ms = MetricState([MSESpec(type="mse"), MAESpec(type="mae")], "regression", 1, "cpu")
    y, out = rng.standard_normal((50, 1)), rng.standard_normal((50, 1))
    ms.update(torch.tensor(0.0), torch.tensor(out), torch.tensor(y))
    res = ms.results()
    assert res["mse"] == pytest.approx(skm.mean_squared_error(y, out))
    assert res["mae"] == pytest.approx(skm.mean_absolute_error(y, out))


def test_schedules_follow_their_formulas():
    base = 0.1
    s = Schedule(ConstantSchedule(type="constant", warmup_steps=4), base, 100, 10)
    assert [s.lr(i) for i in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    s = Schedule(StepSchedule(type="step", step_size=2, gamma=0.5), base, 100, 10)
    assert s.lr(19) == pytest.approx(0.1) and s.lr(20) == pytest.approx(0.05)
    assert s.lr(45) == pytest.approx(0.025)
    s = Schedule(
        ExponentialSchedule(type="exponential", decay_steps=10, decay_rate=0.5, staircase=True),
        base,
        100,
        10,
    )
    assert s.lr(9) == pytest.approx(0.1) and s.lr(10) == pytest.approx(0.05)
    s = Schedule(
        ExponentialSchedule(type="exponential", decay_steps=10, decay_rate=0.5), base, 100, 10
    )
    assert s.lr(5) == pytest.approx(0.1 * 0.5**0.5)
    s = Schedule(CosineSchedule(type="cosine", warmup_steps=10, alpha=0.1), base, 110, 10)
    assert s.lr(9) == pytest.approx(0.1)
    assert s.lr(60) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert s.lr(110) == pytest.approx(0.01)


def test_reduce_on_plateau():
    spec = ReduceOnPlateauSchedule(type="reduce_on_plateau", patience=1, factor=0.5, min_lr=0.02)
    s = Schedule(spec, 0.1, 100, 10)
    for v in (1.0, 0.9, 0.95, 0.96):
        s.epoch_end({"val_loss": v})
    assert s.lr(0) == pytest.approx(0.05)
    s.epoch_end({"val_loss": 0.97})
    s.epoch_end({"val_loss": 0.98})
    assert s.lr(0) == pytest.approx(0.025)
    for _ in range(6):
        s.epoch_end({"val_loss": 1.5})
    assert s.lr(0) == pytest.approx(0.02)  # never below min_lr
    restored = Schedule(spec, 0.1, 100, 10)
    restored.load(s.state())
    assert restored.lr(0) == s.lr(0)


def test_sample_grids_are_large_enough_to_see():
    import numpy as np

    from dltrain.engine.train.tblog import tile

    grid = tile(np.zeros((16, 8, 8, 1), np.float32), 0.0, 1.0)
    assert grid.shape[1] >= 512 and grid.dtype == np.uint8
