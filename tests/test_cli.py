"""``ntkmonitor audit`` / ``predict``: outputs, agreement with the Python API, bad input, safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ntkmonitor
from ntkmonitor.cli import main
from ntkmonitor.tracker import NTKTracker

from .tolerances import CLI_API_RTOL, KAPPA_EQUATION_ATOL, PROBE_DE_RTOL

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 3))
    """
)


class _Payload:
    """Unpickling this runs code (creates a file): what a malicious checkpoint would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A directory with a model factory file, data, and two checkpoints (init and after SGD)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "netdef.py").write_text(MODEL_FILE)
    sys.path.insert(0, str(tmp_path))
    import netdef

    sys.path.remove(str(tmp_path))
    sys.modules.pop("netdef", None)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 5, generator=g)
    labels = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch.save({"x": x[:80], "y": labels[:80], "x_probe": x[80:], "y_probe": labels[80:]}, tmp_path / "data.pt")
    model = netdef.make()
    torch.save(model.state_dict(), tmp_path / "init.pt")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[:80]), torch.nn.functional.one_hot(labels[:80], 3).float()).backward()
        opt.step()
    torch.save(model.state_dict(), tmp_path / "final.pt")
    return tmp_path


def _audit_args(out="out", *extra):
    return [
        "audit",
        "--model",
        "netdef.py:make",
        "--checkpoint",
        "init.pt",
        "--checkpoint",
        "final.pt",
        "--data",
        "data.pt",
        "--probe-size",
        "32",
        "--out",
        out,
        *extra,
    ]


def test_audit_writes_every_output_and_matches_the_python_api(workspace, capsys):
    assert main(_audit_args()) == 0
    out = workspace / "out"
    assert (out / "report.html").is_file() and (out / "report.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents*"))
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] in printed and "report.html" in printed

    # the same analysis through the Python API
    data = torch.load(workspace / "data.pt")
    index = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:32]
    sys.path.insert(0, str(workspace))
    import netdef

    sys.path.remove(str(workspace))
    model = netdef.make()
    model.load_state_dict(torch.load(workspace / "init.pt"))
    tracker = NTKTracker(model, (data["x_probe"][index], data["y_probe"][index]), train_size=80, ridge=0.0)
    expected = [tracker.reference(step=0)]
    model.load_state_dict(torch.load(workspace / "final.pt"))
    expected.append(tracker.measure(step=1))
    assert [e["label"] for e in report["timeline"]] == ["init.pt", "final.pt"]
    for entry, snap in zip(report["timeline"], expected, strict=True):
        for key, value in snap.scalars().items():
            if key == "ntk/time/measure_seconds":
                continue
            got = ntkmonitor.Snapshot.from_dict(entry["snapshot"]).scalars()[key]
            assert got == pytest.approx(value, rel=CLI_API_RTOL, abs=1e-12), key
    assert report["verdict"] == expected[-1].verdict
    eig = torch.tensor(report["spectrum0"]["eigenvalues"], dtype=torch.float64)
    assert torch.allclose(eig, tracker.spectrum0.eigenvalues, rtol=CLI_API_RTOL, atol=1e-12)

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert expected[-1].verdict in html and "ntkmonitor audit" in html


def test_audit_writes_nothing_outside_out(workspace):
    before = {p for p in workspace.rglob("*")}
    assert main(_audit_args("results/run1")) == 0
    created = {p for p in workspace.rglob("*")} - before
    outside = [p for p in created if not str(p).startswith(str(workspace / "results"))]
    assert outside == [], outside  # e.g. no __pycache__ next to netdef.py


def test_audit_with_full_mode_reports_the_output_block_structure(workspace):
    assert main(_audit_args("out_full", "--mode", "full", "--method", "structured")) == 0
    report = json.loads((workspace / "out_full" / "report.json").read_text())
    assert 0 <= report["full_kernel"]["offdiagonal_fraction"] < 1
    assert json.dumps(report).count('"kernel_method": "structured"') == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--data": "missing.pt"}, "--data: file 'missing.pt' does not exist"),
        ({"--checkpoint": "missing.pt"}, "--checkpoint: file 'missing.pt' does not exist"),
        ({"--model": "no_such_module:make"}, "--model: cannot import module 'no_such_module'"),
        ({"--model": "netdef.py:nope"}, "--model: module 'netdef.py' has no attribute 'nope'"),
        ({"--model": "netdef.py"}, "--model: expected MODULE:NAME"),
        ({"--data": "bad_rows.pt"}, "--data: 'x' has 80 rows but 'y' has 79"),
        ({"--data": "wrong_features.pt"}, "--data: the model from --model fails on the inputs of --data"),
        ({"--data": "no_y.pt"}, "--data: expected keys 'x' and 'y'"),
        ({"--checkpoint": "other.pt"}, "--checkpoint: 'other.pt' does not match the model"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_message(workspace, capsys, change, message):
    torch.save({"x": torch.randn(80, 5), "y": torch.randn(79)}, workspace / "bad_rows.pt")
    torch.save({"x": torch.randn(80, 7), "y": torch.randn(80, 3)}, workspace / "wrong_features.pt")
    torch.save({"x": torch.randn(80, 5)}, workspace / "no_y.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), workspace / "other.pt")
    args = _audit_args()
    for flag, value in change.items():
        args[args.index(flag) + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (workspace / "out").exists()


def test_malicious_checkpoint_is_refused_without_trust(workspace, capsys):
    marker = workspace / "pwned"
    torch.save({"state_dict": {"x": _Payload(str(marker))}}, workspace / "evil.pt")
    args = _audit_args()
    args[args.index("init.pt")] = "evil.pt"
    assert main(args) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert not marker.exists(), "the payload must not run"


def _sample_ridge_for(mu: torch.Tensor, kappa: float) -> float:
    """The sample ridge ``l > 0`` with ``mean_j 1 / (mu_j + l) = 1 / kappa`` (bisection in log l)."""
    lo, hi = 1e-18, 1e6 * float(mu.max() + kappa)
    for _ in range(200):
        mid = (lo * hi) ** 0.5
        if float((1.0 / (mu + mid)).mean()) > 1.0 / kappa:
            lo = mid
        else:
            hi = mid
    return (lo * hi) ** 0.5


def test_predict_learning_curve_obeys_the_kappa_equation(workspace):
    """Within the probe's reach, kappa solves the documented deterministic-equivalent equation
    ``tr(K_M (K_M + l)^-1) + ridge / kappa = n`` with ``1/kappa = tr((K_M + l)^-1) / M`` (docs/theory.md §8)."""
    out = workspace / "pred"
    args = ["predict", "--model", "netdef.py:make", "--data", "data.pt", "--probe-size", "40", "--out", str(out)]
    assert main([*args, "--ridge", "0.0"]) == 0
    assert main([*args[:-1], str(out / "ridge"), "--ridge", "0.5"]) == 0
    for path, ridge in ((out / "report.json", 0.0), (out / "ridge" / "report.json", 0.5)):
        report = json.loads(path.read_text())
        assert report["kind"] == "predict" and report["timeline"] == []
        curve = report["learning_curve"]
        assert len(curve["n"]) >= 10 and curve["n"] == sorted(curve["n"])
        assert all(b >= a - 1e-9 for a, b in zip(curve["learnability"], curve["learnability"][1:], strict=False))
        for name in ("learnability", "test_mse"):
            for lo, value, hi in zip(curve[f"{name}_lower"], curve[name], curve[f"{name}_upper"], strict=True):
                assert lo <= value <= hi
        mu = torch.tensor(report["spectrum0"]["eigenvalues"], dtype=torch.float64)
        cutoff = 4 * mu.numel() * torch.finfo(torch.float32).eps * float(mu.max())  # documented: round-off is zero
        mu = torch.where(mu > cutoff, mu, torch.zeros_like(mu))
        points = zip(curve["n"], curve["kappa"], curve["regime"], strict=True)
        resolved = [(n, k) for n, k, regime in points if regime == "resolved"]
        assert len(resolved) >= 5
        for n, kappa in resolved:
            lam = _sample_ridge_for(mu, kappa)
            total = float((mu / (mu + lam)).sum()) + ridge / kappa
            assert total == pytest.approx(n, rel=PROBE_DE_RTOL, abs=KAPPA_EQUATION_ATOL), n
        assert curve["at_train_size"]["n"] == report["probe"]["train_size"] and curve["note"]


def test_python_dash_m_and_help():
    result = subprocess.run(
        [sys.executable, "-m", "ntkmonitor", "audit", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert result.returncode == 0 and "--trust-checkpoint" in result.stdout


def test_audit_of_a_classifier_labels_the_mse_theory_and_reports_the_alignment(workspace):
    assert main(_audit_args("ce", "--loss", "cross_entropy")) == 0
    report = json.loads((workspace / "ce" / "report.json").read_text())
    last = report["timeline"][-1]["snapshot"]
    assert "cross-entropy" in last["prediction_note"] and -1 <= last["function_alignment"] <= 1
    assert "Alignment with the target" in (workspace / "ce" / "report.html").read_text()
    assert main(_audit_args("bad", "--loss", "l1")) == 2  # argparse: one line, exit 2


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--probe-size", "2"], "--probe-size"),
        (["--top-k", "0"], "--top-k"),
        (["--ridge", "nan"], "--ridge"),
        (["--ridge", "-1"], "--ridge"),
        (["--train-size", "0"], "--train-size"),
    ],
)
def test_bad_numbers_exit_2_with_one_line_naming_the_flag(workspace, capsys, extra, flag):
    assert main(_audit_args("out", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "Traceback" not in err
    assert not (workspace / "out").exists()


def test_bad_out_and_model_specs_exit_2_before_any_kernel_work(workspace, capsys):
    (workspace / "afile").write_text("keep me")
    cases = [
        (_audit_args(""), "--out"),
        (_audit_args("afile"), "--out"),
        (_audit_args("afile/below"), "--out"),
        ([a if a != "netdef.py:make" else ":make" for a in _audit_args("o1")], "--model"),
        ([a if a != "netdef.py:make" else "netdef.py:" for a in _audit_args("o2")], "--model"),
        (
            ["predict", "--model", "netdef.py:make", "--data", "data.pt", "--out", "o3", "--n-points", "-4"],
            "--n-points",
        ),
    ]
    for argv, flag in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and flag in err, err
    assert (workspace / "afile").read_text() == "keep me"
    assert not any((workspace / name).exists() for name in ("o1", "o2", "o3"))


def test_a_model_file_with_future_annotations_and_a_dataclass_loads(workspace):
    """Regression (issue 14, item 7): the file was executed without being registered in sys.modules, and
    dataclasses could not resolve its string annotations."""
    (workspace / "dcnet.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            from dataclasses import dataclass

            import torch
            from torch import nn


            @dataclass
            class Config:
                width: int = 32
                outputs: int = 3


            def make(config: Config | None = None) -> nn.Module:
                config = config or Config()
                torch.manual_seed(0)
                return nn.Sequential(nn.Linear(5, config.width), nn.Tanh(), nn.Linear(config.width, config.outputs))
            """
        )
    )
    argv = [a if a != "netdef.py:make" else "dcnet.py:make" for a in _audit_args("dc")]
    assert main(argv) == 0
    assert (workspace / "dc" / "report.json").is_file()


