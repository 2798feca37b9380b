"""The kernel shared across processes: 2 processes x 1 thread against 1 process x 1 thread, on the CPU (gloo).

``empirical_ntk(..., distributed=True)`` gives each rank a share of the kernel's rows (for ``K(x, x)`` a band of the
upper triangle, balanced by work) and assembles the whole kernel on every rank with one ``all_reduce``. This times
one kernel per workload (median of ``--repeats``), in one run: alone, then on 2 ranks (the slowest rank's time after
a barrier), and prints the speed-up. The same code runs multi-node with NCCL (``torch.distributed`` with one
process per GPU); the expected speed-up is close to the number of ranks while each rank's share takes much longer
than the ``all_reduce`` of the ``n x n`` result.

Usage::

    python benchmarks/bench_distributed.py                   # MLP 784-512-512-10 (jacobian), CNN (structured)
    python benchmarks/bench_distributed.py --workloads resnet    # bench_entk.py's small ResNet (auto)
    python benchmarks/bench_distributed.py --n 128 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import ntkmonitor

WORKLOADS = ("mlp", "cnn", "resnet")


def _workload(name: str, n: int) -> tuple[nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    if name == "resnet":  # bench_entk.py's small ResNet, method "auto"
        import bench_entk

        config, _, _ = bench_entk.workload_config("resnet", quick=False)
        return bench_entk.build_model(config), bench_entk.make_inputs(config, n), "auto"
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        return model, torch.randn(n, 784), "jacobian"
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 10),
    )  # fmt: skip
    return model, torch.randn(n, 3, 16, 16), "structured"


def _time(name: str, n: int, repeats: int, distributed: bool) -> float:
    model, x, method = _workload(name, n)
    ntkmonitor.empirical_ntk(model, x[:8], method=method, distributed=distributed)  # warm-up
    times = []
    for _ in range(repeats):
        if distributed:
            dist.barrier()
        start = time.perf_counter()
        ntkmonitor.empirical_ntk(model, x, method=method, distributed=distributed)
        if distributed:
            dist.barrier()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rank(rank: int, size: int, store: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    try:
        times = {name: _time(name, args.n, args.repeats, True) for name in args.workloads}
        if rank == 0:
            torch.save(times, out)
        dist.barrier()  # both ranks done with every collective before either tears the group down
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="examples (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed kernels per setting (default 3)")
    parser.add_argument("--workloads", nargs="+", default=["mlp", "cnn"], choices=WORKLOADS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    alone = {name: _time(name, args.n, args.repeats, False) for name in args.workloads}
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.pt")
        mp.spawn(_rank, args=(2, os.path.join(tmp, "store"), args, out), nprocs=2, join=True)
        shared = torch.load(out)
    rows = {}
    print(f"n = {args.n}, trace kernel, median of {args.repeats}; 1 thread per process")
    print(f"{'workload':<10} {'1 x 1':>10} {'2 x 1':>10} {'speed-up':>9}")
    for name in args.workloads:
        rows[name] = {"alone_s": alone[name], "two_ranks_s": shared[name], "speedup": alone[name] / shared[name]}
        print(f"{name:<10} {alone[name]:9.2f}s {shared[name]:9.2f}s {rows[name]['speedup']:8.2f}x")
    return rows


if __name__ == "__main__":
    main()
