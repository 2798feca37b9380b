"""Every kernel method on the model zoo of ``tests/test_zoo.py``: which runs, and how long it takes.

For each model (BERT and GPT-2 with padding masks, RNN, GRU, LSTM, ``weight_norm``, ``spectral_norm``, a ResNet,
a ViT, a zero-initialized adapter), each method computes the trace kernel ``K(x, x)`` of ``n`` examples in
float32: the median wall time of ``--repeats`` calls after one untimed call (which includes ``auto``'s one-time
trials), or the reason the method cannot run the model. ``auto``'s column names the method it chose.

    OMP_NUM_THREADS=1 python benchmarks/bench_zoo.py --n 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ntkmonitor  # noqa: E402
from ntkmonitor.kernel import method_report  # noqa: E402
from tests.test_zoo import ZOO  # noqa: E402

METHODS = ("jacobian", "ntk_vp", "structured", "jacobian_loop", "auto")


def widen(x, n: int):
    """A batch of ``n`` examples like ``x`` (float inputs redrawn, token ids tiled)."""
    g = torch.Generator().manual_seed(0)
    if isinstance(x, dict):
        return {k: v.repeat((n + v.shape[0] - 1) // v.shape[0], *([1] * (v.ndim - 1)))[:n] for k, v in x.items()}
    return torch.randn(n, *x.shape[1:], generator=g)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="examples (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, str]] = {}
    for name, make in ZOO.items():
        results[name] = {}
        for method in METHODS:
            model, x, output_fn = make()
            x = widen(x, args.n)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ntkmonitor.empirical_ntk(model, x, method=method, output_fn=output_fn)
                    times = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        ntkmonitor.empirical_ntk(model, x, method=method, output_fn=output_fn)
                        times.append(time.perf_counter() - start)
                cell = f"{statistics.median(times):.3f} s"
                if method == "auto":
                    cell += f" ({method_report(model)[0].method.value})"
            except ntkmonitor.NTKMonitorError as err:
                reason = str(err).split("torch.func failed: ")[-1].split(":")[0]
                cell = f"refused ({reason})"
            results[name][method] = cell
            print(f"{name:14s} {method:14s} {cell}", flush=True)
    print()
    print("| model | " + " | ".join(f"`{m}`" for m in METHODS) + " |")
    print("|---|" + "---|" * len(METHODS))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(row[m] for m in METHODS) + " |")
    return results


if __name__ == "__main__":
    main()
