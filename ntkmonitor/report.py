r"""The report of ``ntkmonitor audit`` and ``ntkmonitor predict``: one HTML file, the numbers as JSON, a terminal table.

The command builds a plain, JSON-ready ``result`` dict (the spectrum at the reference checkpoint, one
:meth:`Snapshot.to_dict() <ntkmonitor.Snapshot.to_dict>` per checkpoint, the predicted learning curve, the
verdict, the exact command and the versions; see ``docs/audit.md``). This module only renders it; it computes no
theory:

- :func:`write_report` writes ``report.json`` (the result as strict JSON, ``nan`` -> ``null``) and
  ``report.html`` (:func:`render_html`);
- :func:`render_html` is a single self-contained page: an inline stylesheet, the figures of
  :mod:`ntkmonitor.plots` embedded as ``data:image/png;base64`` images, no external resource of any kind, so
  it can be mailed, archived or opened offline;
- :func:`format_summary` is the short plain-text table the command prints (at most :data:`SUMMARY_WIDTH`
  columns).

Every key of ``result`` is optional (a missing number reads ``n/a``), so a partial result still renders. A figure
that fails to render is replaced by a short note and an :class:`~ntkmonitor.NTKMonitorWarning`; the report is
still written. matplotlib is imported only when a figure is drawn.

Example:
    >>> result = {"kind": "predict", "verdict": None, "probe": {"size": 64, "train_size": 1000},
    ...           "learning_curve": {"n": [100, 1000], "learnability": [0.4, 0.7], "test_mse": [0.6, 0.3]}}
    >>> print(format_summary(result).splitlines()[0])
    ntkmonitor predict: verdict not measured
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import plots
from ._files import write_text_atomic
from .errors import InputError, NTKMonitorWarning

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

SUMMARY_WIDTH = 100
"""No line of :func:`format_summary` is longer than this."""

VERDICT_MEANING: dict[str, str] = {
    "lazy": (
        "The kernel has barely moved from the reference checkpoint and the network stays close to its "
        "linearization: training is in the lazy (kernel) regime that NTK theory describes. The predictions made "
        "from the reference kernel (the learning curve and the per-mode learnability) apply to this run."
    ),
    "drifting": (
        "The kernel has moved measurably, but not far: the network is leaving the lazy regime. The predictions of "
        "the reference kernel are a first approximation; expect the measured learnability to depart from them as "
        "the kernel keeps changing. The checkpoint table shows when the drift set in."
    ),
    "feature-learning": (
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

_BADGE_CLASS = {"lazy": "lazy", "drifting": "drifting", "feature-learning": "feature"}

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
def _jsonable(value: Any, where: str = "result") -> Any:
    """``value`` as strict-JSON data: non-finite floats -> ``None``, arrays and tensors -> lists, paths -> str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors (without importing either)
        return _jsonable(value.tolist(), where)
    warnings.warn(
        f"ntkmonitor wrote {where} of the report as text: {type(value).__name__} is not a JSON type.",
        NTKMonitorWarning,
        stacklevel=3,
    )
    return str(value)


def _float(value: Any) -> float:
    """A float, ``nan`` for ``None`` or anything that is not a number."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, ``n/a`` where undefined."""
    number = _float(value)
    return f"{number:.{digits}g}" if math.isfinite(number) else "n/a"


def _count(value: Any) -> str:
    """An integer with thousands separators, ``n/a`` where undefined."""
    number = _float(value)
    return f"{int(number):,}" if math.isfinite(number) else "n/a"


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape("" if value is None else str(value), quote=True)


def _check_result(result: Any) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        raise InputError(f"Expected the report's result to be a dict, but got {type(result).__name__}.")
    return dict(result)


def _kind(result: dict[str, Any]) -> str:
    kind = result.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    return "audit" if _list(result.get("timeline")) else "predict"


