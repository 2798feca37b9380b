r"""The report of ``ntkmonitor audit`` and ``ntkmonitor predict``: one HTML file, the numbers as JSON, a terminal table.

:mod:`ntkmonitor.audit` computes a typed :class:`~ntkmonitor.results.AuditResult` (the spectrum at the reference
checkpoint, one :class:`~ntkmonitor.Snapshot` per checkpoint, the predicted learning curve, the verdict, the exact
command and the versions; see ``docs/audit.md``). This module only renders it; it computes no theory:

- :func:`write_report` writes ``report.json`` (the result as strict JSON, ``nan`` -> ``null``) and
  ``report.html`` (:func:`render_html`);
- :func:`render_html` is a single self-contained page: an inline stylesheet, the figures of
  :mod:`ntkmonitor.plots` embedded as ``data:image/png;base64`` images, no external resource of any kind, so
  it can be mailed, archived or opened offline;
- :func:`~ntkmonitor.summary.format_summary` (in :mod:`ntkmonitor.summary`, with the other text output) is the
  short plain-text table the command prints.

Every function also takes a plain dict (``json.load`` of a ``report.json``): it is read once by
:meth:`AuditResult.from_dict <ntkmonitor.results.AuditResult.from_dict>`, where every part is optional (a missing
number reads ``n/a``), so a partial result still renders. A figure
that fails to render is replaced by a short note and an :class:`~ntkmonitor.NTKMonitorWarning`; the report is
still written. matplotlib is imported only when a figure is drawn.

Example:
    >>> result = {"kind": "predict", "verdict": None, "probe": {"size": 64, "train_size": 1000},
    ...           "learning_curve": {"n": [100, 1000], "learnability": [0.4, 0.7], "test_mse": [0.6, 0.3]}}
    >>> page = render_html(result)
    >>> "ntkmonitor predict report" in page
    True
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import plots
from ._files import write_text_atomic
from .errors import InputError, NTKMonitorWarning
from .record import Verdict, format_count, format_number
from .results import AuditResult, TimelineEntry
from .summary import SUMMARY_WIDTH, format_summary

__all__ = [
    "write_report",
    "render_html",
    "report_json",
    "format_summary",
    "HTML_NAME",
    "JSON_NAME",
    "SUMMARY_WIDTH",
    "VERDICT_MEANING",
]

HTML_NAME = "report.html"
"""File name of the HTML report inside the output folder."""

JSON_NAME = "report.json"
"""File name of the JSON report inside the output folder."""

VERDICT_MEANING: dict[Verdict, str] = {
    Verdict.LAZY: (
        "The kernel has barely moved from the reference checkpoint and the network stays close to its "
        "linearization: training is in the lazy (kernel) regime that NTK theory describes. The predictions made "
        "from the reference kernel (the learning curve and the per-mode learnability) apply to this run."
    ),
    Verdict.DRIFTING: (
        "The kernel has moved measurably, but not far: the network is leaving the lazy regime. The predictions of "
        "the reference kernel are a first approximation; expect the measured learnability to depart from them as "
        "the kernel keeps changing. The checkpoint table shows when the drift set in."
    ),
    Verdict.FEATURE_LEARNING: (
        "The kernel has changed substantially, or the network is far from its linearization: it is learning "
        "features, outside the regime where NTK theory holds. The reference kernel describes only the start of "
        "training; the gap between measured and predicted learnability is what feature learning changed."
    ),
}
"""What each verdict means for the user, as written under the verdict badge."""

_NOT_MEASURED = {
    "predict": (
        "No trained checkpoint was measured, so drift from the lazy regime is unknown. This report holds the "
        "predictions of NTK theory from the kernel at the given parameters only; they describe training as long as "
        "it stays lazy. Audit checkpoints saved during training to find out whether it does."
    ),
    "audit": (
        "Only the reference checkpoint was measured, so there is nothing to compare it with and no drift to judge. "
        "Pass two or more checkpoints (the first one at initialization) to measure drift and learnability."
    ),
}

_BADGE_CLASS = {Verdict.LAZY: "lazy", Verdict.DRIFTING: "drifting", Verdict.FEATURE_LEARNING: "feature"}

_STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: #1f2328; background: #f6f8fa; margin: 0; line-height: 1.5; }
main { max-width: 960px; margin: 0 auto; padding: 24px 32px 48px; background: #ffffff;
  box-shadow: 0 0 0 1px #d0d7de; min-height: 100vh; box-sizing: border-box; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.25em; margin: 1.8em 0 0.6em; padding-bottom: 0.25em; border-bottom: 1px solid #d8dee4; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
.subtitle { color: #57606a; margin: 0 0 1em; }
nav { font-size: 0.9em; margin: 0.5em 0 1em; }
nav a { color: #0969da; text-decoration: none; margin-right: 1em; }
.verdict { display: flex; align-items: flex-start; gap: 16px; padding: 14px 16px; border-radius: 8px;
  border: 1px solid #d0d7de; background: #f6f8fa; }
.verdict p { margin: 0; }
.badge { display: inline-block; padding: 4px 12px; border-radius: 999px; font-weight: 600; white-space: nowrap;
  border: 1px solid; font-size: 0.95em; }
.badge.small { padding: 0 8px; font-size: 0.85em; font-weight: 500; }
.badge.lazy { background: #dafbe1; color: #116329; border-color: #4ac26b; }
.badge.drifting { background: #fff8c5; color: #7d4e00; border-color: #d4a72c; }
.badge.feature { background: #ffebe9; color: #a40e26; border-color: #ff8182; }
.badge.none { background: #f6f8fa; color: #57606a; border-color: #d0d7de; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
table.summary th { width: 16em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.num { text-align: right; }
.table-wrap { overflow-x: auto; }
tr.reference td { background: #f6f8fa; }
.muted { color: #57606a; }
.note { color: #57606a; font-size: 0.9em; }
figure { margin: 1em 0 1.5em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #d8dee4; border-radius: 4px; }
figcaption { color: #57606a; font-size: 0.9em; margin-top: 0.4em; }
.missing { padding: 10px 14px; border: 1px dashed #d4a72c; background: #fff8c5; border-radius: 6px;
  color: #7d4e00; font-size: 0.9em; margin: 1em 0; }
.warnings { border-left: 4px solid #d4a72c; background: #fff8c5; padding: 8px 16px; border-radius: 0 6px 6px 0; }
.warnings ul { margin: 0.3em 0; padding-left: 1.2em; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 12px; overflow-x: auto;
  white-space: pre-wrap; word-break: break-all; font-size: 0.9em; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
details { margin: 0.6em 0; }
summary { cursor: pointer; font-weight: 600; }
footer { margin-top: 3em; color: #57606a; font-size: 0.85em; }
"""


