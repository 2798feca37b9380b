r"""The text output: the terminal summary of ``ntkmonitor audit`` / ``predict`` and the markdown summary of a
measurement that TensorBoard's Text tab shows.

Both render the data record (:mod:`ntkmonitor.record`, :mod:`ntkmonitor.results`) and import no engine code.

Example:
    >>> from ntkmonitor.results import AuditResult
    >>> print(format_summary(AuditResult(kind="predict")).splitlines()[0])
    ntkmonitor predict: verdict not measured
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from typing import Any

from .errors import InputError
from .record import Snapshot, format_count, format_number
from .results import AuditResult, LearningCurve, TimelineEntry

__all__ = ["format_summary", "text_summary", "SUMMARY_WIDTH"]

SUMMARY_WIDTH = 100
"""No line of :func:`format_summary` is longer than this."""

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

_ROW_FIELDS = (
    "kernel_distance",
    "relative_kernel_change",
    "parameter_change",
    "linearization_error",
    "learnability_actual",
    "learnability_predicted_init",
)


def _clip(line: str, width: int = SUMMARY_WIDTH) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _cell(text: str, width: int, *, right: bool = True) -> str:
    text = _clip(text, width) if len(text) > width else text
    return text.rjust(width) if right else text.ljust(width)


def _step(entry: TimelineEntry) -> str:
    """A step for the 7-character column: exact up to 9,999,999, else in scientific notation."""
    if entry.step is None:
        return "n/a"
    text = str(entry.step)
    return f"{float(entry.step):.2e}" if len(text) > 7 else text


def _interval(curve: LearningCurve, name: str, digits: int = 3) -> str:
    bounds = curve.interval_at_train_size(name)
    return "" if bounds is None else f" [{format_number(bounds[0], digits)}, {format_number(bounds[1], digits)}]"


def format_summary(result: AuditResult | Mapping[str, Any]) -> str:
    """A concise plain-text summary for the terminal, no line longer than :data:`SUMMARY_WIDTH` (100) columns.

    The verdict line; the model, probe and spectrum; the predicted learnability at the training-set size; the
    learnability of the last checkpoint; one row per checkpoint (kernel distance ``K dist``, relative kernel change
    ``K change``, relative parameter change, linearization error, learnability actual and predicted from ``K0``,
    verdict); the warnings. ASCII only; long texts are cut with ``...``; notes are wrapped.

    Args:
        result: an :class:`~ntkmonitor.results.AuditResult`, or its dict form.

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
    r = AuditResult.coerce(result)
    timeline, curve, probe, model = r.timeline, r.learning_curve, r.probe, r.model
    lines = []
    head = f"ntkmonitor {r.kind}: verdict {r.verdict.value.upper() if r.verdict else 'not measured'}"
    if timeline and r.verdict:
        head += f" (last checkpoint {timeline[-1].label}, step {_step(timeline[-1])})"
    lines.append(head)
    if model.spec or model.num_params is not None:
        lines.append(
            f"  model     {model.spec or 'n/a'} ({format_count(model.num_params)} params, "
            f"{format_count(model.num_outputs)} outputs, {model.device or 'n/a'}, "
            f"kernel {model.kernel_method or 'n/a'})"
        )
    if probe.size is not None or probe.train_size is not None:
        overlap = "  OVERLAPS TRAINING DATA" if probe.overlaps_training_data is True else ""
        source = f" from {probe.source}" if probe.source else ""
        ridge = r.options.ridge if math.isfinite(r.options.ridge) else curve.ridge
        lines.append(
            f"  probe     {format_count(probe.size)} points{source}; n = {format_count(probe.train_size)}; "
            f"ridge {format_number(ridge)}; mode {r.options.mode or 'n/a'}{overlap}"
        )
    spectrum = r.spectrum0
    if spectrum.eigenvalues:
        fit = spectrum.power_law
        law = (
            f"power law alpha {format_number(fit.alpha, 3)} (r2 {format_number(fit.r2, 3)})" if fit else "no power law"
        )
        lines.append(
            f"  spectrum  effective rank {format_number(spectrum.effective_rank, 3)}, participation ratio "
            f"{format_number(spectrum.participation_ratio, 3)}, {law}"
        )
    learn, mse, how = curve.at(probe.train_size)
    if how:
        approx = " (interpolated)" if how == "interpolated" else ""
        lines.append(
            f"  predicted at n = {format_count(probe.train_size)}: learnability {format_number(learn, 3)}"
            f"{_interval(curve, 'learnability')}, test MSE {format_number(mse, 3)}"
            f"{_interval(curve, 'test_mse')}{approx}"
        )
    distance = r.weight_distance
    if distance is not None and distance.measured:
        lines.append(
            f"  distance  |theta - theta0| predicted {format_number(distance.predicted, 3)} (linearized, to "
            f"convergence) vs measured {format_number(distance.measured[-1], 3)}"
        )
    if r.self_check is not None:
        lines.append(
            f"  self-check on the probe: learnability gap {format_number(r.self_check.learnability_gap, 3)}, "
            f"test-MSE ratio {format_number(r.self_check.mse_ratio, 3)}"
        )
    if len(timeline) >= 2:
        snap = timeline[-1].snapshot
        lines.append(
            f"  last      learnability {format_number(snap.learnability_actual, 3)} actual vs "
            f"{format_number(snap.learnability_predicted_init, 3)} predicted (K0); test MSE "
            f"{format_number(snap.test_mse_actual, 3)} vs {format_number(snap.test_mse_predicted_init, 3)}"
        )
    if r.offdiagonal_fraction is not None:
        lines.append(f"  full kernel: off-diagonal share {format_number(r.offdiagonal_fraction, 3)}")
    notes: dict[str, list[str]] = {}  # each distinct note once, with what it belongs to
    if curve.note:
        notes[curve.note] = [f"n = {format_count(probe.train_size)}"]
    for entry in timeline:
        if entry.snapshot.prediction_note:
            notes.setdefault(entry.snapshot.prediction_note, []).append(entry.label)
    for note, owners in notes.items():  # wrapped, not cut: the note is the explanation
        text = f"({', '.join(owners)}) {note}"
        lines += textwrap.wrap(text, SUMMARY_WIDTH, initial_indent="  note      ", subsequent_indent=" " * 12)

    if timeline:
        lines.append("")
        lines.append("  ".join(_cell(h, w, right=right) for h, w, right in _COLUMNS).rstrip())
        for entry in timeline:
            snap = entry.snapshot
            values = [entry.label, _step(entry)]
            values += [format_number(getattr(snap, name), 3) for name in _ROW_FIELDS]
            values.append(snap.verdict or "-")
            row = "  ".join(_cell(v, w, right=right) for v, (_, w, right) in zip(values, _COLUMNS, strict=True))
            lines.append(row.rstrip())

    if r.warnings:
        lines.append("")
        lines.append(f"warnings ({len(r.warnings)}):")
        shown = r.warnings[:5]
        lines += [f"  - {' '.join(w.split())}" for w in shown]
        if len(r.warnings) > len(shown):
            lines.append(f"  ... and {len(r.warnings) - len(shown)} more in report.json")
    return "\n".join(_clip(line.encode("ascii", "replace").decode("ascii")) for line in lines)