def test_a_directory_given_as_data_is_named_a_directory(workspace, capsys):
    """Regression (issue 14, item 10): a directory was reported as a file that does not exist."""
    (workspace / "bdir.pt").mkdir()
    argv = [a if a != "data.pt" else "bdir.pt" for a in _audit_args("d2")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data" in err and "is a directory" in err


# ---------------------------------------------------------------------------------------------------- issue 14
@pytest.fixture
def no_kernel_work(monkeypatch):
    """Fails the test if the audit gets as far as building the tracker (the first kernel work)."""

    def refuse(*args, **kwargs):
        raise AssertionError("kernel work started before the mistake was caught")

    monkeypatch.setattr("ntkmonitor.audit.NTKTracker", refuse)


def _bad_files(workspace: Path) -> None:
    import numpy as np

    np.savez(workspace / "objects.npz", x=np.array([object()] * 4, dtype=object), y=np.zeros(4))
    np.savez(workspace / "strings.npz", x=np.array(["a", "b"]), y=np.zeros(2))
    np.save(workspace / "renamed.npy", np.zeros((4, 5)))
    (workspace / "renamed.npy").rename(workspace / "renamed.npz")
    x, y = torch.randn(40, 5), torch.randn(40, 3)
    x_nan = x.clone()
    x_nan[7, 3] = float("nan")
    torch.save({"x": x_nan, "y": y}, workspace / "nan_x.pt")
    y_inf = y.clone()
    y_inf[11, 2] = float("inf")
    torch.save({"x": x, "y": y_inf}, workspace / "inf_y.pt")
    (workspace / "loaders.py").write_text(
        textwrap.dedent(
            """
            import torch

            def raises():
                raise RuntimeError("the dataset server is down")

            def complex_y():
                return torch.randn(40, 5), torch.randn(40, 3, dtype=torch.complex64)

            def string_x():
                return [["a"] * 5] * 40, torch.randn(40, 3)
            """
        )
    )
    wide = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))
    torch.save(wide.state_dict(), workspace / "wide.pt")
    state = torch.load(workspace / "final.pt")
    state["2.weight"][1, 4] = float("nan")
    torch.save(state, workspace / "diverged.pt")
    torch.save({"state_dict": torch.load(workspace / "final.pt"), "global_step": 30}, workspace / "step30.pt")
    torch.save({"state_dict": torch.load(workspace / "init.pt"), "global_step": 40}, workspace / "step40.pt")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--data": "objects.npz"}, "--data: 'objects.npz' holds an object array under 'x'"),
        ({"--data": "strings.npz"}, "--data: 'x' holds strings"),
        ({"--data": "renamed.npz"}, "is a single .npy array, not an .npz archive"),
        ({"--data": "loaders.py:raises"}, "raised RuntimeError: the dataset server is down"),
        ({"--data": "loaders.py:complex_y"}, "--data: 'y' holds complex numbers"),
        ({"--data": "loaders.py:string_x"}, "--data: 'x' holds strings"),
        ({"--data": "nan_x.pt"}, "--data: 'x' has 1 NaN/inf value(s), the first in row 7, column 3"),
        ({"--data": "inf_y.pt"}, "--data: 'y' has 1 NaN/inf value(s), the first in row 11, column 2"),
        ({"init.pt": "wide.pt"}, "--checkpoint: 'wide.pt' has '0.weight' of shape (64, 5), but the model's is (32, 5)"),
        ({"final.pt": "diverged.pt"}, "--checkpoint: 'diverged.pt' has 1 NaN/inf value(s) in '2.weight'"),
        ({"init.pt": "step40.pt", "final.pt": "step30.pt"}, "'step30.pt' (step 30) comes after 'step40.pt' (step 40)"),
        ({"final.pt": "step30.pt"}, None),  # init without a step: the reference, step 0
    ],
)
def test_mistakes_in_data_and_checkpoints_exit_2_before_kernel_work(workspace, capsys, change, message, request):
    _bad_files(workspace)
    args = _audit_args()
    for old, new in change.items():
        args[args.index(old) + (1 if old.startswith("--") else 0)] = new
    if message is None:  # a valid mix: runs, and the timeline is in step order
        assert main(args) == 0
        report = json.loads((workspace / "out" / "report.json").read_text())
        assert [e["step"] for e in report["timeline"]] == [0, 30]
        return
    request.getfixturevalue("no_kernel_work")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (workspace / "out").exists()


