"""Overhead of ``NTKMonitor`` at its default cadence on the Lightning quickstart's training.

Runs the same training (same seed) without and with the callback, alternating, ``--repeats`` times
each, in one process, after one untimed warm-up pair (the first use of ``torch.func`` in a process costs
a one-time warm-up of about half a second, reported separately as ``cold_start_s``), and reports the
median wall times and their ratio. No logger is attached, so the ratio measures the callback's
measurements, not TensorBoard's disk writes.

    python benchmarks/bench_overhead.py                 # quickstart settings (a few minutes)
    python benchmarks/bench_overhead.py --epochs 2 --repeats 1 --width 64   # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import torch  # noqa: E402
from lightning_quickstart import train  # noqa: E402

import ntkmonitor  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print (and return) the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    times: dict[str, list[float]] = {"without": [], "with": []}
    measurements = []
    warm = {}
    for kind in ("without", "with"):  # untimed warm-up pair
        monitor = ntkmonitor.NTKMonitor(probe_size=128, lr="auto", loss="mse") if kind == "with" else None
        start = time.perf_counter()
        train(width=args.width, epochs=args.epochs, monitor=monitor, n_train=args.n_train)
        warm[kind] = time.perf_counter() - start
    for _ in range(args.repeats):
        for kind in ("without", "with"):
            monitor = ntkmonitor.NTKMonitor(probe_size=128, lr="auto", loss="mse") if kind == "with" else None
            start = time.perf_counter()
            model, _ = train(width=args.width, epochs=args.epochs, monitor=monitor, n_train=args.n_train)
            times[kind].append(time.perf_counter() - start)
            if monitor is not None:
                measurements.append(len(monitor.history))
                with_params = [p.detach().clone() for p in model.parameters()]
            else:
                without_params = [p.detach().clone() for p in model.parameters()]
    identical = all(torch.equal(a, b) for a, b in zip(with_params, without_params, strict=True))
    result = {
        "width": args.width,
        "epochs": args.epochs,
        "n_train": args.n_train,
        "threads": torch.get_num_threads(),
        "median_without_s": statistics.median(times["without"]),
        "median_with_s": statistics.median(times["with"]),
        "measurements_per_run": measurements,
        "bit_identical_weights": identical,
        "cold_start_s": warm["with"] - warm["without"],
    }
    result["overhead"] = result["median_with_s"] / result["median_without_s"] - 1
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
