"""Per-call overhead of the kernel engine: what a call costs beyond the method's own computation.

For an MLP, it times in one run (medians of warm calls):

- ``bare``: the chosen method's ``compute`` on a request built once (the work itself);
- ``empirical_ntk``: the one-shot call (selection, profile, method choice, then the work);
- ``NTKFunction``: a call of ``empirical_ntk_fn(model)``, configured once (the profile and the method's analysis
  are cached per input layout; parameters are re-read);
- ``tracker.measure``: a whole measurement (kernel, outputs, linearization, spectrum, predictions).

Overheads are reported as ratios to ``bare``, measured in the same run.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_call_overhead.py                # CPU: MLPs at n=64
    python benchmarks/bench_call_overhead.py --device cuda --n 1024          # GPU: the MLP 784-512-512-10 at n=1024
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import ntkmonitor
from ntkmonitor import kernel
from ntkmonitor._memory import memory_budget
from ntkmonitor._methods.request import KernelRequest


def _median(fn, reps: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(d_in: int, width: int, n: int, device: torch.device, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10)
    ).to(device)
    x = torch.randn(n, d_in, device=device)
    ntk = ntkmonitor.empirical_ntk_fn(model)
    fm = ntk.functional_model()
    with fm.measuring():
        profile = fm.profile(x, n)
    request = KernelRequest(fm, x, None, n, n, ntkmonitor.KernelMode.TRACE, profile, None, memory_budget(fm.device))
    method = kernel.resolve_method(request)

    def bare() -> None:
        with fm.measuring():
            kernel._METHODS[method].compute(request)

    tracker = ntkmonitor.NTKTracker(model, (x, torch.randn(n, 10, device=device)), train_size=1000)
    tracker.reference()
    return {
        "method": method.value,
        "bare": _median(bare, reps, device),
        "empirical_ntk": _median(lambda: ntkmonitor.empirical_ntk(model, x), reps, device),
        "NTKFunction": _median(lambda: ntk(x), reps, device),
        "tracker.measure": _median(lambda: tracker.measure(step=1), max(3, reps // 3), device),
    }


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=None, help="examples (default 64 on CPU, 1024 on CUDA)")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    n = args.n or (64 if device.type == "cpu" else 1024)
    shapes = [(10, 64), (784, 512)] if device.type == "cpu" else [(784, 512)]
    print(f"device {device}, n={n}; times are medians of warm calls; ratios to the method's bare compute")
    print(f"{'MLP':<18} {'method':<11} {'bare':>9} {'empirical_ntk':>20} {'NTKFunction':>20} {'tracker.measure':>16}")
    rows = []
    for d_in, width in shapes:
        r = run(d_in, width, n, device, args.reps)
        rows.append(r)
        b = r["bare"]
        print(
            f"{f'{d_in}-{width}-{width}-10':<18} {r['method']:<11} {b * 1e3:7.2f}ms "
            f"{r['empirical_ntk'] * 1e3:9.2f}ms ({r['empirical_ntk'] / b:4.2f}x) "
            f"{r['NTKFunction'] * 1e3:9.2f}ms ({r['NTKFunction'] / b:4.2f}x) {r['tracker.measure'] * 1e3:13.1f}ms"
        )

    return rows


if __name__ == "__main__":
    main()