def test_a_checkpoint_without_a_step_among_ones_with_steps_is_refused(workspace, capsys, no_kernel_work):
    _bad_files(workspace)
    args = _audit_args("out", "--checkpoint", "final.pt")
    args[args.index("final.pt")] = "step30.pt"
    assert main(args) == 2  # init (reference, 0), step 30, then a plain state_dict: where does it go?
    err = capsys.readouterr().err.strip()
    assert "'final.pt' records no training step" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("prefix", ["model.", "module.", "module.model."])
def test_wrapper_prefixes_are_stripped_and_said(workspace, capsys, prefix):
    for name in ("init", "final"):
        state = torch.load(workspace / f"{name}.pt")
        torch.save({prefix + k: v for k, v in state.items()}, workspace / f"{name}_prefixed.pt")
    assert main(_audit_args("plain")) == 0
    args = _audit_args("prefixed")
    args[args.index("init.pt")], args[args.index("final.pt")] = "init_prefixed.pt", "final_prefixed.pt"
    assert main(args) == 0
    assert "stripped the prefix" in capsys.readouterr().err
    plain = json.loads((workspace / "plain" / "report.json").read_text())
    prefixed = json.loads((workspace / "prefixed" / "report.json").read_text())
    assert prefixed["spectrum0"]["eigenvalues"] == plain["spectrum0"]["eigenvalues"]
    a, b = (r["timeline"][-1]["snapshot"]["relative_kernel_change"] for r in (plain, prefixed))
    assert a == b
    assert any("stripped the prefix" in w for w in prefixed["warnings"])