# ---------------------------------------------------------------------------------------------------- values
def _num(value: Any, digits: int = 4) -> str:
    return format_number(value, digits)


def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape("" if value is None else str(value), quote=True)


def _step(entry: TimelineEntry) -> str:
    return "n/a" if entry.step is None else str(entry.step)


def _kappa_for_spectrum(result: AuditResult) -> float | None:
    """The ``kappa`` to mark in the spectrum figure: the last checkpoint's, else the curve's at the train size."""
    if result.timeline:
        kappa = result.timeline[-1].snapshot.kappa_init
        if math.isfinite(kappa) and kappa > 0:
            return kappa
    curve = result.learning_curve
    for n, kappa in zip(curve.n, curve.kappa, strict=False):
        if n == result.probe.train_size and math.isfinite(kappa) and kappa > 0:
            return kappa
    return None


# ---------------------------------------------------------------------------------------------------- JSON
def report_json(result: AuditResult | Mapping[str, Any]) -> str:
    """The result as strict JSON text (what :func:`write_report` writes to ``report.json``).

    ``nan`` and infinities become ``null``. ``AuditResult.from_dict(json.loads(text))`` gives the result back.

    Args:
        result: an :class:`~ntkmonitor.results.AuditResult`, or its dict form.

    Returns:
        Indented JSON text.

    Example:
        >>> text = report_json({"kind": "predict", "learning_curve": {"n": (10, 100), "learnability": [0.5, None]}})
        >>> json.loads(text)["learning_curve"]["learnability"]
        [0.5, None]
    """
    return json.dumps(_result(result).to_dict(), indent=2, allow_nan=False)