def _with_interval(value: float, lower: float, upper: float) -> str:
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return format_number(value)
    return f"{format_number(value)} [{format_number(lower)}, {format_number(upper)}]"


def text_summary(snapshot: Snapshot) -> str:
    r"""The markdown summary of a measurement (what :func:`ntkmonitor.tensorboard.log_text_summary` writes).

    Args:
        snapshot: the measurement.

    Returns:
        Markdown: the verdict, a table of drift and learnability (predicted vs actual), and the prediction note.

    Example:
        >>> print(text_summary(Snapshot(step=7, verdict="lazy", kernel_distance=0.012)).splitlines()[0])
        **Step 7: lazy**
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"Expected a Snapshot, but got {type(snapshot).__name__}.")
    s = snapshot
    epoch = f" (epoch {s.epoch})" if s.epoch is not None else ""
    rows = [
        ("kernel distance", format_number(s.kernel_distance)),
        ("linearization error", format_number(s.linearization_error)),
        ("relative parameter change", format_number(s.parameter_change)),
        ("learnability: actual", format_number(s.learnability_actual)),
        (
            "learnability: predicted from K0",
            _with_interval(
                s.learnability_predicted_init, s.learnability_predicted_init_lower, s.learnability_predicted_init_upper
            ),
        ),
        (
            "learnability: predicted from Kt",
            _with_interval(
                s.learnability_predicted_current,
                s.learnability_predicted_current_lower,
                s.learnability_predicted_current_upper,
            ),
        ),
        ("test MSE: actual", format_number(s.test_mse_actual)),
        (
            "test MSE: predicted from K0",
            _with_interval(s.test_mse_predicted_init, s.test_mse_predicted_init_lower, s.test_mse_predicted_init_upper),
        ),
        (
            "test MSE: predicted from Kt",
            _with_interval(
                s.test_mse_predicted_current, s.test_mse_predicted_current_lower, s.test_mse_predicted_current_upper
            ),
        ),
        ("ridge of the prediction", format_number(s.ridge)),
    ]
    if math.isfinite(s.self_check_learnability_gap):
        rows.append(
            (
                "self-check on the probe: learnability gap, MSE ratio",
                f"{format_number(s.self_check_learnability_gap)}, {format_number(s.self_check_mse_ratio)}x",
            )
        )
    lines = [f"**Step {s.step}{epoch}: {s.verdict or 'no verdict'}**", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    if s.prediction_note:
        lines += ["", f"Prediction note: {s.prediction_note}"]
    return "\n".join(lines)
