"""``ntkmonitor.report``: report.json, the self-contained report.html, the terminal summary."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import math
import platform
import re
import struct
import sys

import numpy as np
import pytest
import torch

import ntkmonitor
from ntkmonitor import plots, report, theory
from ntkmonitor.results import AuditResult
from ntkmonitor.tracker import NTKTracker

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAIN_SIZE = 32
RIDGE = 1e-3
COMMAND = "ntkmonitor audit --model tests/models.py:mlp --checkpoints init.pt step5.pt step10.pt --out report"


def _versions() -> dict[str, str]:
    return {
        "ntkmonitor": ntkmonitor.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
    }


def _run() -> dict:
    """A real NTKTracker run: reference, then two measurements after a few SGD steps; the audit's result dict."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    x_train, x_probe = torch.randn(TRAIN_SIZE, 3), torch.randn(24, 3)
    y_train, y_probe = torch.sin(2 * x_train[:, 0]), torch.sin(2 * x_probe[:, 0])
    tracker = NTKTracker(model, (x_probe, y_probe), train_size=TRAIN_SIZE, ridge=RIDGE, top_k=6)
    timeline = [{"label": "init.pt", "step": 0, "snapshot": tracker.reference().to_dict()}]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    step = 0
    for label in ("step5.pt", "step10.pt"):
        for _ in range(5):
            optimizer.zero_grad()
            loss = 0.5 * (model(x_train).squeeze(1) - y_train).pow(2).mean()
            loss.backward()
            optimizer.step()
            step += 1
        timeline.append({"label": label, "step": step, "snapshot": tracker.measure(step).to_dict()})

    spectrum = tracker.spectrum0
    coefficients = tracker.coefficients0
    fit = spectrum.power_law_fit()
    sizes = [2, 4, 8, 16, TRAIN_SIZE, 64, 128]
    predictions = [theory.predict(spectrum.eigenvalues, coefficients, n, ridge=RIDGE) for n in sizes]
    return {
        "kind": "audit",
        "command": COMMAND,
        "versions": _versions(),
        "created": "2026-11-22T22:30:00",
        "model": {
            "spec": "tests/models.py:mlp",
            "num_params": 321,
            "num_outputs": 1,
            "device": "cpu",
            "kernel_method": "jacobian",
        },  # fmt: skip
        "probe": {"size": 24, "source": "validation", "overlaps_training_data": False, "train_size": TRAIN_SIZE},
        "options": {"ridge": RIDGE, "mode": "trace", "params": None, "top_k": 6},
        "spectrum0": {
            "eigenvalues": spectrum.eigenvalues.tolist(),
            "target_power": coefficients.pow(2).sum(1).tolist(),
            "effective_rank": spectrum.effective_rank(),
            "participation_ratio": spectrum.participation_ratio(),
            "power_law": {"c": fit.c, "alpha": fit.alpha, "r2": fit.r2},
        },
        "timeline": timeline,
        "verdict": timeline[-1]["snapshot"]["verdict"],
        "learning_curve": {
            "n": sizes,
            "learnability": [p.learnability for p in predictions],
            "test_mse": [p.test_mse for p in predictions],
            "kappa": [p.kappa for p in predictions],
            "ridge": RIDGE,
            "note": "",
        },
        "full_kernel": None,
        "warnings": ["The probe has only 24 points: per-mode values beyond mode 6 are noisy."],
    }


def _predict_result(audit: dict) -> dict:
    result = copy.deepcopy(audit)
    result.update(kind="predict", timeline=[], verdict=None, command="ntkmonitor predict --model m --out r")
    result["full_kernel"] = {"offdiagonal_fraction": 0.0123}
    return result


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}"[^>]*>(.*?)</section>', page, re.S)
    assert match, f"no section {anchor!r}"
    return match.group(1)


@pytest.fixture
def fast_figures(monkeypatch):
    """Skip the PNG encoding (the slow part) where a test reads only the text: every figure is a 1x1 PNG."""
    tiny = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    built = []
    monkeypatch.setattr(plots, "figure_to_png", lambda fig: built.append(fig) or tiny)
    return built


@pytest.fixture(scope="module")
def audit() -> dict:
    return _run()