def _result(result: Any) -> AuditResult:
    if not isinstance(result, (AuditResult, Mapping)):
        raise InputError(
            f"Expected the report's result to be an AuditResult or a dict, but got {type(result).__name__}."
        )
    return AuditResult.coerce(result)


# ---------------------------------------------------------------------------------------------------- HTML parts
def _badge(verdict: Any, *, small: bool = False) -> str:
    known = verdict if isinstance(verdict, Verdict) else None
    if known is None and isinstance(verdict, str) and verdict in {v.value for v in Verdict}:
        known = Verdict(verdict)
    css = _BADGE_CLASS.get(known, "none") if known else "none"
    size = " small" if small else ""
    return f'<span class="badge {css}{size}">{_e(known.value if known else "not measured")}</span>'


def _table(rows: list[tuple[str, str]], css: str = "summary") -> str:
    """A two-column table of ``(label, value)``; both must already be HTML (escape dynamic parts first)."""
    body = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in rows)
    return f'<table class="{css}">{body}</table>'


def _grid(header: list[str], rows: list[list[str]], *, numeric: set[int], row_css: list[str] | None = None) -> str:
    """A table with a header row; header cells are escaped here, body cells must already be HTML."""
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>" for i, h in enumerate(header)
    )
    lines = []
    for r, row in enumerate(rows):
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        css = f' class="{row_css[r]}"' if row_css and row_css[r] else ""
        lines.append(f"<tr{css}>{cells}</tr>")
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table></div>'


def _missing(what: str, name: str, err: Exception) -> str:
    """The note that replaces a figure or section that failed to render."""
    reason = f"{type(err).__name__}: {err}"
    return f'<div class="missing">The {what} &ldquo;{_e(name)}&rdquo; could not be rendered ({_e(reason)}).</div>'


def _figure(title: str, caption: str, build: Callable[[], Any], problems: list[str]) -> str:
    """One figure as an embedded PNG, or a note (and a warning, recorded in ``problems``) if it fails."""
    try:
        png = plots.figure_to_png(build())
    except Exception as err:  # noqa: BLE001 - a figure must never stop the report
        message = f"the figure {title!r} could not be rendered and was left out: {type(err).__name__}: {err}"
        warnings.warn(f"ntkmonitor report: {message}", NTKMonitorWarning, stacklevel=4)
        problems.append(message)
        return _missing("figure", title, err)
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(title)}" width="800">'
        f"<figcaption><strong>{_e(title)}.</strong> {caption}</figcaption></figure>"
    )


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _guarded(name: str, render: Callable[[], str], problems: list[str]) -> str:
    """A section, or a note with a warning if rendering it failed (malformed data must not stop the report)."""
    try:
        return render()
    except Exception as err:  # noqa: BLE001 - the report must be written whatever the data holds
        message = f"the section {name!r} could not be rendered and was left out: {type(err).__name__}: {err}"
        warnings.warn(f"ntkmonitor report: {message}", NTKMonitorWarning, stacklevel=4)
        problems.append(message)
        return _missing("section", name, err)


def _header(r: AuditResult) -> str:
    parts = []
    if r.model.spec:
        parts.append(f"model <code>{_e(r.model.spec)}</code>")
    if r.created:
        parts.append(f"created {_e(r.created)}")
    if r.versions.get("ntkmonitor"):
        parts.append(f"ntkmonitor {_e(r.versions['ntkmonitor'])}")
    subtitle = " &middot; ".join(parts)
    nav = "".join(
        f'<a href="#{a}">{_e(t)}</a>'
        for a, t in (
            ("summary", "Summary"),
            ("warnings", "Warnings"),
            ("figures", "Figures"),
            ("checkpoints", "Checkpoints"),
            ("details", "Numbers"),
            ("reproduce", "Command and versions"),
        )
    )
    return f'<header><h1>ntkmonitor {_e(r.kind)} report</h1><p class="subtitle">{subtitle}</p><nav>{nav}</nav></header>'