def test_a_plain_pickle_loads_with_trust_checkpoint(workspace, capsys):
    import pickle

    with open(workspace / "init.pkl", "wb") as fh:
        pickle.dump(torch.load(workspace / "init.pt"), fh)
    args = _audit_args("pkl")
    args[args.index("init.pt")] = "init.pkl"
    assert main(args) == 2  # without trust: refused, and the message says what would load it
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert main([*args, "--trust-checkpoint"]) == 0


def test_a_checkpoint_that_expands_beyond_memory_is_refused_before_loading(workspace, capsys, monkeypatch):
    import zipfile

    torch.save({"w": torch.zeros(4_000_000)}, workspace / "plain_zeros.pt")  # 16 MB of zeros
    with (
        zipfile.ZipFile(workspace / "plain_zeros.pt") as src,
        zipfile.ZipFile(workspace / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert (workspace / "bomb.pt").stat().st_size < 1_000_000
    monkeypatch.setattr("ntkmonitor.audit.available_bytes", lambda device: 8_000_000)
    monkeypatch.setattr("torch.load", lambda *a, **k: pytest.fail("torch.load must not run"))
    args = _audit_args()
    args[args.index("final.pt")] = "bomb.pt"
    args[args.index("init.pt")] = "bomb.pt"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "'bomb.pt' expands to 15.3 MiB in memory" in err and len(err.splitlines()) == 1


def test_a_rerun_into_the_same_out_is_refused_without_overwrite(workspace, capsys):
    assert main(_audit_args()) == 0
    first = (workspace / "out" / "report.json").read_text()
    assert main(_audit_args()) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "already holds report.json, report.html, tensorboard" in err and "--overwrite" in err
    assert (workspace / "out" / "report.json").read_text() == first
    assert main(_audit_args("out", "--overwrite", "--top-k", "3")) == 0
    assert json.loads((workspace / "out" / "report.json").read_text())["options"]["top_k"] == 3
    assert len(list((workspace / "out" / "tensorboard").glob("events.out.tfevents*"))) == 1  # no stacked runs


def test_reports_are_never_written_through_links(workspace):
    (workspace / "out").mkdir()
    (workspace / "victim.txt").write_text("precious")
    (workspace / "elsewhere").mkdir()
    os.symlink("../victim.txt", workspace / "out" / "report.html")
    os.symlink("../elsewhere", workspace / "out" / "tensorboard")
    assert main(_audit_args()) == 2  # the links count as an earlier run's outputs
    assert main(_audit_args("out", "--overwrite")) == 0
    assert (workspace / "victim.txt").read_text() == "precious"
    assert (
        not (workspace / "out" / "report.html").is_symlink()
        and "<html" in (workspace / "out" / "report.html").read_text()
    )
    assert not (workspace / "out" / "tensorboard").is_symlink() and list((workspace / "elsewhere").iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train-size", "1e30"], "argument --train-size: expected an integer of at most 2^53"),
        (["--probe-size", "many"], "argument --probe-size: expected an integer, but got 'many'"),
        (["--seed", "1.5"], "argument --seed: expected an integer"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_argparse_mistakes_are_one_line(workspace, capsys, extra, message):
    assert main(_audit_args("out", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("ntkmonitor audit: error:"), err


def test_counts_accept_scientific_notation(workspace):
    assert main(_audit_args("sci", "--train-size", "1e3")) == 0
    assert json.loads((workspace / "sci" / "report.json").read_text())["probe"]["train_size"] == 1000


def test_checkpoints_without_steps_say_so_and_the_report_states_the_probe_seed(workspace):
    """Regression (issue 16, item 6): plain state_dicts were labelled steps 0 and 1 without a word."""
    assert main(_audit_args("plain_steps")) == 0
    report = json.loads((workspace / "plain_steps" / "report.json").read_text())
    assert any("No checkpoint records its training step" in w for w in report["warnings"])
    assert report["probe"]["seed"] == 0
    assert "drawn with seed 0" in (workspace / "plain_steps" / "report.html").read_text()