def _timeline(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The timeline entries, each with a ``snapshot`` dict (possibly empty)."""
    entries = []
    for i, entry in enumerate(_list(result.get("timeline"))):
        entry = _dict(entry)
        snapshot = _dict(entry.get("snapshot"))
        label = entry.get("label")
        step = entry.get("step", snapshot.get("step"))
        entries.append({"label": f"checkpoint {i}" if label in (None, "") else str(label), "step": step, **entry})
        entries[-1]["snapshot"] = snapshot
    return entries


def _curve_at(curve: dict[str, Any], n: Any) -> tuple[float, float, str]:
    """Learnability and test MSE of the learning curve at ``n``: exact, or interpolated linearly in ``log n``.

    Returns ``(learnability, test_mse, how)`` with ``how`` ``"exact"``, ``"interpolated"`` or ``""`` (not
    available). This is reading a plotted curve, not theory: the curve's own points are the predictions.
    """
    target = _float(n)
    sizes = [_float(v) for v in _list(curve.get("n"))]
    learn = [_float(v) for v in _list(curve.get("learnability"))]
    mse = [_float(v) for v in _list(curve.get("test_mse"))]
    if not math.isfinite(target) or target <= 0 or not (len(sizes) == len(learn) == len(mse)):
        return math.nan, math.nan, ""
    points = sorted((s, l_, m) for s, l_, m in zip(sizes, learn, mse, strict=True) if math.isfinite(s) and s > 0)
    for s, l_, m in points:
        if s == target:
            return l_, m, "exact"
    for (s0, l0, m0), (s1, l1, m1) in zip(points, points[1:], strict=False):
        if s0 < target < s1:
            w = (math.log(target) - math.log(s0)) / (math.log(s1) - math.log(s0))
            return l0 + w * (l1 - l0), m0 + w * (m1 - m0), "interpolated"
    return math.nan, math.nan, ""


def _kappa_for_spectrum(result: dict[str, Any], timeline: list[dict[str, Any]]) -> float | None:
    """The ``kappa`` to mark in the spectrum figure: the last checkpoint's, else the curve's at the train size."""
    if timeline:
        kappa = _float(timeline[-1]["snapshot"].get("kappa_init"))
        if math.isfinite(kappa) and kappa > 0:
            return kappa
    curve = _dict(result.get("learning_curve"))
    train_size = _float(_dict(result.get("probe")).get("train_size"))
    for n, kappa in zip(_list(curve.get("n")), _list(curve.get("kappa")), strict=False):
        if _float(n) == train_size and math.isfinite(_float(kappa)) and _float(kappa) > 0:
            return _float(kappa)
    return None


# ---------------------------------------------------------------------------------------------------- JSON
def report_json(result: Mapping[str, Any]) -> str:
    """The result as strict JSON text (what :func:`write_report` writes to ``report.json``).

    ``nan`` and infinities become ``null``; tuples, numpy arrays and tensors become lists; paths become strings.
    ``json.loads`` of the text gives the result back.

    Args:
        result: the result dict built by ``ntkmonitor audit`` / ``predict``.

    Returns:
        Indented JSON text.

    Example:
        >>> text = report_json({"kind": "predict", "learning_curve": {"n": (10, 100), "mse": [0.5, float("nan")]}})
        >>> json.loads(text)
        {'kind': 'predict', 'learning_curve': {'n': [10, 100], 'mse': [0.5, None]}}
    """
    return json.dumps(_jsonable(_check_result(result)), indent=2, allow_nan=False)


# ---------------------------------------------------------------------------------------------------- HTML parts
def _badge(verdict: Any, *, small: bool = False) -> str:
    text = verdict if isinstance(verdict, str) and verdict else None
    css = _BADGE_CLASS.get(text or "", "none")
    size = " small" if small else ""
    return f'<span class="badge {css}{size}">{_e(text or "not measured")}</span>'


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


def _header(result: dict[str, Any], kind: str) -> str:
    model = _dict(result.get("model"))
    created = result.get("created")
    version = _dict(result.get("versions")).get("ntkmonitor")
    parts = []
    if model.get("spec") not in (None, ""):
        parts.append(f"model <code>{_e(model['spec'])}</code>")
    if created:
        parts.append(f"created {_e(created)}")
    if version:
        parts.append(f"ntkmonitor {_e(version)}")
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
    return f'<header><h1>ntkmonitor {_e(kind)} report</h1><p class="subtitle">{subtitle}</p><nav>{nav}</nav></header>'


def _verdict_block(result: dict[str, Any], kind: str, timeline: list[dict[str, Any]]) -> str:
    verdict = result.get("verdict")
    if isinstance(verdict, str) and verdict in VERDICT_MEANING:
        meaning = VERDICT_MEANING[verdict]
    elif isinstance(verdict, str) and verdict:
        meaning = "This verdict is not one ntkmonitor knows; see the checkpoint table for the measured drift."
    else:
        meaning = _NOT_MEASURED["predict" if kind == "predict" or not timeline else "audit"]
    where = ""
    if timeline and verdict:
        last = timeline[-1]
        where = f" Verdict of the last checkpoint, {_e(last['label'])} (step {_e(last['step'])})."
    thresholds = _dict(result.get("thresholds"))
    if thresholds and verdict:
        where += (
            f" Lazy: kernel distance below {_num(thresholds.get('lazy_distance'))} and linearization error below "
            f"{_num(thresholds.get('lazy_linearization'))}; feature learning: above "
            f"{_num(thresholds.get('feature_distance'))} or {_num(thresholds.get('feature_linearization'))}."
        )
    return (
        '<section id="verdict" class="verdict">'
        f"{_badge(verdict)}<div><p><strong>What this means.</strong> {_e(meaning)}{where}</p></div></section>"
    )


def _summary(result: dict[str, Any], kind: str, timeline: list[dict[str, Any]]) -> str:
    model = _dict(result.get("model"))
    probe = _dict(result.get("probe"))
    options = _dict(result.get("options"))
    spectrum = _dict(result.get("spectrum0"))
    curve = _dict(result.get("learning_curve"))
    rows: list[tuple[str, str]] = []

    details = [
        f"{_count(model.get('num_params'))} parameters",
        f"{_count(model.get('num_outputs'))} output(s)",
    ]
    if model.get("device"):
        details.append(f"on {_e(model['device'])}")
    if model.get("kernel_method"):
        details.append(f"kernel method <code>{_e(model['kernel_method'])}</code>")
    spec = f"<code>{_e(model.get('spec'))}</code> " if model.get("spec") not in (None, "") else ""
    rows.append(("Model", f"{spec}<span class='muted'>({', '.join(details)})</span>"))

    source = f" from {_e(probe['source'])}" if probe.get("source") else ""
    overlap = probe.get("overlaps_training_data")
    if overlap is True:
        overlap_text = (
            " <strong>&mdash; overlaps the training data</strong> (measured learnability is inflated by memorization)"
        )
    elif overlap is False:
        overlap_text = " (held out: no overlap with the training data)"
    else:
        overlap_text = ""
    rows.append(("Probe", f"{_count(probe.get('size'))} points{source}{overlap_text}"))
    rows.append(("Training-set size n", _count(probe.get("train_size"))))

    params = options.get("params")
    selected = ", ".join(f"<code>{_e(p)}</code>" for p in _list(params)) if params else "all parameters"
    mode = options.get("mode")
    rows.append(
        (
            "Kernel",
            f"{_e(mode) if mode else 'n/a'} mode over {selected}; top {_count(options.get('top_k'))} modes reported",
        )
    )
    ridge = options.get("ridge", curve.get("ridge"))
    rows.append(("Ridge of the predictions", _num(ridge)))
    rows.append(
        (
            "Spectrum at the reference",
            f"effective rank {_num(spectrum.get('effective_rank'))}, "
            f"participation ratio {_num(spectrum.get('participation_ratio'))}, "
            f"{len(_list(spectrum.get('eigenvalues')))} eigenvalues",
        )
    )
    fit = _dict(spectrum.get("power_law"))
    rows.append(
        (
            "Power-law decay &lambda;<sub>i</sub> &asymp; c i<sup>&minus;&alpha;</sup>",
            f"&alpha; = {_num(fit.get('alpha'), 3)} (c = {_num(fit.get('c'), 3)}, R&sup2; = {_num(fit.get('r2'), 3)})"
            if fit
            else "no fit",
        )
    )
    full = result.get("full_kernel")
    if isinstance(full, Mapping):
        rows.append(
            (
                "Full kernel: off-diagonal share",
                f"{_num(full.get('offdiagonal_fraction'), 3)} of &Vert;K<sub>full</sub>&Vert; lies off the "
                "output-diagonal blocks (small: the trace kernel describes all outputs)",
            )
        )
    if kind != "predict" or timeline:
        if len(timeline) >= 2:
            last = timeline[-1]
            snap = last["snapshot"]
            where = f" <span class='muted'>({_e(last['label'])}, step {_e(last['step'])})</span>"
            rows.append(
                (
                    "Learnability, last checkpoint",
                    f"actual {_num(snap.get('learnability_actual'), 3)} vs predicted "
                    f"{_num(snap.get('learnability_predicted_init'), 3)} from K0, "
                    f"{_num(snap.get('learnability_predicted_current'), 3)} from Kt{where}",
                )
            )
            rows.append(
                (
                    "Alignment with the target, last checkpoint",
                    f"{_num(snap.get('function_alignment'), 3)} <span class='muted'>(scale-free: the cosine between "
                    "the learned function and the target, both centered; 1 = an affine function of the target. The "
                    "number to read for a classifier trained with cross-entropy.)</span>",
                )
            )
            rows.append(
                (
                    "Test MSE, last checkpoint",
                    f"actual {_num(snap.get('test_mse_actual'), 3)} vs predicted "
                    f"{_num(snap.get('test_mse_predicted_init'), 3)} from K0, "
                    f"{_num(snap.get('test_mse_predicted_current'), 3)} from Kt",
                )
            )
        else:
            rows.append(("Learnability, last checkpoint", "n/a (only the reference checkpoint was measured)"))
    learn, mse, how = _curve_at(curve, probe.get("train_size"))
    if how:
        approx = " (interpolated on the learning curve)" if how == "interpolated" else ""
        value = f"{_num(learn, 3)}{_interval(curve, 'learnability', 3)}, test MSE {_num(mse, 3)}"
        value += f"{_interval(curve, 'test_mse', 3)}{approx}"
    else:
        value = "n/a (the learning curve does not reach the training-set size)"
    if curve.get("note"):
        value += f' <span class="muted">({_e(curve["note"])})</span>'
    rows.append((f"Predicted learnability at n = {_count(probe.get('train_size'))}", value))
    distance = _dict(result.get("weight_distance"))
    if distance.get("measured"):
        rows.append(
            (
                "Distance travelled &Vert;&theta;<sub>t</sub> &minus; &theta;<sub>0</sub>&Vert;",
                f"predicted {_num(distance.get('predicted'), 3)} (linearized network trained to convergence on the "
                f"{_count(distance.get('n'))} training points) vs measured {_num(_list(distance['measured'])[-1], 3)} "
                f"at the last checkpoint <span class='muted'>(a lazy network travels the predicted distance)</span>",
            )
        )
    elif distance.get("note"):
        rows.append(("Distance travelled", _e(distance["note"])))
    check = _dict(result.get("self_check"))
    if check:
        rows.append(
            (
                "Theory self-check on the probe",
                f"kernel regression on random subsets of the probe (m = "
                f"{', '.join(_count(m) for m in _list(check.get('sizes')))}) vs the prediction: learnability gap "
                f"{_num(check.get('learnability_gap'), 3)}, test-MSE ratio {_num(check.get('mse_ratio'), 3)}, "
                f"{_num(100 * _float(check.get('coverage')), 3)} % of sizes inside the interval",
            )
        )
    return _section("summary", "Summary", _table(rows))


def _interval(curve: dict[str, Any], name: str, digits: int) -> str:
    """`` [lower, upper]`` of the prediction at the training-set size, from ``curve["at_train_size"]``, or ``""``."""
    bounds = _list(_dict(curve.get("at_train_size")).get(f"{name}_interval"))
    if len(bounds) != 2:
        return ""
    return f" [{_num(bounds[0], digits)}, {_num(bounds[1], digits)}]"


def _warnings(result: dict[str, Any], problems: list[str]) -> str:
    items = [str(w) for w in _list(result.get("warnings"))] + [f"Report: {p}" for p in problems]
    if not items:
        return _section("warnings", "Warnings", '<p class="muted">No warnings.</p>')
    body = "".join(f"<li>{_e(w)}</li>" for w in items)
    return _section("warnings", f"Warnings ({len(items)})", f'<div class="warnings"><ul>{body}</ul></div>')


def _figures(result: dict[str, Any], kind: str, timeline: list[dict[str, Any]], problems: list[str]) -> str:
    spectrum = _dict(result.get("spectrum0"))
    curve = _dict(result.get("learning_curve"))
    probe = _dict(result.get("probe"))
    parts = []

    eigenvalues = _list(spectrum.get("eigenvalues"))
    if eigenvalues:
        power = spectrum.get("target_power")
        kappa = _kappa_for_spectrum(result, timeline)
        caption = (
            "Operator eigenvalues &lambda;<sub>i</sub> = eig(K)/M of the kernel at the reference checkpoint "
            "(line) and the target&rsquo;s power v<sub>i</sub>&sup2; in each eigenmode (markers). Modes with "
            "&lambda;<sub>i</sub> well above &kappa; are learned from n examples; target power in modes below it "
            "is what the network struggles to learn."
        )
        if kappa is not None:
            caption += f" Dashed: &kappa; = {_num(kappa, 3)}."
        parts.append(
            _figure(
                "Spectrum and target power per mode",
                caption,
                lambda: plots.spectrum_figure(eigenvalues, power, kappa=kappa),
                problems,
            )
        )
    else:
        parts.append('<p class="note">No spectrum in the result: the spectrum figure is left out.</p>')

    if _list(curve.get("n")):
        note = f" {_e(curve['note'])}" if curve.get("note") else ""
        caption = (
            "What kernel regression with the reference kernel is predicted to reach with n training examples "
            f"(eigenlearning theory, ridge {_num(curve.get('ridge', _dict(result.get('options')).get('ridge')))}), "
            "estimated from the probe with its 90 % interval (shaded). The dashed line marks the actual training-set "
            "size; left of the dotted line the probe resolves the prediction directly, right of it the probe's power "
            f"laws are continued and the interval widens.{note}"
        )
        bands = {
            f"{name}_band": (curve[f"{name}_lower"], curve[f"{name}_upper"])
            for name in ("learnability", "test_mse")
            if curve.get(f"{name}_lower") is not None and curve.get(f"{name}_upper") is not None
        }
        reach = _float(curve.get("reach"))
        parts.append(
            _figure(
                "Predicted learning curve",
                caption,
                lambda: plots.learning_curve_figure(
                    curve.get("n"),
                    curve.get("learnability"),
                    curve.get("test_mse"),
                    train_size=probe.get("train_size"),
                    reach=reach if math.isfinite(reach) else None,
                    **bands,
                ),
                problems,
            )
        )
    else:
        parts.append('<p class="note">No learning curve in the result: its figure is left out.</p>')

    check = _dict(result.get("self_check"))
    if _list(check.get("sizes")):
        parts.append(
            _figure(
                "Theory self-check: kernel regression on the probe itself",
                "Kernel regression with the reference kernel on random subsets of m probe points, tested on the "
                "other probe points (diamonds: measured), against the prediction for m training points (line, with "
                "its 90 % interval). Where the two disagree, the theory (or its estimate from this probe) cannot be "
                f"trusted at the real n either. Learnability gap {_num(check.get('learnability_gap'), 3)}, "
                f"test-MSE ratio {_num(check.get('mse_ratio'), 3)}.",
                lambda: plots.learning_curve_figure(
                    check.get("sizes"),
                    check.get("predicted_learnability"),
                    check.get("predicted_test_mse"),
                    learnability_band=(check.get("learnability_lower"), check.get("learnability_upper")),
                    test_mse_band=(check.get("test_mse_lower"), check.get("test_mse_upper")),
                    measured=(check.get("sizes"), check.get("measured_learnability"), check.get("measured_test_mse")),
                    title="Theory self-check: measured on the probe vs predicted",
                ),
                problems,
            )
        )

    if kind != "predict" and timeline:
        last = timeline[-1]
        parts.append(
            _figure(
                "Per-mode learnability: predicted vs actual",
                "Fraction of each top eigenmode of the reference kernel that the last checkpoint "
                f"({_e(last['label'])}) has learned (markers), against the prediction "
                "&lambda;<sub>i</sub>/(&lambda;<sub>i</sub> + &kappa;) (line). Measured values are noisy where the "
                "target has little power in the mode.",
                lambda: plots.mode_learnability_figure(last["snapshot"]),
                problems,
            )
        )
    if len(timeline) >= 2:
        snaps = [entry["snapshot"] for entry in timeline]
        thresholds = _dict(result.get("thresholds"))

        def drift() -> Any:
            from .drift import DriftThresholds

            return plots.drift_figure(snaps, DriftThresholds(**thresholds) if thresholds else None)

        parts.append(
            _figure(
                "Drift across checkpoints",
                "Kernel distance and relative kernel change (left), relative parameter change and linearization "
                "error (right) of each checkpoint against the reference, by training step, on log axes (the "
                "reference itself, at zero, is not drawn).",
                drift,
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


def _checkpoints(result: dict[str, Any], kind: str, timeline: list[dict[str, Any]]) -> str:
    if not timeline:
        return _section(
            "checkpoints",
            "Checkpoints",
            f'<p class="muted">No checkpoint was measured ({_e(kind)}): there is no drift to show.</p>',
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
        snap = entry["snapshot"]
        label = f"<code>{_e(entry['label'])}</code>" + (' <span class="muted">(reference)</span>' if i == 0 else "")
        rows.append(
            [
                label,
                _e(entry["step"]) if entry["step"] is not None else "n/a",
                _num(snap.get("kernel_distance"), 3),
                _num(snap.get("relative_kernel_change"), 3),
                _num(snap.get("parameter_change"), 3),
                _num(snap.get("linearization_error"), 3),
                _num(snap.get("learnability_actual"), 3),
                _num(snap.get("learnability_predicted_init"), 3),
                _badge(snap.get("verdict"), small=True),
            ]
        )
        css.append("reference" if i == 0 else "")
    notes = list(
        dict.fromkeys(str(e["snapshot"]["prediction_note"]) for e in timeline if e["snapshot"].get("prediction_note"))
    )
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
        body += '<p class="note">Prediction notes: ' + "; ".join(_e(n) for n in notes) + "</p>"
    return _section("checkpoints", "Checkpoints", body)


def _details(result: dict[str, Any], timeline: list[dict[str, Any]]) -> str:
    parts = []
    eigenvalues = _list(_dict(result.get("spectrum0")).get("eigenvalues"))
    if timeline:
        last = timeline[-1]
        snap = last["snapshot"]
        modes = _list(snap.get("mode_indices"))
        if modes:
            predicted = _list(snap.get("mode_learnability_predicted"))
            actual = _list(snap.get("mode_learnability_actual"))
            power = _list(snap.get("target_power"))

            def at(values: list[Any], i: int) -> Any:
                return values[i] if i < len(values) else None

            rows = []
            for i, mode in enumerate(modes):
                index = int(_float(mode)) if math.isfinite(_float(mode)) else -1
                rows.append(
                    [
                        _e(mode),
                        _num(eigenvalues[index] if 0 <= index < len(eigenvalues) else None),
                        _num(at(power, i)),
                        _num(at(predicted, i), 3),
                        _num(at(actual, i), 3),
                    ]
                )
            grid = _grid(
                ["mode i", "eigenvalue λ_i", "target power v_i²", "predicted", "actual"], rows, numeric={0, 1, 2, 3, 4}
            )
            parts.append(f"<details><summary>Per-mode learnability of {_e(last['label'])}</summary>{grid}</details>")
        changes = _dict(snap.get("parameter_change_per_tensor"))
        if changes:
            rows = [[f"<code>{_e(name)}</code>", _num(value, 3)] for name, value in changes.items()]
            grid = _grid(["parameter", "relative change"], rows, numeric={1})
            parts.append(
                f"<details><summary>Relative change per parameter tensor, {_e(last['label'])}</summary>{grid}</details>"
            )
    curve = _dict(result.get("learning_curve"))
    sizes = _list(curve.get("n"))
    if sizes:
        columns = [_list(curve.get(key)) for key in ("learnability", "test_mse", "kappa")]
        rows = [
            [_count(n)] + [_num(col[i], 4) if i < len(col) else "n/a" for col in columns] for i, n in enumerate(sizes)
        ]
        grid = _grid(["n", "learnability", "test MSE", "κ"], rows, numeric={0, 1, 2, 3})
        parts.append(f"<details><summary>Learning curve values</summary>{grid}</details>")
    if not parts:
        return ""
    intro = '<p class="note">Every number is in <code>report.json</code>; these tables show the main ones.</p>'
    return _section("details", "Numbers", intro + "".join(parts))


def _reproduce(result: dict[str, Any]) -> str:
    command = result.get("command")
    body = f"<pre>{_e(command)}</pre>" if command else '<p class="muted">The command was not recorded.</p>'
    versions = _dict(result.get("versions"))
    if versions:
        body += _table([(_e(name), f"<code>{_e(value)}</code>") for name, value in versions.items()], css="versions")
    if result.get("created"):
        body += f'<p class="note">Created {_e(result["created"])}.</p>'
    return _section("reproduce", "Command and versions", body)


# ---------------------------------------------------------------------------------------------------- public
def render_html(result: Mapping[str, Any]) -> str:
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
        result: the result dict built by ``ntkmonitor audit`` / ``predict`` (every key optional).

    Returns:
        The HTML text.

    Example:
        >>> page = render_html({"kind": "predict", "command": "ntkmonitor predict --model <mine>",
        ...                     "spectrum0": {"eigenvalues": [1.0, 0.3, 0.1], "target_power": [0.5, 0.2, 0.1]}})
        >>> page.startswith("<!DOCTYPE html>"), "--model &lt;mine&gt;" in page, page.count("data:image/png;base64,")
        (True, True, 1)
    """
    data = _check_result(result)
    kind = _kind(data)
    timeline = _timeline(data)
    problems: list[str] = []
    header = _guarded("title", lambda: _header(data, kind), problems)
    verdict = _guarded("verdict", lambda: _verdict_block(data, kind, timeline), problems)
    summary = _guarded("summary", lambda: _summary(data, kind, timeline), problems)
    figures = _guarded("figures", lambda: _figures(data, kind, timeline, problems), problems)
    checkpoints = _guarded("checkpoints", lambda: _checkpoints(data, kind, timeline), problems)
    details = _guarded("numbers", lambda: _details(data, timeline), problems)
    reproduce = _guarded("command and versions", lambda: _reproduce(data), problems)
    warnings_html = _warnings(data, problems)  # last: it lists the problems of the other sections
    version = _dict(data.get("versions")).get("ntkmonitor")
    footer = f"<footer>Written by ntkmonitor{(' ' + _e(version)) if version else ''}.</footer>"
    title = f"ntkmonitor {_e(kind)} report"
    model_spec = _dict(data.get("model")).get("spec")
    if model_spec:
        title += f": {_e(model_spec)}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head>\n<body><main>\n"
        + "\n".join([header, verdict, summary, warnings_html, figures, checkpoints, details, reproduce, footer])
        + "\n</main></body></html>\n"
    )