def _verdict_block(r: AuditResult) -> str:
    if r.verdict is not None:
        meaning = VERDICT_MEANING[r.verdict]
    else:
        meaning = _NOT_MEASURED["predict" if r.kind == "predict" or not r.timeline else "audit"]
    where = ""
    if r.timeline and r.verdict:
        last = r.timeline[-1]
        where = f" Verdict of the last checkpoint, {_e(last.label)} (step {_step(last)})."
        t = r.thresholds
        where += (
            f" Lazy: kernel distance below {_num(t.lazy_distance)} and linearization error below "
            f"{_num(t.lazy_linearization)}; feature learning: above {_num(t.feature_distance)} or "
            f"{_num(t.feature_linearization)}."
        )
    return (
        '<section id="verdict" class="verdict">'
        f"{_badge(r.verdict)}<div><p><strong>What this means.</strong> {_e(meaning)}{where}</p></div></section>"
    )


def _interval(r: AuditResult, name: str, digits: int) -> str:
    """`` [lower, upper]`` of the prediction at the training-set size, or ``""``."""
    bounds = r.learning_curve.interval_at_train_size(name)
    return "" if bounds is None else f" [{_num(bounds[0], digits)}, {_num(bounds[1], digits)}]"


def _summary(r: AuditResult) -> str:
    model, probe, options, spectrum, curve = r.model, r.probe, r.options, r.spectrum0, r.learning_curve
    rows: list[tuple[str, str]] = []
    details = [f"{format_count(model.num_params)} parameters", f"{format_count(model.num_outputs)} output(s)"]
    if model.device:
        details.append(f"on {_e(model.device)}")
    if model.kernel_method:
        details.append(f"kernel method <code>{_e(model.kernel_method)}</code>")
    spec = f"<code>{_e(model.spec)}</code> " if model.spec else ""
    rows.append(("Model", f"{spec}<span class='muted'>({', '.join(details)})</span>"))

    source = f" from {_e(probe.source)}" if probe.source else ""
    if probe.overlaps_training_data is True:
        overlap_text = (
            " <strong>&mdash; overlaps the training data</strong> (measured learnability is inflated by memorization)"
        )
    elif probe.overlaps_training_data is False:
        overlap_text = " (held out: no overlap with the training data)"
    else:
        overlap_text = ""
    seed = f", drawn with seed {probe.seed}" if probe.seed is not None else ""
    rows.append(("Probe", f"{format_count(probe.size)} points{source}{seed}{overlap_text}"))
    rows.append(("Training-set size n", format_count(probe.train_size)))
    selected = ", ".join(f"<code>{_e(p)}</code>" for p in options.params) if options.params else "all parameters"
    rows.append(
        (
            "Kernel",
            f"{_e(options.mode) if options.mode else 'n/a'} mode over {selected}; "
            f"top {format_count(options.top_k)} modes reported",
        )
    )
    rows.append(("Ridge of the predictions", _num(options.ridge if math.isfinite(options.ridge) else curve.ridge)))
    rows.append(
        (
            "Spectrum at the reference",
            f"effective rank {_num(spectrum.effective_rank)}, participation ratio "
            f"{_num(spectrum.participation_ratio)}, {len(spectrum.eigenvalues)} eigenvalues",
        )
    )
    fit = spectrum.power_law
    rows.append(
        (
            "Power-law decay &lambda;<sub>i</sub> &asymp; c i<sup>&minus;&alpha;</sup>",
            f"&alpha; = {_num(fit.alpha, 3)} (c = {_num(fit.c, 3)}, R&sup2; = {_num(fit.r2, 3)})" if fit else "no fit",
        )
    )
    if r.offdiagonal_fraction is not None:
        rows.append(
            (
                "Full kernel: off-diagonal share",
                f"{_num(r.offdiagonal_fraction, 3)} of &Vert;K<sub>full</sub>&Vert; lies off the "
                "output-diagonal blocks (small: the trace kernel describes all outputs)",
            )
        )
    if r.kind != "predict" or r.timeline:
        if len(r.timeline) >= 2:
            last = r.timeline[-1]
            snap = last.snapshot
            where = f" <span class='muted'>({_e(last.label)}, step {_step(last)})</span>"
            rows.append(
                (
                    "Learnability, last checkpoint",
                    f"actual {_num(snap.learnability_actual, 3)} vs predicted "
                    f"{_num(snap.learnability_predicted_init, 3)} from K0, "
                    f"{_num(snap.learnability_predicted_current, 3)} from Kt{where}",
                )
            )
            rows.append(
                (
                    "Alignment with the target, last checkpoint",
                    f"{_num(snap.function_alignment, 3)} <span class='muted'>(scale-free: the cosine between "
                    "the learned function and the target, both centered; 1 = an affine function of the target. The "
                    "number to read for a classifier trained with cross-entropy.)</span>",
                )
            )
            rows.append(
                (
                    "Test MSE, last checkpoint",
                    f"actual {_num(snap.test_mse_actual, 3)} vs predicted "
                    f"{_num(snap.test_mse_predicted_init, 3)} from K0, "
                    f"{_num(snap.test_mse_predicted_current, 3)} from Kt",
                )
            )
        else:
            rows.append(("Learnability, last checkpoint", "n/a (only the reference checkpoint was measured)"))
    learn, mse, how = curve.at(probe.train_size)
    if how:
        approx = " (interpolated on the learning curve)" if how == "interpolated" else ""
        value = f"{_num(learn, 3)}{_interval(r, 'learnability', 3)}, test MSE {_num(mse, 3)}"
        value += f"{_interval(r, 'test_mse', 3)}{approx}"
    else:
        value = "n/a (the learning curve does not reach the training-set size)"
    if curve.note:
        value += f' <span class="muted">({_e(curve.note)})</span>'
    rows.append((f"Predicted learnability at n = {format_count(probe.train_size)}", value))
    distance = r.weight_distance
    if distance is not None and distance.measured:
        rows.append(
            (
                "Distance travelled &Vert;&theta;<sub>t</sub> &minus; &theta;<sub>0</sub>&Vert;",
                f"predicted {_num(distance.predicted, 3)} (linearized network trained to convergence on the "
                f"{format_count(distance.n)} training points) vs measured {_num(distance.measured[-1], 3)} "
                f"at the last checkpoint <span class='muted'>(a lazy network travels the predicted distance)</span>",
            )
        )
    elif distance is not None and distance.note:
        rows.append(("Distance travelled", _e(distance.note)))
    check = r.self_check
    if check is not None:
        rows.append(
            (
                "Theory self-check on the probe",
                f"kernel regression on random subsets of the probe (m = "
                f"{', '.join(format_count(m) for m in check.sizes)}) vs the prediction: learnability gap "
                f"{_num(check.learnability_gap, 3)}, test-MSE ratio {_num(check.mse_ratio, 3)}, "
                f"{_num(100 * check.coverage, 3)} % of sizes inside the interval",
            )
        )
    return _section("summary", "Summary", _table(rows))


