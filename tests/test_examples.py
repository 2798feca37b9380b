"""Smoke tests: every example and benchmark runs with tiny settings and produces its outputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(relative: str):
    path = ROOT / relative
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def test_quickstart_prints_kernel_facts(capsys):
    facts = _load("examples/quickstart.py").main(["--width", "32", "--probe-size", "16", "--steps", "3"])
    out = capsys.readouterr().out
    assert "exactly symmetric: True" in out and "effective rank" in out
    assert facts["method_rel_diff"] < 1e-5 and facts["kernel_distance"] >= 0


@pytest.mark.filterwarnings("ignore::ntkmonitor.NTKMonitorWarning")
def test_lightning_quickstart_writes_tensorboard_logs(tmp_path, capsys):
    monitor = _load("examples/lightning_quickstart.py").main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {tmp_path}" in out
    assert list(tmp_path.rglob("events.out.tfevents*")) and list(tmp_path.rglob("ntk_history.json"))
    assert len(monitor.history) >= 2 and monitor.history[-1].verdict in ("lazy", "drifting", "feature-learning")


@pytest.mark.filterwarnings("ignore::ntkmonitor.NTKMonitorWarning")
def test_overhead_benchmark_runs_and_training_is_bit_identical():
    result = _load("benchmarks/bench_overhead.py").main(
        ["--width", "16", "--epochs", "1", "--n-train", "128", "--repeats", "1"]
    )
    assert result["bit_identical_weights"] is True
    assert 0 < result["direct_overhead_median"] and len(result["times_with_s"]) == 1
