"""Learning-rate schedules: lr as a function of the optimizer step (and, for
reduce_on_plateau, of the metrics seen at epoch ends). State is plain JSON for checkpoints."""

from __future__ import annotations

import math
from typing import Any


class Schedule:
    def __init__(self, spec: Any, base_lr: float, total_steps: int, steps_per_epoch: int):
        self.spec = spec
        self.base_lr = base_lr
        self.total = max(total_steps, 1)
        self.per_epoch = max(steps_per_epoch, 1)
        self.factor = 1.0  # reduce_on_plateau's cumulative cut
        self.best: float | None = None
        self.wait = 0
        self.cooldown = 0

    def lr(self, step: int) -> float:
        """Learning rate for optimizer step `step` (0-based)."""
        s = self.spec
        warm = s.warmup_steps if s is not None else 0
        if warm and step < warm:
            return self.base_lr * (step + 1) / warm
        k = step - warm
        lr = self.base_lr
        t = s.type if s is not None else "constant"
        if t == "step":
            lr *= s.gamma ** (step // self.per_epoch // s.step_size)
        elif t == "exponential":
            e = k / s.decay_steps
            lr *= s.decay_rate ** (math.floor(e) if s.staircase else e)
        elif t == "cosine":
            n = s.decay_steps or max(self.total - warm, 1)
            c = 0.5 * (1 + math.cos(math.pi * min(k, n) / n))
            lr *= s.alpha + (1 - s.alpha) * c
        elif t == "reduce_on_plateau":
            lr = max(lr * self.factor, s.min_lr)
        return lr

    def epoch_end(self, logs: dict[str, float]) -> str | None:
        """Update reduce_on_plateau; returns a message when the lr is cut."""
        s = self.spec
        if s is None or s.type != "reduce_on_plateau":
            return None
        if s.monitor not in logs:
            return None
        value = logs[s.monitor]
        better = improved(value, self.best, s.mode, s.monitor, s.min_delta)
        if self.cooldown > 0:
            self.cooldown -= 1
        if better:
            self.best, self.wait = value, 0
            return None
        self.wait += 1
        if self.wait > s.patience and self.cooldown == 0:
            old = self.base_lr * self.factor
            if old > s.min_lr:  # already at the floor: nothing left to cut
                self.factor *= s.factor
                self.wait, self.cooldown = 0, s.cooldown
                return (
                    f"{s.monitor} stalled; learning rate {old:.3g} -> "
                    f"{max(old * s.factor, s.min_lr):.3g}"
                )
        return None

    def state(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "best": self.best,
            "wait": self.wait,
            "cooldown": self.cooldown,
        }

    def load(self, st: dict[str, Any]) -> None:
        self.factor, self.best = st["factor"], st["best"]
        self.wait, self.cooldown = st["wait"], st["cooldown"]


def mode_for(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if any(k in monitor for k in ("acc", "precision", "recall", "f1")) else "min"


def improved(
    value: float, best: float | None, mode: str, monitor: str, min_delta: float = 0.0
) -> bool:
    if best is None:
        return True
    if mode_for(monitor, mode) == "max":
        return value > best + min_delta
    return value < best - min_delta