def _warnings(r: AuditResult, problems: list[str]) -> str:
    items = list(r.warnings) + [f"Report: {p}" for p in problems]
    if not items:
        return _section("warnings", "Warnings", '<p class="muted">No warnings.</p>')
    body = "".join(f"<li>{_e(w)}</li>" for w in items)
    return _section("warnings", f"Warnings ({len(items)})", f'<div class="warnings"><ul>{body}</ul></div>')


def _figures(r: AuditResult, problems: list[str]) -> str:
    spectrum, curve, timeline = r.spectrum0, r.learning_curve, r.timeline
    parts = []
    if spectrum.eigenvalues:
        kappa = _kappa_for_spectrum(r)
        caption = (
            "Operator eigenvalues &lambda;<sub>i</sub> = eig(K)/M of the kernel at the reference checkpoint "
            "(line) and the target&rsquo;s power v<sub>i</sub>&sup2; in each eigenmode (markers). Modes with "
            "&lambda;<sub>i</sub> well above &kappa; are learned from n examples; target power in modes below it "
            "is what the network struggles to learn."
        )
        if kappa is not None:
            caption += f" Dashed: &kappa; = {_num(kappa, 3)}."
        power = spectrum.target_power or None
        parts.append(
            _figure(
                "Spectrum and target power per mode",
                caption,
                lambda: plots.spectrum_figure(spectrum.eigenvalues, power, kappa=kappa),
                problems,
            )
        )
    else:
        parts.append('<p class="note">No spectrum in the result: the spectrum figure is left out.</p>')

    if curve.n:
        note = f" {_e(curve.note)}" if curve.note else ""
        ridge = curve.ridge if math.isfinite(curve.ridge) else r.options.ridge
        caption = (
            "What kernel regression with the reference kernel is predicted to reach with n training examples "
            f"(eigenlearning theory, ridge {_num(ridge)}), "
            "estimated from the probe with its 90 % interval (shaded). The dashed line marks the actual training-set "
            "size; left of the dotted line the probe resolves the prediction directly, right of it the probe's power "
            f"laws are continued and the interval widens.{note}"
        )
        bands = {
            f"{name}_band": (getattr(curve, f"{name}_lower"), getattr(curve, f"{name}_upper"))
            for name in ("learnability", "test_mse")
            if len(getattr(curve, f"{name}_lower")) == len(curve.n) == len(getattr(curve, f"{name}_upper"))
        }
        parts.append(
            _figure(
                "Predicted learning curve",
                caption,
                lambda: plots.learning_curve_figure(
                    curve.n,
                    curve.learnability,
                    curve.test_mse,
                    train_size=r.probe.train_size,
                    reach=curve.reach if math.isfinite(curve.reach) else None,
                    **bands,
                ),
                problems,
            )
        )
    else:
        parts.append('<p class="note">No learning curve in the result: its figure is left out.</p>')

    check = r.self_check
    if check is not None and check.sizes:
        parts.append(
            _figure(
                "Theory self-check: kernel regression on the probe itself",
                "Kernel regression with the reference kernel on random subsets of m probe points, tested on the "
                "other probe points (diamonds: measured), against the prediction for m training points (line, with "
                "its 90 % interval). Where the two disagree, the theory (or its estimate from this probe) cannot be "
                f"trusted at the real n either. Learnability gap {_num(check.learnability_gap, 3)}, "
                f"test-MSE ratio {_num(check.mse_ratio, 3)}.",
                lambda: plots.learning_curve_figure(
                    check.sizes,
                    check.predicted_learnability,
                    check.predicted_test_mse,
                    learnability_band=(check.learnability_lower, check.learnability_upper),
                    test_mse_band=(check.test_mse_lower, check.test_mse_upper),
                    measured=(check.sizes, check.measured_learnability, check.measured_test_mse),
                    title="Theory self-check: measured on the probe vs predicted",
                ),
                problems,
            )
        )

    if r.kind != "predict" and timeline:
        last = timeline[-1]
        parts.append(
            _figure(
                "Per-mode learnability: predicted vs actual",
                "Fraction of each top eigenmode of the reference kernel that the last checkpoint "
                f"({_e(last.label)}) has learned (markers), against the prediction "
                "&lambda;<sub>i</sub>/(&lambda;<sub>i</sub> + &kappa;) (line). Measured values are noisy where the "
                "target has little power in the mode.",
                lambda: plots.mode_learnability_figure(last.snapshot),
                problems,
            )
        )
    if len(timeline) >= 2:
        snaps = [entry.snapshot for entry in timeline]
        parts.append(
            _figure(
                "Drift across checkpoints",
                "Kernel distance and relative kernel change (left), relative parameter change and linearization "
                "error (right) of each checkpoint against the reference, by training step, on log axes (the "
                "reference itself, at zero, is not drawn).",
                lambda: plots.drift_figure(snaps, r.thresholds),
                problems,
            )
        )
        parts.append(
            _figure(
                "Learnability and test MSE across checkpoints",
                "Measured on the probe (actual) against the predictions from the reference kernel K0 and from each "
                "checkpoint&rsquo;s own kernel Kt, by training step.",
                lambda: plots.learnability_figure(snaps),
                problems,
            )
        )
    return _section("figures", "Figures", "".join(parts))


