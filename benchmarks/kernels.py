"""Fused Triton kernels against their torch references on a GPU, in one run.

    python benchmarks/kernels.py [--json]

For each kernel at a small and a large size: median time, achieved GB/s (bytes the fused
kernel must read and write, over its time) next to the device's measured copy bandwidth
(read + write of a large device-to-device copy), and the speed-up over the torch reference
it replaces. Attention reports TFLOP/s. Targets (not a test): memory-bound kernels at 80%
or more of the copy bandwidth at large sizes; every kernel faster than its reference.
Needs CUDA; on a machine without one it says so and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dltrain.kernels import attention as KA  # noqa: E402
from dltrain.kernels import batch_norm_act as KB  # noqa: E402
from dltrain.kernels import bias_act as KBA  # noqa: E402
from dltrain.kernels import cross_entropy as KCE  # noqa: E402
from dltrain.kernels import layer_norm as KLN  # noqa: E402
from dltrain.kernels import optimizer as KO  # noqa: E402
from dltrain.kernels import rnn_gates as KR  # noqa: E402


def timed(fn: Callable[[], object], reps: int = 50) -> float:
    """Median ms of fn with CUDA events after a warm-up."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def copy_bandwidth() -> float:
    x = torch.empty(256 * 1024 * 1024 // 4, device="cuda")
    y = torch.empty_like(x)
    ms = timed(lambda: y.copy_(x), 20)
    return 2 * x.numel() * 4 / ms / 1e6  # GB/s, read + write


def cases(dtype: torch.dtype):
    """(name, size label, triton fn, reference fn, bytes moved or None, flops or None)."""
    dev = "cuda"
    es = torch.finfo(dtype).bits // 8
    for n in (1 << 16, 1 << 26):
        p, g = torch.randn(n, device=dev), torch.randn(n, device=dev)
        m, v = torch.zeros_like(p), torch.zeros_like(p)
        yield (
            "adam",
            f"{n:,}",
            lambda: KO.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0, 1, False),
            lambda: KO.adam_step_reference(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0, 1, False),
            7 * n * 4,
            None,
        )
    for M, C in ((256, 1000), (8192, 32768)):
        x = torch.randn(M, C, device=dev, dtype=dtype)
        t = torch.randint(0, C, (M,), device=dev)
        lse = KCE.cross_entropy_fwd(x, t, None, -100, 0.0)[1]  # what the kernel's bwd reads
        gr = torch.ones(M, device=dev)
        yield (
            "cross_entropy fwd+bwd",
            f"{M}x{C}",
            lambda: (
                KCE.cross_entropy_fwd(x, t, None, -100, 0.0),
                KCE.cross_entropy_bwd(x, t, None, -100, 0.0, lse, gr),
            ),
            lambda: torch.nn.functional.cross_entropy(x.float(), t),
            3 * M * C * es,
            None,
        )
    for M, N in ((512, 768), (16384, 4096)):
        x = torch.randn(M, N, device=dev, dtype=dtype)
        w, b = torch.randn(N, device=dev), torch.randn(N, device=dev)
        yield (
            "layer_norm fwd",
            f"{M}x{N}",
            lambda: KLN.layer_norm_fwd(x, w, b, 1e-5),
            lambda: KLN.layer_norm_fwd_reference(x, w, b, 1e-5),
            2 * M * N * es,
            None,
        )
        y, mean, rstd = KLN.layer_norm_fwd_reference(x, w, b, 1e-5)
        yield (
            "layer_norm bwd",
            f"{M}x{N}",
            lambda: KLN.layer_norm_bwd(x, x, w, b, mean, rstd),
            lambda: KLN.layer_norm_bwd_reference(x, x, w, b, mean, rstd),
            3 * M * N * es,
            None,
        )
    for shape in ((32, 64, 16, 16), (128, 256, 32, 32)):
        x = torch.randn(shape, device=dev, dtype=dtype).contiguous(
            memory_format=torch.channels_last
        )
        w, b = torch.randn(shape[1], device=dev), torch.randn(shape[1], device=dev)
        n = x.numel()
        yield (
            "batch_norm+relu fwd",
            "x".join(map(str, shape)),
            lambda: KB.batch_norm_act_fwd(x, w, b, 1e-3, "relu"),
            lambda: KB.batch_norm_act_fwd_reference(x, w, b, 1e-3, "relu"),
            3 * n * es,
            None,
        )
    for M, N in ((512, 1024), (16384, 8192)):
        x = torch.randn(M, N, device=dev, dtype=dtype)
        b = torch.randn(N, device=dev, dtype=dtype)
        yield (
            "bias+relu+dropout fwd",
            f"{M}x{N}",
            lambda: KBA.bias_act_fwd(x, b, "relu", 0.1, 1),
            lambda: torch.nn.functional.dropout(torch.relu(x + b), 0.1),
            2 * M * N * es,
            None,
        )
    for B, H in ((64, 256), (4096, 2048)):
        gates = torch.randn(B, 4 * H, device=dev, dtype=dtype)
        c = torch.randn(B, H, device=dev, dtype=dtype)
        yield (
            "lstm gates fwd",
            f"{B}x{H}",
            lambda: KR.lstm_gates_fwd(gates, c),
            lambda: KR.lstm_gates_fwd_reference(gates, c),
            7 * B * H * es,
            None,
        )
    for Bh, L, E in ((32 * 4, 128, 64), (32 * 16, 1024, 64)):
        q = torch.randn(Bh, L, E, device=dev, dtype=dtype)
        flops = 4 * Bh * L * L * E / 2  # causal
        yield (
            "attention causal fwd",
            f"{Bh}x{L}x{E}",
            lambda: KA.attention_fwd(q, q, q, None, True, None),
            lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True),
            None,
            flops,
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA device; none here.")
        return 0
    bw = copy_bandwidth()
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for name, size, fast, ref, nbytes, flops in cases(dtype):
            t_fast, t_ref = timed(fast), timed(ref)
            row = {
                "kernel": name,
                "dtype": str(dtype).split(".")[-1],
                "size": size,
                "ms": t_fast,
                "reference_ms": t_ref,
                "speedup": t_ref / t_fast,
            }
            if nbytes:
                row["GB/s"] = nbytes / t_fast / 1e6
                row["% of copy bandwidth"] = 100 * row["GB/s"] / bw
            if flops:
                row["TFLOP/s"] = flops / t_fast / 1e9
            rows.append(row)
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "copy_GB/s": bw}
    if args.json:
        print(json.dumps({"info": info, "rows": rows}))
        return 0
    print(f"{info['device']}, torch {info['torch']}, copy bandwidth {bw:,.0f} GB/s")
    for r in rows:
        extra = (
            f"{r['GB/s']:8,.0f} GB/s ({r['% of copy bandwidth']:3.0f}%)"
            if "GB/s" in r
            else f"{r['TFLOP/s']:8.1f} TFLOP/s"
        )
        print(
            f"{r['kernel']:<24} {r['dtype']:<9} {r['size']:>16} {r['ms']:9.4f} ms  {extra}"
            f"  x{r['speedup']:.2f} vs reference"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
