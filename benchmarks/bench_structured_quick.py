"""Quick speed check of ``method="structured"`` against ``"jacobian"`` and ``"ntk_vp"``.

MLP 784-512-512-10 (670k parameters), ``n = 256`` random inputs, ``mode="trace"``, ``K(x, x)``.
Each method runs once untimed (warm-up), then 3 timed runs; the median is reported, with the
ratios ``jacobian / structured`` and ``ntk_vp / structured`` and the relative difference of the
kernels. ``--skip-slow`` times only ``structured`` (the other two take tens of seconds on 2 cores).

    python benchmarks/bench_structured_quick.py
    python benchmarks/bench_structured_quick.py --n 64 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import ntkmonitor


def _time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="trace")
    parser.add_argument("--skip-slow", action="store_true", help="time only the structured method")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    x = torch.randn(args.n, 784)
    methods = ["structured"] if args.skip_slow else ["structured", "jacobian", "ntk_vp"]
    results = {}
    for method in methods:
        seconds, K = _time(lambda m=method: ntkmonitor.empirical_ntk(model, x, mode=args.mode, method=m), args.repeats)
        results[method] = (seconds, K)
        print(f"{method:>10}: {seconds:8.3f} s (median of {args.repeats})", flush=True)
    t_s, K_s = results["structured"]
    for method in methods[1:]:
        t, K = results[method]
        err = float(torch.linalg.vector_norm(K - K_s) / torch.linalg.vector_norm(K))
        print(f"{method} / structured: {t / t_s:8.1f}x   (relative kernel difference {err:.1e})")
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