def _checkpoints(r: AuditResult) -> str:
    timeline = r.timeline
    if not timeline:
        return _section(
            "checkpoints",
            "Checkpoints",
            f'<p class="muted">No checkpoint was measured ({_e(r.kind)}): there is no drift to show.</p>',
        )
    header = [
        "checkpoint",
        "step",
        "kernel distance",
        "relative kernel change",
        "parameter change",
        "linearization error",
        "learnability actual",
        "learnability predicted (K0)",
        "verdict",
    ]
    rows, css = [], []
    for i, entry in enumerate(timeline):
        snap = entry.snapshot
        label = f"<code>{_e(entry.label)}</code>" + (' <span class="muted">(reference)</span>' if i == 0 else "")
        rows.append(
            [
                label,
                _e(_step(entry)),
                _num(snap.kernel_distance, 3),
                _num(snap.relative_kernel_change, 3),
                _num(snap.parameter_change, 3),
                _num(snap.linearization_error, 3),
                _num(snap.learnability_actual, 3),
                _num(snap.learnability_predicted_init, 3),
                _badge(snap.verdict, small=True),
            ]
        )
        css.append("reference" if i == 0 else "")
    notes: dict[str, list[str]] = {}  # each distinct note, with the checkpoints it belongs to
    for e in timeline:
        if e.snapshot.prediction_note:
            notes.setdefault(e.snapshot.prediction_note, []).append(e.label)
    body = _grid(header, rows, numeric={1, 2, 3, 4, 5, 6, 7}, row_css=css)
    body += (
        '<p class="note">Every metric compares a checkpoint with the reference (the first row). Kernel distance: '
        "1 &minus; cosine similarity of the kernels; linearization error: distance of the network from its "
        "linearization at the reference, relative to how far its outputs moved (n/a where they did not move). "
        "Learnability is measured on the probe, with the output centered at the reference.</p>"
    )
    if len(timeline) == 1:
        body += '<p class="note">One checkpoint: drift needs at least two.</p>'
    if notes:
        items = "".join(
            f"<li><strong>{_e(', '.join(labels))}</strong>: {_e(note)}</li>" for note, labels in notes.items()
        )
        body += f'<p class="note">How the predictions were obtained:</p><ul class="note">{items}</ul>'
    return _section("checkpoints", "Checkpoints", body)


