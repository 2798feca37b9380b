"""Smoke test of ``benchmarks/bench_entk.py``: tiny sizes, every workload but resnet18, every torch contender.

The neural-tangents contenders need their own environment (see the benchmark's docstring); they run
here only when ``NTKMONITOR_NT_PYTHON`` names its python. The torch part always runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_examples import _load

TORCH_CONTENDERS = ["ntkmonitor:jacobian", "ntkmonitor:ntk_vp", "ntkmonitor:structured", "ntkmonitor:auto", "recipe"]
# torch.func has no batching rule for CPU flash-attention's backward (the transformer workload); it falls back
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
RECORD_KEYS = {"times_s", "median_s", "min_s", "max_s", "warmup_s", "peak_mib", "rel_err", "speedup_vs_recipe"}


@pytest.fixture(scope="module")
def bench():
    return _load("benchmarks/bench_entk.py")


def _check_runs(result: dict, expected: set[tuple[str, str]], contenders: list[str]) -> None:
    assert {(run["workload"], run["mode"]) for run in result["runs"]} == expected
    for run in result["runs"]:
        assert {"n", "k", "num_params", "reference", "contenders", "nt_best"} <= set(run)
        assert list(run["contenders"]) == contenders
        for name, rec in run["contenders"].items():
            where = f"{run['workload']}/{run['mode']}/{name}"
            assert "error" not in rec, f"{where}: {rec.get('error')}"
            assert RECORD_KEYS <= set(rec), where
            assert rec["rel_err"] < 1e-4, f"{where}: relative error {rec['rel_err']:.2e}"
            assert rec["min_s"] <= rec["median_s"] <= rec["max_s"] and rec["median_s"] > 0
            assert rec["speedup_vs_recipe"] > 0
            assert rec["peak_mib"] is None or rec["peak_mib"] >= 0
        assert run["contenders"]["recipe"]["speedup_vs_recipe"] == pytest.approx(1.0)


def test_bench_entk_quick_every_workload_and_torch_contender(bench, tmp_path, capsys):
    out = tmp_path / "entk.json"
    result = bench.main(
        [
            "--quick",
            "--workloads",
            "mlp,resnet,mobilenet,transformer",
            "--contenders",
            ",".join(TORCH_CONTENDERS),
            "--repeats",
            "1",
            "--threads",
            "1",
            "--isolate",
            "none",
            "--json",
            str(out),
        ]
    )
    expected = {
        ("mlp", "trace"),
        ("mlp", "full"),
        ("resnet", "trace"),
        ("mobilenet", "trace"),
        ("transformer", "trace"),
    }
    _check_runs(result, expected, TORCH_CONTENDERS)
    auto = [run["contenders"]["ntkmonitor:auto"]["auto_choice"] for run in result["runs"]]
    assert set(auto) <= {"jacobian", "ntk_vp", "structured"}
    assert json.loads(out.read_text())["machine"]["torch"] == result["machine"]["torch"]
    printed = capsys.readouterr().out
    assert "| contender | median s |" in printed and "### transformer (trace)" in printed


def test_bench_entk_subprocess_isolation_and_nt_when_available(bench, capsys):
    """One contender in a fresh process (the default on CPU); neural-tangents too if its env is given."""
    nt_python = os.environ.get("NTKMONITOR_NT_PYTHON")
    contenders = ["ntkmonitor:structured"] + (["neural-tangents:JACOBIAN_CONTRACTION"] if nt_python else [])
    result = bench.main(
        ["--quick", "--workloads", "mlp", "--modes", "trace", "--repeats", "1", "--threads", "1"]
        + ["--contenders", ",".join(contenders)]
    )
    if not nt_python:
        assert "neural-tangents" not in " ".join(result["runs"][0]["contenders"])
        assert result["neural_tangents"]["skipped"] == "not requested"
        contenders = contenders[:1]
    (run,) = result["runs"]
    for name in contenders:
        rec = run["contenders"][name]
        assert "error" not in rec, rec.get("error")
        assert rec["rel_err"] < 1e-4 and rec["median_s"] > 0 and rec["peak_mib"] is not None
    if nt_python:
        assert run["nt_best"] == "neural-tangents:JACOBIAN_CONTRACTION"
        assert run["contenders"]["ntkmonitor:structured"]["speedup_vs_nt_best"] > 0


def test_bench_entk_skips_neural_tangents_with_a_reason(bench, monkeypatch, capsys):
    monkeypatch.delenv("NTKMONITOR_NT_PYTHON", raising=False)
    result = bench.main(["--quick", "--workloads", "mlp", "--modes", "trace", "--repeats", "1", "--threads", "1",
                         "--isolate", "none", "--contenders", "recipe,nt"])  # fmt: skip
    assert "neural-tangents skipped: no --nt-python" in capsys.readouterr().out
    assert result["neural_tangents"]["skipped"].startswith("no --nt-python")
    assert list(result["runs"][0]["contenders"]) == ["recipe"]


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        # measured with this benchmark on 2 CPU cores (1 thread), trace mode:
        ("mlp", "structured"),  # structured 0.042 s, jacobian 38.6 s, ntk_vp 22.8 s
        ("resnet", "structured"),  # structured 2.28 s, jacobian 3.15 s, ntk_vp 112 s
        ("mobilenet", "structured"),  # structured 7.0 s, jacobian 11.4 s
        ("transformer", "jacobian"),  # jacobian 0.41 s, structured 0.58 s, ntk_vp 8.15 s
    ],
)
def test_auto_picks_the_method_measured_faster_on_the_benchmark_workloads(bench, workload, expected):
    from ntkmonitor import kernel
    from ntkmonitor._functional import FunctionalModel
    from ntkmonitor._methods.request import KernelRequest
    from ntkmonitor.options import KernelMode

    config, n, _ = bench.workload_config(workload, False)
    model = bench.build_model(config).eval()
    x = bench.make_inputs(config, n)
    fm = FunctionalModel(model)
    with fm.measuring():
        profile = fm.profile(x, n)
        problem = KernelRequest(fm, x, None, n, n, KernelMode.TRACE, profile, None, budget=1 << 30)
        assert kernel.resolve_method(problem).value == expected


def test_bench_prediction_quick_runs_and_the_estimator_beats_the_old_policy(tmp_path):
    """Smoke test of ``benchmarks/bench_prediction.py`` ({-1,1}^8, M = 32, 3 probes). The full grid's numbers are in
    benchmarks/RESULTS.md; here only that it runs, writes its outputs, and ranks the two policies as documented."""
    import math

    bench = _load("benchmarks/bench_prediction.py")
    result = bench.main(["--quick", "--json", str(tmp_path / "p.json"), "--markdown", str(tmp_path / "p.md")])
    assert json.loads((tmp_path / "p.json").read_text())["grid_points"] == len(result["rows"]) == 6
    assert "| M | target | n/M |" in (tmp_path / "p.md").read_text()
    for row in result["rows"]:
        assert row["truth"]["trials"] >= 4 and 0 <= row["new"]["coverage"] <= 1
    error = {
        policy: sum(abs(math.log(r[policy]["mse_ratio"])) for r in result["rows"]) / len(result["rows"])
        for policy in ("old", "new")
    }
    assert error["new"] < error["old"], error


def test_bench_call_overhead_runs():
    """Smoke test of ``benchmarks/bench_call_overhead.py`` (the numbers themselves are in RESULTS.md)."""
    bench = _load("benchmarks/bench_call_overhead.py")
    rows = bench.main(["--reps", "5"])
    assert [row["method"] for row in rows] and all(row["bare"] > 0 for row in rows)


def test_bench_entk_ddp_workload_runs_the_shared_kernel(bench, monkeypatch, capsys):
    """``--workloads ddp`` times the kernel on 2 gloo processes against 1 (MLP and ResNet) and checks its target."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))  # spawned ranks import it
    result = bench.main(["--workloads", "ddp", "--n", "8", "--repeats", "1", "--threads", "1"])
    assert set(result["ddp"]) == {"mlp", "resnet"}
    assert all(row["alone_s"] > 0 and row["two_ranks_s"] > 0 for row in result["ddp"].values())
    assert [t["target"] for t in result["targets"]] == ["DDP split, 2 processes >= 1.7x faster than 1"]
    assert "2 x 1" in capsys.readouterr().out


def test_bench_distributed_runs_on_two_processes(monkeypatch):
    """Smoke test of ``benchmarks/bench_distributed.py`` (2 gloo processes; the numbers are in RESULTS.md)."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))  # spawned ranks import it
    bench = importlib.import_module("bench_distributed")
    rows = bench.main(["--n", "16", "--repeats", "1", "--workloads", "cnn"])
    assert rows["cnn"]["alone_s"] > 0 and rows["cnn"]["two_ranks_s"] > 0


def test_bench_large_probe_smoke(monkeypatch):
    """Smoke test of ``benchmarks/bench_large_probe.py`` (the 16k-point numbers are in RESULTS.md): the checks it
    reports are real (a block against float64 per-example Jacobians, eigenpair residuals)."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    result = importlib.import_module("bench_large_probe").main(["--n", "128", "--check", "6", "--top-k", "3"])
    assert result["block_rel_err"] < 1e-5 and result["max_eigen_residual"] < 1e-6
    assert result["kernel_s"] > 0 and result["peak_rss_gib"] > 0
