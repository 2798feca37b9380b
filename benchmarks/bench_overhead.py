"""Overhead of ``NTKMonitor`` at its default cadence on the Lightning quickstart's training.

Two measurements, both from one process:

- **direct**: the wall time spent inside the callback's hooks (reference, measurements, logging,
  final measurement) divided by the rest of the run's wall time. This is robust to machine noise.
- **A/B**: the same training (same seed) without and with the callback, alternating, ``--repeats``
  times each after one untimed warm-up pair, as the ratio of median wall times. On a shared machine
  run-to-run noise can exceed the effect; the per-run times are printed so this can be judged.

The first use of ``torch.func`` in a process costs a one-time warm-up, reported as ``cold_start_s``.
No logger is attached (no disk writes). It also checks that the weights are bit-identical.

    python benchmarks/bench_overhead.py                  # quickstart settings (~5 minutes)
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


class TimedMonitor(ntkmonitor.NTKMonitor):
    """``NTKMonitor`` that adds up the wall time spent in its hooks."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hook_seconds = 0.0

    def _timed_hook(self, hook, *args) -> None:
        start = time.perf_counter()
        try:
            hook(*args)
        finally:
            self.hook_seconds += time.perf_counter() - start

    def on_train_start(self, *args) -> None:  # noqa: D102
        self._timed_hook(super().on_train_start, *args)

    def on_train_batch_end(self, *args) -> None:  # noqa: D102
        self._timed_hook(super().on_train_batch_end, *args)

    def on_train_end(self, *args) -> None:  # noqa: D102
        self._timed_hook(super().on_train_end, *args)


def _monitor() -> TimedMonitor:
    return TimedMonitor(probe_size=128, lr="auto", loss="mse")  # the quickstart's settings


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print (and return) the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=250)
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    run = dict(width=args.width, epochs=args.epochs, n_train=args.n_train)

    warm = {}
    for kind in ("without", "with"):  # untimed warm-up pair
        start = time.perf_counter()
        train(monitor=_monitor() if kind == "with" else None, **run)
        warm[kind] = time.perf_counter() - start

    times: dict[str, list[float]] = {"without": [], "with": []}
    direct, measurements = [], []
    for _ in range(args.repeats):
        for kind in ("without", "with"):
            monitor = _monitor() if kind == "with" else None
            start = time.perf_counter()
            model, _ = train(monitor=monitor, **run)
            elapsed = time.perf_counter() - start
            times[kind].append(elapsed)
            params = [p.detach().clone() for p in model.parameters()]
            if monitor is None:
                without_params = params
                continue
            with_params = params
            measurements.append(len(monitor.history))
            direct.append(monitor.hook_seconds / (elapsed - monitor.hook_seconds))
    identical = all(torch.equal(a, b) for a, b in zip(with_params, without_params, strict=True))
    result = {
        **run,
        "threads": torch.get_num_threads(),
        "direct_overhead_median": statistics.median(direct),
        "direct_overhead_per_run": [round(d, 4) for d in direct],
        "ab_overhead": statistics.median(times["with"]) / statistics.median(times["without"]) - 1,
        "times_without_s": [round(t, 2) for t in times["without"]],
        "times_with_s": [round(t, 2) for t in times["with"]],
        "measurements_per_run": measurements,
        "bit_identical_weights": identical,
        "cold_start_s": round(warm["with"] - warm["without"], 2),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