def _details(r: AuditResult) -> str:
    parts = []
    eigenvalues = r.spectrum0.eigenvalues
    if r.timeline:
        last = r.timeline[-1]
        snap = last.snapshot
        if snap.mode_indices:

            def at(values: list[Any], i: int) -> Any:
                return values[i] if i < len(values) else None

            rows = [
                [
                    _e(mode),
                    _num(eigenvalues[mode] if 0 <= mode < len(eigenvalues) else None),
                    _num(at(snap.target_power, i)),
                    _num(at(snap.mode_learnability_predicted, i), 3),
                    _num(at(snap.mode_learnability_actual, i), 3),
                ]
                for i, mode in enumerate(snap.mode_indices)
            ]
            grid = _grid(
                ["mode i", "eigenvalue λ_i", "target power v_i²", "predicted", "actual"], rows, numeric={0, 1, 2, 3, 4}
            )
            parts.append(f"<details><summary>Per-mode learnability of {_e(last.label)}</summary>{grid}</details>")
        if snap.parameter_change_per_tensor:
            rows = [
                [f"<code>{_e(name)}</code>", _num(value, 3)] for name, value in snap.parameter_change_per_tensor.items()
            ]
            grid = _grid(["parameter", "relative change"], rows, numeric={1})
            parts.append(
                f"<details><summary>Relative change per parameter tensor, {_e(last.label)}</summary>{grid}</details>"
            )
    curve = r.learning_curve
    if curve.n:
        columns = [curve.learnability, curve.test_mse, curve.kappa]
        rows = [
            [format_count(n)] + [_num(col[i], 4) if i < len(col) else "n/a" for col in columns]
            for i, n in enumerate(curve.n)
        ]
        grid = _grid(["n", "learnability", "test MSE", "κ"], rows, numeric={0, 1, 2, 3})
        parts.append(f"<details><summary>Learning curve values</summary>{grid}</details>")
    if not parts:
        return ""
    intro = '<p class="note">Every number is in <code>report.json</code>; these tables show the main ones.</p>'
    return _section("details", "Numbers", intro + "".join(parts))


