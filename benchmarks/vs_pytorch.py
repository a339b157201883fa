"""dltrain against plain PyTorch eager on the workloads of configs/bench/, side by side.

    python benchmarks/vs_pytorch.py [--device cpu|cuda] [--precision fp32|bf16]
                                    [--steps 50] [--rounds 3] [--json]

Each workload runs as `dltrain bench` does (the trainer's model, fused loss, flat-buffer
Adam) and as the same network in torch.nn with torch.autograd and torch.optim.Adam, timed
the same way (median ms per full step after a warm-up). The two alternate step by step, so
machine noise and drift hit both alike. Prints both medians and the ratio dltrain / PyTorch.
Targets (checked here, not in tests): ratio <= 1.0 on every workload. The language models'
PyTorch loss is written the idiomatic way (nanoGPT's `logits.view(-1, V)`, `targets.view(-1)`).
`--precision bf16` runs dltrain's `train.precision: bf16-mixed` against PyTorch's
`torch.autocast(device, dtype=torch.bfloat16)` around forward and loss (float32 weights and
Adam on both sides); `fp16` against autocast float16 (CUDA). `--malloc keep` gives the
whole process (both sides) the malloc settings `dltrain train` uses (dltrain.run.host:
freed memory kept for reuse, no page faults per step); by default both run on glibc's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dltrain.engine.bench import Stepper  # noqa: E402
from dltrain.run.host import keep_freed_memory  # noqa: E402
from dltrain.spec import load  # noqa: E402

WORKLOADS = ["mlp_seed", "mlp_wide", "cnn", "dcgan_g", "char_lstm", "tiny_gpt"]
OURS = {"fp32": "fp32", "bf16": "bf16-mixed", "fp16": "fp16-mixed"}


class CharLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lstm = nn.Embedding(48, 32), nn.LSTM(32, 128, batch_first=True)
        self.head = nn.Linear(128, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.emb(x))[0])  # (N, steps, classes)


class TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(48, 64), nn.Embedding(64, 64)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(64, 4, 128, 0.1, batch_first=True, norm_first=True)
            for _ in range(2)
        )
        self.norm, self.head = nn.LayerNorm(64), nn.Linear(64, 48)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos.weight[: x.shape[1]]
        for b in self.blocks:
            h = b(h, src_mask=self.mask, is_causal=True)
        return self.head(self.norm(h))


def torch_model(name: str) -> tuple[nn.Module, tuple, str]:
    """(model, input shape per sample, loss kind) written as a PyTorch user would."""
    if name == "char_lstm":
        return CharLSTM(), (48,), "lm"
    if name == "tiny_gpt":
        return TinyGPT(), (64,), "lm"
    if name == "mlp_seed":
        return nn.Sequential(nn.Linear(100, 64), nn.ReLU(), nn.Linear(64, 10)), (100,), "ce"
    if name == "mlp_wide":
        return (
            nn.Sequential(
                nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
            ),
            (784,),
            "ce",
        )
    if name == "cnn":
        layers: list[nn.Module] = []
        c = 3
        for f in (32, 64, 128):
            layers += [
                nn.Conv2d(c, f, 3, padding=1),
                nn.BatchNorm2d(f, eps=1e-3, momentum=0.01),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c = f
        layers += [
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(256, 10),
        ]
        return nn.Sequential(*layers), (3, 32, 32), "ce"
    bn = lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # noqa: E731
    return (
        nn.Sequential(
            nn.Linear(100, 8 * 8 * 256, bias=False),
            nn.ReLU(),
            nn.Unflatten(1, (256, 8, 8)),
            bn(256),
            nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False),
            bn(128),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False),
            bn(64),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False),
            nn.Tanh(),
        ),
        (100,),
        "mse",
    )


class TorchStepper:
    """The same workload as a PyTorch user writes it; one full step per call."""

    def __init__(
        self, name: str, batch: int, device: str, compiled: bool = False, amp: str = "fp32"
    ) -> None:
        torch.manual_seed(0)
        self.amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.device_type = torch.device(device).type
        model, shape, kind = torch_model(name)
        self.model = model.to(device).train()
        self.forward = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)
        self.x = torch.randn(batch, *shape, device=device)
        self.lm = kind == "lm"
        if kind == "lm":  # token ids in, the next token at every step out
            self.x = torch.randint(0, 48, (batch, *shape), device=device)
            self.y = torch.randint(0, 48, (batch, *shape), device=device)
            self.loss_fn: nn.Module = nn.CrossEntropyLoss()
        elif kind == "ce":
            self.y = torch.randint(0, 10, (batch,), device=device)
            self.loss_fn = nn.CrossEntropyLoss()
        else:
            self.y = torch.randn(batch, 3, 64, 64, device=device)
            self.loss_fn = nn.MSELoss()
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def __call__(self) -> float:
        self.sync()
        t0 = time.perf_counter()
        with torch.autocast(self.device_type, self.amp, enabled=self.amp is not None):
            out = self.forward(self.x)
            if self.lm:  # as nanoGPT writes it: logits.view(-1, V) against targets.view(-1)
                loss = self.loss_fn(out.view(-1, out.shape[-1]), self.y.view(-1))
            else:
                loss = self.loss_fn(out, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sync()
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=WORKLOADS)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--malloc", choices=["default", "keep"], default="default")
    ap.add_argument(
        "--compile", action="store_true", help="also time PyTorch with torch.compile (GPU table)"
    )
    args = ap.parse_args()
    if args.malloc == "keep" and not keep_freed_memory():
        print("--malloc keep: glibc's mallopt is not available here", file=sys.stderr)
        return 2
    rows = []
    for name in args.only:
        spec = load(str(ROOT / "configs" / "bench" / f"{name}.yaml"))
        steps = (
            args.steps * args.rounds
            if name.startswith(("mlp", "char"))
            else max(20, args.steps * args.rounds // 5)
        )
        ours, theirs = (
            Stepper(spec, args.device, OURS[args.precision]),
            TorchStepper(name, spec.train.batch_size, args.device, amp=args.precision),
        )
        for _ in range(5):
            ours()
            theirs()
        a_t, b_t = [], []
        for _ in range(steps):  # step by step in lockstep: noise and drift hit both sides
            a_t.append(sum(ours()))
            b_t.append(theirs())
        a, b = 1000 * statistics.median(a_t), 1000 * statistics.median(b_t)
        row = {"workload": name, "dltrain_ms": a, "pytorch_ms": b, "ratio": a / b}
        if args.compile:
            comp = TorchStepper(
                name, spec.train.batch_size, args.device, compiled=True, amp=args.precision
            )
            for _ in range(10):  # compilation happens here
                comp()
            c = 1000 * statistics.median([comp() for _ in range(steps)])
            row.update(compiled_ms=c, ratio_vs_compiled=a / c)
        rows.append(row)
    info = {
        "device": args.device,
        "precision": args.precision,
        "malloc": args.malloc,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps({"info": info, "rows": rows}))
        return 0
    print(
        f"device {info['device']}, {info['precision']}, malloc {info['malloc']}, "
        f"torch {info['torch']}, "
        f"{info['threads']} threads, {info['date']}"
    )
    extra = f" {'compiled ms':>12} {'ratio':>7}" if args.compile else ""
    print(f"{'workload':<10} {'dltrain ms':>11} {'pytorch ms':>11} {'ratio':>7}{extra}")
    for r in rows:
        flag = "" if r["ratio"] <= 1.0 else "  > 1.0"
        more = f" {r['compiled_ms']:>12.3f} {r['ratio_vs_compiled']:>7.2f}" if args.compile else ""
        print(
            f"{r['workload']:<10} {r['dltrain_ms']:>11.3f} {r['pytorch_ms']:>11.3f} "
            f"{r['ratio']:>7.2f}{more}{flag}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