@pytest.fixture(scope="module")
def written(audit, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "nested" / "out"  # created by write_report
    paths = report.write_report(audit, out)
    return paths, paths["html"].read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------- JSON
def test_write_report_returns_both_paths_in_the_out_folder(written):
    paths, _ = written
    assert set(paths) == {"html", "json"}
    assert paths["html"].name == report.HTML_NAME and paths["json"].name == report.JSON_NAME
    assert paths["html"].parent == paths["json"].parent and paths["html"].is_file() and paths["json"].is_file()


def test_report_json_round_trips_every_number(audit, written):
    paths, _ = written
    loaded = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert loaded == AuditResult.from_dict(audit).to_dict()  # the typed schema of the result
    assert AuditResult.from_dict(loaded).to_dict() == loaded  # and it reads back unchanged
    for given, written_entry in zip(audit["timeline"], loaded["timeline"], strict=True):
        assert written_entry["snapshot"] == given["snapshot"]  # every number of every checkpoint
    for key in ("n", "learnability", "test_mse", "kappa"):
        assert loaded["learning_curve"][key] == audit["learning_curve"][key]
    assert loaded["spectrum0"]["eigenvalues"] == audit["spectrum0"]["eigenvalues"]
    json.dumps(loaded, allow_nan=False)
    assert loaded["timeline"][2]["snapshot"]["kernel_distance"] > 0  # a real measurement, not a placeholder


def test_report_json_is_strict_json():
    result = {
        "kind": "predict",
        "learning_curve": {"n": (1, 2), "learnability": np.array([0.25, np.nan]), "test_mse": torch.tensor([1.0])},
        "spectrum0": {"effective_rank": math.inf, "eigenvalues": [np.float32(0.5), np.int64(3)]},
    }
    loaded = json.loads(report.report_json(result))
    assert loaded["kind"] == "predict"
    assert loaded["learning_curve"]["n"] == [1, 2]
    assert loaded["learning_curve"]["learnability"] == [0.25, None]
    assert loaded["learning_curve"]["test_mse"] == [1.0]
    assert loaded["spectrum0"]["effective_rank"] == "inf"  # strict JSON has no infinity; it reads back as one
    assert loaded["spectrum0"]["eigenvalues"] == [0.5, 3.0]
    assert math.isinf(AuditResult.from_dict(loaded).spectrum0.effective_rank)
    from ntkmonitor.record import to_json

    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="not a JSON type"):  # the one JSON cleaner
        assert to_json({"odd": object()})["odd"].startswith("<object")


# ---------------------------------------------------------------------------------------------------- HTML
def test_html_embeds_every_figure_as_a_png(written):
    _, page = written
    images = _images(page)
    # spectrum, learning curve, per-mode, drift, learnability across checkpoints
    assert len(images) == 5
    for png in images:
        assert png[:8] == PNG_SIGNATURE
        width, height = struct.unpack(">II", png[16:24])
        assert width == 800 and height > 200
    figures = _section(page, "figures")
    for title in (
        "Spectrum and target power per mode",
        "Predicted learning curve",
        "Per-mode learnability: predicted vs actual",
        "Drift across checkpoints",
    ):
        assert f'alt="{title}"' in figures


def test_html_is_self_contained(written):
    _, page = written
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    lowered = page.lower()
    assert "<link" not in lowered and "<script" not in lowered and "@import" not in lowered and "url(" not in lowered
    assert "<iframe" not in lowered and "<object" not in lowered
    for attribute, value in re.findall(r'\b(src|href)="([^"]*)"', page):
        assert value.startswith("data:image/png;base64," if attribute == "src" else "#"), (attribute, value[:40])
    assert "http://" not in page and "https://" not in page