def _reproduce(r: AuditResult) -> str:
    body = f"<pre>{_e(r.command)}</pre>" if r.command else '<p class="muted">The command was not recorded.</p>'
    if r.versions:
        body += _table([(_e(name), f"<code>{_e(value)}</code>") for name, value in r.versions.items()], css="versions")
    if r.created:
        body += f'<p class="note">Created {_e(r.created)}.</p>'
    return _section("reproduce", "Command and versions", body)


# ---------------------------------------------------------------------------------------------------- public
def render_html(result: AuditResult | Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page.

    Sections: the title and verdict badge with what the verdict means; a summary table (model, probe, ``n``, ridge,
    spectrum shape, learnability of the last checkpoint, predicted learnability at the training-set size); the
    warnings; the figures (spectrum with target power, predicted learning curve, and for an audit per-mode
    learnability of the last checkpoint, plus drift and learnability across checkpoints when there are two or
    more); the checkpoint (drift) table; collapsible tables of the main numbers; the exact command and versions.

    Styles are inline and figures are ``data:image/png;base64`` images: the page loads nothing. Every string from
    ``result`` is HTML-escaped. A figure or section that fails to render becomes a short note and an
    :class:`~ntkmonitor.NTKMonitorWarning`.

    Args:
        result: an :class:`~ntkmonitor.results.AuditResult`, or its dict form (every key optional).

    Returns:
        The HTML text.

    Example:
        >>> page = render_html({"kind": "predict", "command": "ntkmonitor predict --model <mine>",
        ...                     "spectrum0": {"eigenvalues": [1.0, 0.3, 0.1], "target_power": [0.5, 0.2, 0.1]}})
        >>> page.startswith("<!DOCTYPE html>"), "--model &lt;mine&gt;" in page, page.count("data:image/png;base64,")
        (True, True, 1)
    """
    r = _result(result)
    problems: list[str] = []
    header = _guarded("title", lambda: _header(r), problems)
    verdict = _guarded("verdict", lambda: _verdict_block(r), problems)
    summary = _guarded("summary", lambda: _summary(r), problems)
    figures = _guarded("figures", lambda: _figures(r, problems), problems)
    checkpoints = _guarded("checkpoints", lambda: _checkpoints(r), problems)
    details = _guarded("numbers", lambda: _details(r), problems)
    reproduce = _guarded("command and versions", lambda: _reproduce(r), problems)
    warnings_html = _warnings(r, problems)  # last: it lists the problems of the other sections
    version = r.versions.get("ntkmonitor")
    footer = f"<footer>Written by ntkmonitor{(' ' + _e(version)) if version else ''}.</footer>"
    title = f"ntkmonitor {_e(r.kind)} report"
    if r.model.spec:
        title += f": {_e(r.model.spec)}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head>\n<body><main>\n"
        + "\n".join([header, verdict, summary, warnings_html, figures, checkpoints, details, reproduce, footer])
        + "\n</main></body></html>\n"
    )


def write_report(result: AuditResult | Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (created if missing).

    ``report.json`` is :func:`report_json` (every number of the result, strict JSON); ``report.html`` is
    :func:`render_html`. Existing files of those names are replaced atomically (a temporary file renamed over
    them; a link there is replaced, never written through).

    Args:
        result: an :class:`~ntkmonitor.results.AuditResult`, or its dict form.
        out_dir: the output folder (``--out``).

    Returns:
        ``{"html": path, "json": path}``.

    Example:
        >>> import tempfile
        >>> result = {"kind": "predict", "command": "ntkmonitor predict --model mlp",
        ...           "spectrum0": {"eigenvalues": [1.0, 0.5, 0.25], "target_power": [0.6, 0.3, 0.1]}}
        >>> with tempfile.TemporaryDirectory() as out:
        ...     paths = write_report(result, out)
        ...     print(sorted(path.name for path in paths.values()))
        ['report.html', 'report.json']
    """
    data = _result(result)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / JSON_NAME
    write_text_atomic(json_path, report_json(data) + "\n")  # first: the numbers survive any HTML problem
    html_path = folder / HTML_NAME
    write_text_atomic(html_path, render_html(data))
    return {"html": html_path, "json": json_path}