def write_report(result: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (created if missing).

    ``report.json`` is :func:`report_json` (every number of the result, strict JSON); ``report.html`` is
    :func:`render_html`. Existing files of those names are replaced atomically (a temporary file renamed over
    them; a link there is replaced, never written through).

    Args:
        result: the result dict built by ``ntkmonitor audit`` / ``predict``.
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
    data = _check_result(result)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / JSON_NAME
    write_text_atomic(json_path, report_json(data) + "\n")  # first: the numbers survive any HTML problem
    html_path = folder / HTML_NAME
    write_text_atomic(html_path, render_html(data))
    return {"html": html_path, "json": json_path}


# ---------------------------------------------------------------------------------------------------- terminal
def _clip(line: str, width: int = SUMMARY_WIDTH) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _cell(text: str, width: int, *, right: bool = True) -> str:
    text = _clip(text, width) if len(text) > width else text
    return text.rjust(width) if right else text.ljust(width)


def _step(step: Any) -> str:
    """A step for the 7-character column: exact up to 9,999,999, else in scientific notation."""
    if step is None:
        return "n/a"
    text = str(step)
    number = _float(step)
    return f"{number:.2e}" if len(text) > 7 and math.isfinite(number) else text


_COLUMNS = (  # header, width, right-aligned
    ("checkpoint", 18, False),
    ("step", 7, True),
    ("K dist", 9, True),
    ("K change", 9, True),
    ("param chg", 9, True),
    ("lin err", 9, True),
    ("L act", 7, True),
    ("L pred", 7, True),
    ("verdict", 16, False),
)


def format_summary(result: Mapping[str, Any]) -> str:
    """A concise plain-text summary for the terminal, no line longer than :data:`SUMMARY_WIDTH` (100) columns.

    The verdict line; the model, probe and spectrum; the predicted learnability at the training-set size; the
    learnability of the last checkpoint; one row per checkpoint (kernel distance ``K dist``, relative kernel change
    ``K change``, relative parameter change, linearization error, learnability actual and predicted from ``K0``,
    verdict); the warnings. ASCII only; long texts are cut with ``...``.

    Args:
        result: the result dict built by ``ntkmonitor audit`` / ``predict``.

    Returns:
        The text, lines separated by ``\\n``, without a trailing newline.

    Example:
        >>> snap = {"step": 100, "kernel_distance": 0.012, "learnability_actual": 0.4, "verdict": "lazy"}
        >>> text = format_summary({"kind": "audit", "verdict": "lazy",
        ...                        "timeline": [{"label": "init.pt", "step": 0, "snapshot": {"step": 0}},
        ...                                     {"label": "end.pt", "step": 100, "snapshot": snap}]})
        >>> print(text.splitlines()[0])
        ntkmonitor audit: verdict LAZY (last checkpoint end.pt, step 100)
        >>> print(text.splitlines()[-1])
        end.pt                 100    0.012       n/a       n/a       n/a     0.4     n/a  lazy
    """
    data = _check_result(result)
    kind = _kind(data)
    timeline = _timeline(data)
    model = _dict(data.get("model"))
    probe = _dict(data.get("probe"))
    options = _dict(data.get("options"))
    spectrum = _dict(data.get("spectrum0"))
    curve = _dict(data.get("learning_curve"))
    verdict = data.get("verdict")

    lines = []
    head = f"ntkmonitor {kind}: verdict {verdict.upper() if isinstance(verdict, str) and verdict else 'not measured'}"
    if timeline and verdict:
        head += f" (last checkpoint {timeline[-1]['label']}, step {timeline[-1]['step']})"
    lines.append(head)
    if model:
        lines.append(
            f"  model     {model.get('spec', 'n/a')} ({_count(model.get('num_params'))} params, "
            f"{_count(model.get('num_outputs'))} outputs, {model.get('device', 'n/a')}, "
            f"kernel {model.get('kernel_method', 'n/a')})"
        )
    if probe or options:
        overlap = "  OVERLAPS TRAINING DATA" if probe.get("overlaps_training_data") is True else ""
        source = f" from {probe['source']}" if probe.get("source") else ""
        lines.append(
            f"  probe     {_count(probe.get('size'))} points{source}; n = {_count(probe.get('train_size'))}; "
            f"ridge {_num(options.get('ridge', curve.get('ridge')))}; mode {options.get('mode', 'n/a')}{overlap}"
        )
    if spectrum:
        fit = _dict(spectrum.get("power_law"))
        alpha = f"power law alpha {_num(fit.get('alpha'), 3)} (r2 {_num(fit.get('r2'), 3)})" if fit else "no power law"
        lines.append(
            f"  spectrum  effective rank {_num(spectrum.get('effective_rank'), 3)}, participation ratio "
            f"{_num(spectrum.get('participation_ratio'), 3)}, {alpha}"
        )
    learn, mse, how = _curve_at(curve, probe.get("train_size"))
    if how:
        approx = " (interpolated)" if how == "interpolated" else ""
        lines.append(
            f"  predicted at n = {_count(probe.get('train_size'))}: learnability {_num(learn, 3)}"
            f"{_interval(curve, 'learnability', 3)}, test MSE {_num(mse, 3)}{_interval(curve, 'test_mse', 3)}{approx}"
        )
    distance = _dict(data.get("weight_distance"))
    if distance.get("measured"):
        lines.append(
            f"  distance  |theta - theta0| predicted {_num(distance.get('predicted'), 3)} (linearized, to convergence) "
            f"vs measured {_num(_list(distance['measured'])[-1], 3)}"
        )
    check = _dict(data.get("self_check"))
    if check:
        lines.append(
            f"  self-check on the probe: learnability gap {_num(check.get('learnability_gap'), 3)}, "
            f"test-MSE ratio {_num(check.get('mse_ratio'), 3)}"
        )
    if len(timeline) >= 2:
        snap = timeline[-1]["snapshot"]
        lines.append(
            f"  last      learnability {_num(snap.get('learnability_actual'), 3)} actual vs "
            f"{_num(snap.get('learnability_predicted_init'), 3)} predicted (K0); test MSE "
            f"{_num(snap.get('test_mse_actual'), 3)} vs {_num(snap.get('test_mse_predicted_init'), 3)}"
        )
    full = data.get("full_kernel")
    if isinstance(full, Mapping):
        lines.append(f"  full kernel: off-diagonal share {_num(full.get('offdiagonal_fraction'), 3)}")
    notes = [curve.get("note")] + [entry["snapshot"].get("prediction_note") for entry in timeline]
    for note in dict.fromkeys(str(n) for n in notes if n):  # wrapped, not cut: the note is the explanation
        lines += textwrap.wrap(note, SUMMARY_WIDTH, initial_indent="  note      ", subsequent_indent=" " * 12)

    if timeline:
        lines.append("")
        lines.append("  ".join(_cell(h, w, right=r) for h, w, r in _COLUMNS).rstrip())
        keys = (
            "kernel_distance",
            "relative_kernel_change",
            "parameter_change",
            "linearization_error",
            "learnability_actual",
            "learnability_predicted_init",
        )
        for entry in timeline:
            snap = entry["snapshot"]
            values = [entry["label"], _step(entry["step"])]
            values += [_num(snap.get(key), 3) for key in keys]
            values.append(str(snap.get("verdict") or "-"))
            row = "  ".join(_cell(v, w, right=r) for v, (_, w, r) in zip(values, _COLUMNS, strict=True))
            lines.append(row.rstrip())

    warnings_list = [str(w) for w in _list(data.get("warnings"))]
    if warnings_list:
        lines.append("")
        lines.append(f"warnings ({len(warnings_list)}):")
        shown = warnings_list[:5]
        lines += [f"  - {' '.join(w.split())}" for w in shown]
        if len(warnings_list) > len(shown):
            lines.append(f"  ... and {len(warnings_list) - len(shown)} more in report.json")
    text = "\n".join(_clip(line.encode("ascii", "replace").decode("ascii")) for line in lines)
    return text