def test_html_shows_verdict_summary_command_versions_and_warnings(audit, written):
    _, page = written
    verdict = audit["verdict"]
    assert verdict in report.VERDICT_MEANING
    assert re.search(rf'<section id="verdict" class="verdict"><span class="badge [a-z]+">{verdict}</span>', page)
    assert report.VERDICT_MEANING[verdict][:60] in page
    assert "ntkmonitor audit report" in page
    summary = _section(page, "summary")
    assert "tests/models.py:mlp" in summary and "validation" in summary and "jacobian" in summary
    assert f"{audit['spectrum0']['effective_rank']:.4g}" in summary
    assert f"&alpha; = {audit['spectrum0']['power_law']['alpha']:.3g}" in summary
    last = audit["timeline"][-1]["snapshot"]
    assert f"actual {last['learnability_actual']:.3g} vs predicted {last['learnability_predicted_init']:.3g}" in summary
    at_n = audit["learning_curve"]["learnability"][audit["learning_curve"]["n"].index(TRAIN_SIZE)]
    assert f"Predicted learnability at n = {TRAIN_SIZE}</th><td>{at_n:.3g}," in summary
    reproduce = _section(page, "reproduce")
    assert f"<pre>{COMMAND}</pre>" in reproduce
    for name, version in audit["versions"].items():
        assert f"<th>{name}</th><td><code>{version}</code></td>" in reproduce
    assert audit["warnings"][0] in _section(page, "warnings")


def test_html_drift_table_has_a_row_per_checkpoint(audit, written):
    _, page = written
    table = _section(page, "checkpoints")
    rows = re.findall(r"<tbody>(.*?)</tbody>", table, re.S)[0].split("</tr>")[:-1]
    assert len(rows) == len(audit["timeline"]) == 3
    for row, entry in zip(rows, audit["timeline"], strict=True):
        snap = entry["snapshot"]
        assert f"<code>{entry['label']}</code>" in row and f">{entry['step']}<" in row
        assert f">{snap['verdict']}</span>" in row
        if entry["step"]:
            assert f">{snap['kernel_distance']:.3g}<" in row and f">{snap['linearization_error']:.3g}<" in row
    assert "(reference)" in rows[0] and 'class="reference"' in rows[0]


def test_html_escapes_every_string_from_the_result(audit, fast_figures):
    result = copy.deepcopy(audit)
    result["command"] = "ntkmonitor audit --model '<script>alert(1)</script>' --out a&b"
    result["model"]["spec"] = "<b>bold</b>"
    result["timeline"][1]["label"] = '<img src=x onerror="alert(2)">.pt'
    result["warnings"] = ["<script>bad()</script>"]
    result["versions"]["<i>x</i>"] = "\"quoted\" & 'single'"
    page = report.render_html(result)
    assert "<script" not in page.lower() and "<b>bold" not in page and "<img src=x" not in page and "<i>x" not in page
    assert "--model &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27; --out a&amp;b" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;.pt" in page
    assert "&quot;quoted&quot; &amp; &#x27;single&#x27;" in page


