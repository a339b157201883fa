"""Data-parallel scaling: training samples per second with 1 and N processes, same global
batch, on the trainer itself (its all-reduce, sharding and flags included).

    python benchmarks/scaling.py [--workloads mlp_wide cnn] [--nproc 1 2] [--steps 30]
                                 [--rounds 3] [--device cpu|cuda] [--sharding] [--batch-size B]
                                 [--json]

Each process count starts its processes through torch.distributed's elastic launcher (as
`dltrain train --nproc N` does), one thread per process on CPU (one GPU per process with
--device cuda). Every process trains on the same synthetic batches of the workload's shape
(configs/bench/); after a warm-up epoch, rank 0 times `rounds` epochs of `steps` steps
between two barriers. Scaling efficiency = (samples/s with N) / (N x samples/s with 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(
    workload: str, steps: int, rounds: int, device: str, sharding: bool, bs: int, out: str
) -> None:
    os.environ["DLTRAIN_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from dltrain.engine.bench import make_batch
    from dltrain.engine.distributed import join
    from dltrain.engine.model import compile_model, to_device
    from dltrain.engine.train.trainer import TrainData, Trainer
    from dltrain.spec import load

    spec = load(
        str(ROOT / "configs" / "bench" / f"{workload}.yaml"),
        [
            f"train.steps_per_epoch={steps}",
            "logging.tensorboard=false",
            f"train.device={device}",
            f"train.distributed.optimizer_sharding={str(sharding).lower()}",
        ]
        + ([f"train.batch_size={bs}"] if bs else []),
    )
    world, dev = join(device, 600)
    if world.size == 1 and device == "cuda":
        dev = torch.device("cuda")
    model = compile_model(spec.model, seed=spec.seed)
    if dev.type != "cpu":
        to_device(model, dev)
    x, y = make_batch(spec, model, dev)
    reps = [1] * x.dim()
    reps[0] = steps
    data = TrainData(x.repeat(*reps).contiguous(), y.repeat(*([steps] + [1] * (y.dim() - 1))))
    tr = Trainer(spec, model, data, dev, world)
    barrier = torch.zeros(1, device=world.device() if world.active else dev)
    tr.epochs = 1
    tr.fit([])  # warm-up
    world.all_reduce_(barrier)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tr.epochs = 1 + rounds
    tr.fit([])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    world.all_reduce_(barrier)
    took = time.perf_counter() - t0
    if world.is_main:
        samples = rounds * steps * spec.train.batch_size
        Path(out).write_text(json.dumps({"seconds": took, "samples": samples}))
    world.close()


def run(workload: str, n: int, args: argparse.Namespace) -> float:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "result.json")
        wargs = [
            __file__,
            "--worker",
            workload,
            "--steps",
            str(args.steps),
            "--rounds",
            str(args.rounds),
            "--device",
            args.device,
            "--out",
            out,
        ]
        wargs += ["--sharding"] if args.sharding else []
        wargs += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        if n == 1:
            import subprocess

            env = dict(os.environ, WORLD_SIZE="1")
            subprocess.run([sys.executable, *wargs], check=True, env=env)
        else:
            cfg = LaunchConfig(
                min_nodes=1,
                max_nodes=1,
                nproc_per_node=n,
                run_id=f"bench{n}",
                rdzv_backend="c10d",
                rdzv_endpoint="127.0.0.1:0",
                max_restarts=0,
            )
            elastic_launch(cfg, sys.executable)(*wargs)
        res = json.loads(Path(out).read_text())
    return res["samples"] / res["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", nargs="+", default=["mlp_wide", "cnn"])
    ap.add_argument("--nproc", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sharding", action="store_true", help="ZeRO-1 optimizer sharding")
    ap.add_argument("--batch-size", type=int, default=0, help="global batch (default: config's)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(
            args.worker,
            args.steps,
            args.rounds,
            args.device,
            args.sharding,
            args.batch_size,
            args.out,
        )
        return
    import torch

    rows = []
    for w in args.workloads:
        base = None
        for n in args.nproc:
            sps = run(w, n, args)
            base = base or (sps if n == 1 else None)
            eff = sps / (n * base) if base else None
            rows.append({"workload": w, "nproc": n, "samples_per_s": sps, "efficiency": eff})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, device {args.device}, sharding {args.sharding}"
    )
    print("| workload | processes | samples/s | scaling efficiency |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        eff = "" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
        print(f"| {r['workload']} | {r['nproc']} | {r['samples_per_s']:.0f} | {eff} |")


if __name__ == "__main__":
    main()
