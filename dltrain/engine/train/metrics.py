"""Metrics accumulated on the device; read (one host sync) only when reported.

Classification keeps a confusion matrix, from which accuracy and macro precision, recall
and F1 follow; top-k keeps a hit count; regression keeps error sums.
"""

from __future__ import annotations

import math
from typing import Any

import torch

MAX_CONFUSION = 256


class MetricState:
    def __init__(self, metrics: list[Any], task: str, n_out: int, device: Any) -> None:
        self.metrics = metrics
        self.task = task
        self.n = n_out if n_out > 1 else 2
        self.device = device
        self.binary = n_out == 1
        self.ks = sorted({m.k for m in metrics if m.type == "top_k_accuracy"})
        # a confusion matrix for up to MAX_CONFUSION classes (a word-level language model's
        # vocabulary would need too much memory); accuracy and top-k need only counts
        self.full = self.n <= MAX_CONFUSION
        self.reset()

    def reset(self) -> None:
        dev = self.device
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.count = torch.zeros((), dtype=torch.float64, device=dev)
        self.confusion = torch.zeros(
            self.n * self.n if self.full else 0, dtype=torch.float64, device=dev
        )
        self.correct = torch.zeros((), dtype=torch.float64, device=dev)
        self.labels = torch.zeros((), dtype=torch.float64, device=dev)
        self.topk = torch.zeros(len(self.ks), dtype=torch.float64, device=dev)
        self.sq_err = torch.zeros((), dtype=torch.float64, device=dev)
        self.abs_err = torch.zeros((), dtype=torch.float64, device=dev)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "loss_sum": self.loss_sum,
            "count": self.count,
            "confusion": self.confusion,
            "correct": self.correct,
            "labels": self.labels,
            "topk": self.topk,
            "sq_err": self.sq_err,
            "abs_err": self.abs_err,
        }

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, v in tensors.items():
            getattr(self, k).copy_(v)

    @torch.no_grad()
    def update(
        self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor, logits: bool = True
    ) -> None:
        """out: the model's outputs, logits or probabilities (argmax is the same; a single
        binary unit is thresholded at 0 for logits, 0.5 for probabilities). Outputs with a
        class per step, (N, classes, steps), count every step's label."""
        b = out.shape[0]
        self.loss_sum += loss.detach().to(torch.float64) * b
        self.count += b
        if self.task == "classification":
            if out.dim() > 2 and not self.binary and not y.is_floating_point():
                out = out.movedim(1, -1).reshape(-1, out.shape[1])  # (N * steps, classes)
            if self.binary:
                pred = (out.reshape(-1) > (0.0 if logits else 0.5)).long()
            else:
                pred = out.argmax(1)
            yi = y.long().reshape(-1) if not y.is_floating_point() or y.dim() == 1 else y.argmax(1)
            self.correct += (pred == yi).sum()
            self.labels += yi.numel()
            if self.full:
                self.confusion += torch.bincount(yi * self.n + pred, minlength=self.n * self.n).to(
                    torch.float64
                )
            for i, k in enumerate(self.ks):
                top = out.topk(min(k, out.shape[1]), 1).indices
                self.topk[i] += (top == yi.view(-1, 1)).any(1).sum()
        else:
            d = out.reshape(b, -1).to(torch.float64) - y.reshape(b, -1).to(torch.float64)
            self.sq_err += (d * d).mean(1).sum()
            self.abs_err += d.abs().mean(1).sum()

    def results(self) -> dict[str, float]:
        """Read everything to the host (one sync)."""
        count = max(self.count.item(), 1.0)
        res = {"loss": self.loss_sum.item() / count}
        if self.task == "classification":
            labels = max(self.labels.item(), 1.0)
            for m in self.metrics:
                if m.type == "accuracy":
                    res["accuracy"] = self.correct.item() / labels
                elif m.type == "top_k_accuracy":
                    res[f"top_{m.k}_accuracy"] = self.topk[self.ks.index(m.k)].item() / labels
        if self.task == "classification" and self.full:
            cm = self.confusion.view(self.n, self.n).cpu()
            tp = cm.diag()
            pred_n, true_n = cm.sum(0), cm.sum(1)
            prec = torch.where(pred_n > 0, tp / pred_n.clamp(min=1), torch.zeros_like(tp))
            rec = torch.where(true_n > 0, tp / true_n.clamp(min=1), torch.zeros_like(tp))
            f1 = torch.where(
                prec + rec > 0, 2 * prec * rec / (prec + rec).clamp(min=1e-12), torch.zeros_like(tp)
            )
            present = true_n > 0
            for m in self.metrics:
                if m.type in ("precision", "recall", "f1"):
                    v = {"precision": prec, "recall": rec, "f1": f1}[m.type]
                    res[m.type] = v[present].mean().item() if present.any() else 0.0
        for m in self.metrics:
            if m.type == "perplexity":  # of the cross-entropy averaged over the samples
                res["perplexity"] = math.exp(min(res["loss"], 700.0))
            if m.type == "mse":
                res["mse"] = self.sq_err.item() / count
            elif m.type == "mae":
                res["mae"] = self.abs_err.item() / count
        return res

    def confusion_matrix(self) -> torch.Tensor:
        return self.confusion.view(self.n, self.n).cpu().long()