def test_predict_report_has_no_checkpoint_figures(audit, fast_figures, tmp_path):
    result = _predict_result(audit)
    paths = report.write_report(result, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    assert json.loads(paths["json"].read_text()) == AuditResult.from_dict(result).to_dict()
    assert len(_images(page)) == 2  # spectrum and learning curve
    assert "ntkmonitor predict report" in page and '<span class="badge none">not measured</span>' in page
    assert "No checkpoint was measured" in _section(page, "checkpoints")
    assert "off the output-diagonal blocks" in _section(page, "summary")


def test_a_single_checkpoint_has_no_drift_figure(audit, fast_figures):
    result = copy.deepcopy(audit)
    result["timeline"] = result["timeline"][:1]
    result["verdict"] = None
    page = report.render_html(result)
    assert len(_images(page)) == 3  # spectrum, learning curve, per-mode
    assert 'alt="Drift across checkpoints"' not in page
    assert "Only the reference checkpoint was measured" in page
    assert "only the reference checkpoint was measured" in _section(page, "summary")


def test_a_failing_figure_becomes_a_note_and_a_warning(audit, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no <canvas> today")

    monkeypatch.setattr(plots, "drift_figure", broken)
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="Drift across checkpoints.*RuntimeError: no <canvas>"):
        paths = report.write_report(audit, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    assert len(_images(page)) == 4  # the other figures are still there
    note = re.search(r'<div class="missing">(.*?)</div>', page).group(1)
    assert "Drift across checkpoints" in note and "RuntimeError: no &lt;canvas&gt; today" in note
    assert "Drift across checkpoints" in _section(page, "warnings")
    assert json.loads(paths["json"].read_text()) == AuditResult.from_dict(audit).to_dict()  # the JSON is untouched


def test_malformed_data_still_renders(audit, fast_figures):
    result = copy.deepcopy(audit)
    result["spectrum0"]["eigenvalues"] = ["not", "numbers"]
    result["probe"]["size"] = "many"
    result["timeline"][1]["snapshot"]["kernel_distance"] = "far"
    page = report.render_html(result)  # read once, as n/a where it is not a number
    assert "n/a points" in _section(page, "summary")
    assert json.loads(report.report_json(result))["spectrum0"]["eigenvalues"] == [None, None]
    minimal = report.render_html({})
    assert "ntkmonitor predict report" in minimal and "not measured" in minimal and not _images(minimal)
    with pytest.raises(ntkmonitor.InputError, match="dict"):
        report.render_html([audit])


def test_learnability_at_the_train_size_is_interpolated_when_not_on_the_curve(audit, fast_figures):
    result = copy.deepcopy(audit)
    result["probe"]["train_size"] = 45  # between 32 and 64
    summary = _section(report.render_html(result), "summary")
    assert "Predicted learnability at n = 45" in summary and "(interpolated on the learning curve)" in summary
    result["probe"]["train_size"] = 10_000
    summary = _section(report.render_html(result), "summary")
    assert "does not reach the training-set size" in summary


def test_thresholds_are_optional_and_explained(audit, fast_figures):
    result = copy.deepcopy(audit)
    result["thresholds"] = dataclasses.asdict(ntkmonitor.DriftThresholds(lazy_distance=0.01))
    page = report.render_html(result)
    assert "kernel distance below 0.01 and linearization error below 0.1" in _section(page, "verdict")
    assert len(_images(page)) == 5


# ---------------------------------------------------------------------------------------------------- terminal
def test_format_summary_names_the_verdict_and_a_line_per_checkpoint(audit):
    text = report.format_summary(audit)
    lines = text.splitlines()
    assert lines[0].startswith(f"ntkmonitor audit: verdict {audit['verdict'].upper()}")
    assert all(len(line) <= report.SUMMARY_WIDTH for line in lines)
    assert text.isascii() and not text.endswith("\n")
    header = next(i for i, line in enumerate(lines) if line.startswith("checkpoint"))
    rows = lines[header + 1 : header + 1 + len(audit["timeline"])]
    for row, entry in zip(rows, audit["timeline"], strict=True):
        assert row.startswith(entry["label"]) and row.split()[1] == str(entry["step"])
        assert row.split()[-1] == entry["snapshot"]["verdict"]
    assert f"predicted at n = {TRAIN_SIZE}: learnability" in text
    assert "warnings (1):" in text


def test_format_summary_fits_100_columns_with_long_texts(audit):
    result = _predict_result(audit)
    assert report.format_summary(result).splitlines()[0] == "ntkmonitor predict: verdict not measured"
    long = copy.deepcopy(audit)
    long["model"]["spec"] = "package.module:" + "very_long_factory_name_" * 10
    long["timeline"][1]["label"] = "checkpoints/" + "epoch=0042-step=123456-val_loss=0.1234" * 3 + ".ckpt"
    long["timeline"][2]["step"] = 123_456_789_012
    long["warnings"] = [f"warning {i}: " + "λ detail " * 30 for i in range(8)]
    long["probe"]["overlaps_training_data"] = True
    text = report.format_summary(long)
    assert all(len(line) <= report.SUMMARY_WIDTH for line in text.splitlines()), max(map(len, text.splitlines()))
    assert text.isascii()
    assert "OVERLAPS TRAINING DATA" in text and "... and 3 more in report.json" in text


def test_prediction_notes_are_listed_once_each_with_their_checkpoints(audit, fast_figures):
    """Regression (issue 16, item 6): one note repeated, another unlabelled."""
    result = copy.deepcopy(audit)
    for entry in result["timeline"]:
        entry["snapshot"]["prediction_note"] = "resolved by the probe"
    result["timeline"][-1]["snapshot"]["prediction_note"] = "extrapolated beyond the probe"
    section = _section(report.render_html(result), "checkpoints")
    assert section.count("resolved by the probe") == 1 and section.count("extrapolated beyond the probe") == 1
    assert "<strong>init.pt, step5.pt</strong>: resolved by the probe" in section
    assert "<strong>step10.pt</strong>: extrapolated beyond the probe" in section
    text = report.format_summary(result)
    assert text.count("resolved by the probe") == 1 and "(init.pt, step5.pt) resolved" in text
