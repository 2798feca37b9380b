r"""Matplotlib figures of a monitored run: the spectrum, per-mode learnability, drift, spectral bias, learning curve.

Every builder takes plain data (arrays, a :class:`~ntkmonitor.Snapshot` or a list of them) and returns a
:class:`matplotlib.figure.Figure` drawn on the Agg canvas. Nothing here touches pyplot's global state (no
``plt.figure``, no current figure, nothing to close), so the builders are safe inside training loops, in
threads and on headless machines. matplotlib is imported inside the functions: ``import ntkmonitor`` never
imports it.

Figures are 8 inches wide at 100 dpi (800 pixels), the width TensorBoard shows images at.
:func:`figure_to_png` and :func:`figure_to_array` turn a figure into PNG bytes or an ``(H, W, 3)`` uint8 array.

The builders render values; they compute no theory. A history may hold :class:`~ntkmonitor.Snapshot` objects
or their :meth:`~ntkmonitor.Snapshot.to_dict` dicts.

Example:
    >>> snaps = [Snapshot(step=s, learnability_actual=s / 20, learnability_predicted_init=s / 15) for s in (0, 5, 10)]
    >>> fig = learnability_figure(snaps)
    >>> figure_to_array(fig).shape[1]
    800
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError
from .record import Snapshot, format_number

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "spectrum_figure",
    "mode_learnability_figure",
    "learnability_figure",
    "drift_figure",
    "mode_heatmap_figure",
    "learning_curve_figure",
    "figure_to_png",
    "figure_to_array",
    "FIGURE_WIDTH_INCHES",
    "FIGURE_DPI",
    "HEATMAP_RANGE",
]

FIGURE_WIDTH_INCHES = 8.0
"""Width of every figure in inches; times :data:`FIGURE_DPI` gives 800 pixels."""

FIGURE_DPI = 100
"""Resolution of every figure (dots per inch)."""

HEATMAP_RANGE = (-0.25, 1.25)
"""Color range of :func:`mode_heatmap_figure`; values outside take the end colors (the colorbar shows arrows)."""

_ACTUAL = "tab:blue"
_PRED_INIT = "tab:orange"
_PRED_CURRENT = "tab:green"
_POWER_FLOOR = 1e-12
"""Target power below this fraction of the largest mode's power is round-off; it is not drawn."""


# ---------------------------------------------------------------------------------------------------- helpers
def _new_figure(
    height: float,
    ncols: int = 1,
    *,
    top: float = 0.45,
    right: float = 0.25,
    left: float = 0.85,
    bottom: float = 0.6,
    wspace: float = 0.3,
) -> tuple[Figure, list[Axes]]:
    """A figure on its own Agg canvas (never registered with pyplot) and its axes.

    Margins are fixed, in inches (a layout engine would triple the drawing time, and these figures are drawn
    during training).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGURE_WIDTH_INCHES, height), dpi=FIGURE_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=left / FIGURE_WIDTH_INCHES,
        right=1 - right / FIGURE_WIDTH_INCHES,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
    )
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _vector(values: Any, name: str) -> np.ndarray:
    """A 1-D float64 numpy array from a tensor, array or sequence."""
    if values is None:
        return np.zeros(0)
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"Expected {name} to be a 1-D sequence of numbers, but got {type(values).__name__}.") from err
    if array.ndim == 0:
        array = array[None]
    if array.ndim != 1:
        raise InputError(f"Expected {name} to be 1-D, but got shape {tuple(array.shape)}.")
    return array


def _snapshot(item: Any) -> Snapshot:
    if isinstance(item, Snapshot):
        return item
    if isinstance(item, dict):
        return Snapshot.from_dict(item)
    raise InputError(f"Expected a Snapshot or a Snapshot.to_dict() dict, but got {type(item).__name__}.")


def _history(history: Any) -> list[Snapshot]:
    if isinstance(history, (Snapshot, dict)) or not isinstance(history, Sequence):
        raise InputError(
            f"Expected history to be a sequence of Snapshots (e.g. tracker.history), but got {type(history).__name__}."
        )
    return [_snapshot(item) for item in history]


def _series(snaps: list[Snapshot], attr: str) -> np.ndarray:
    return np.array([float(getattr(s, attr)) for s in snaps], dtype=np.float64)


def _positive(values: np.ndarray) -> np.ndarray:
    """``values`` with non-positive and non-finite entries replaced by NaN (for log axes)."""
    out = values.astype(np.float64, copy=True)
    out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def _integer_steps(ax: Axes) -> None:
    """Training steps are whole numbers: no fractional ticks (two checkpoints at steps 0 and 1, say)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))


def _has_data(*arrays: np.ndarray) -> bool:
    return any(np.isfinite(a).any() for a in arrays)


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _reference_levels(ax: Axes, levels: tuple[float, ...]) -> None:
    """Thin grey horizontal lines across the axes (a collection, so ``ax.lines`` holds only data)."""
    ax.hlines(levels, 0, 1, transform=ax.get_yaxis_transform(), colors="0.5", linewidths=0.8, zorder=1)


# ---------------------------------------------------------------------------------------------------- figures
def spectrum_figure(
    eigenvalues: Any,
    target_power: Any = None,
    *,
    kappa: float | None = None,
    title: str = "NTK spectrum and the target's power per mode",
) -> Figure:
    r"""Log-log plot of the operator eigenvalues and of which modes carry the target.

    The eigenvalues ``lambda_i`` (left axis, a line) are plotted against the 1-based mode index ``i``; the
    target's power per mode ``v_i^2`` (summed over outputs; right axis, markers) shows where the target lives.
    Modes with ``lambda_i`` well above ``kappa`` are learned (``L_i = lambda_i / (lambda_i + kappa)``), so a
    horizontal line marks ``kappa`` when given. The title says which share of the total of ``target_power`` the
    top 10 modes carry (pass the power of every mode for the share of the whole target). Zero eigenvalues and
    powers (below ``1e-12`` of the largest power: round-off) cannot be drawn on log axes and are left out.

    Args:
        eigenvalues: ``(R,)`` operator eigenvalues, sorted descending (e.g. ``tracker.spectrum0.eigenvalues``).
        target_power: ``(R',)`` ``v_i^2`` per mode in the same order, ``R' <= R`` (e.g.
            ``tracker.coefficients0.pow(2).sum(1)``), or ``None``.
        kappa: the eigenlearning ``kappa`` to mark (e.g. ``snapshot.kappa_init``); ``None`` or ``nan`` for none.
        title: the figure title.

    Returns:
        A figure with one axes, or two (a twin right axis) when ``target_power`` is given.

    Example:
        >>> lam = 1.0 / torch.arange(1, 33, dtype=torch.float64) ** 2
        >>> fig = spectrum_figure(lam, torch.rand(32), kappa=0.01)
        >>> len(fig.axes)
        2
    """
    lam = _vector(eigenvalues, "eigenvalues")
    fig, (ax,) = _new_figure(4.5, top=0.65, right=0.9)
    index = np.arange(1, lam.size + 1)
    lam_pos = _positive(lam)
    handles = []
    if _has_data(lam_pos):
        (line,) = ax.plot(index, lam_pos, color=_ACTUAL, marker=".", markersize=4, label=r"eigenvalue $\lambda_i$")
        handles.append(line)
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        _no_data(ax, "no positive eigenvalue")
    if kappa is not None and math.isfinite(kappa) and kappa > 0 and _has_data(lam_pos):
        handles.append(
            ax.axhline(kappa, color="0.3", linestyle="--", linewidth=1, label=rf"$\kappa$ = {kappa:.3g} ($L_i = 1/2$)")
        )
    ax.set_xlabel("mode i + 1 (log scale; mode i = 0 is the largest eigenvalue, as in the other figures)")
    ax.set_ylabel(r"operator eigenvalue $\lambda_i$", color=_ACTUAL)
    ax.grid(True, which="major", alpha=0.3)

    if target_power is not None:
        power = _vector(target_power, "target_power")[: lam.size]
        twin = ax.twinx()
        floor = _POWER_FLOOR * np.nanmax(power) if np.isfinite(power).any() and np.nanmax(power) > 0 else np.inf
        shown = power.copy()
        shown[~(np.isfinite(shown) & (shown >= floor))] = np.nan
        if _has_data(shown):
            markers = twin.plot(
                np.arange(1, power.size + 1),
                shown,
                linestyle="none",
                marker="o",
                markersize=5,
                color=_PRED_INIT,
                alpha=0.8,
                label=r"target power $v_i^2$",
            )
            handles.extend(markers)
            twin.set_yscale("log")
            total = float(np.nansum(power[np.isfinite(power)]))
            top = min(10, power.size)
            share = float(np.nansum(power[:top])) / total if total > 0 else math.nan
            ax.set_title(f"{title}\n(top {top} modes carry {format_number(100 * share, 3)}% of the target's power)")
        else:
            ax.set_title(title)
        twin.set_ylabel(r"target power per mode $v_i^2$", color=_PRED_INIT)
    else:
        ax.set_title(title)
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize="small")
    return fig


def mode_learnability_figure(snapshot: Any, *, title: str | None = None) -> Figure:
    r"""Predicted (line) vs actual (markers) learnability of each reported eigenmode of one measurement.

    Predicted ``L_i = lambda_i / (lambda_i + kappa)`` from the reference kernel; actual ``v_hat_i / v_i``, the
    fraction of the target's component along mode ``i`` that the network has learned. Actual values are noisy
    where the target has little power, and ``nan`` where it has none; ``nan`` values are left out. Values
    outside the y range ``[-0.5, 1.5]`` are drawn at its edge as triangles pointing outwards.

    Args:
        snapshot: a :class:`~ntkmonitor.Snapshot` (or its dict) with ``mode_indices``,
            ``mode_learnability_predicted`` and ``mode_learnability_actual``.
        title: the figure title; default says the step and the verdict.

    Returns:
        A figure with one axes: a "predicted (K0)" line, an "actual" marker series and, when some actual value
        is out of range, "actual (off scale)" marker series (one above, one below the range).

    Example:
        >>> snap = Snapshot(step=100, mode_indices=[0, 1, 2], mode_learnability_predicted=[0.9, 0.6, 0.2],
        ...                 mode_learnability_actual=[0.95, float("nan"), 0.1])
        >>> [line.get_label() for line in mode_learnability_figure(snap).axes[0].lines]
        ['predicted (K0)', 'actual']
    """
    snap = _snapshot(snapshot)
    modes = np.asarray(snap.mode_indices, dtype=np.float64)
    predicted = _vector(snap.mode_learnability_predicted, "mode_learnability_predicted")
    actual = _vector(snap.mode_learnability_actual, "mode_learnability_actual")
    if not (predicted.size == actual.size == modes.size):
        raise InputError(
            f"Expected one predicted and one actual learnability per reported mode ({modes.size}), but got "
            f"{predicted.size} predicted and {actual.size} actual values."
        )
    fig, (ax,) = _new_figure(4.5)
    low, high = -0.5, 1.5
    ax.axhspan(0, 1, color="0.92", zorder=0)
    _reference_levels(ax, (0.0, 1.0))
    if modes.size == 0:
        _no_data(ax, "no mode reported")
    else:
        ax.plot(modes, predicted, color=_PRED_INIT, marker=".", linewidth=2, label="predicted (K0)")
        lower = _vector(snap.mode_learnability_predicted_lower, "mode_learnability_predicted_lower")
        upper = _vector(snap.mode_learnability_predicted_upper, "mode_learnability_predicted_upper")
        if lower.size == upper.size == modes.size and np.isfinite(lower).any():
            ax.fill_between(modes, lower, upper, color=_PRED_INIT, alpha=0.2, linewidth=0, label="interval (90 %)")
        finite = np.isfinite(actual)
        inside = finite & (actual >= low) & (actual <= high)
        ax.plot(
            modes[inside], actual[inside], linestyle="none", marker="o", markersize=7, color=_ACTUAL, label="actual"
        )
        label = "actual (off scale)"
        for where, edge, marker in ((finite & (actual > high), high, "^"), (finite & (actual < low), low, "v")):
            if where.any():
                ax.plot(
                    modes[where],
                    np.full(int(where.sum()), edge),
                    linestyle="none",
                    marker=marker,
                    markersize=8,
                    markerfacecolor="none",
                    color=_ACTUAL,
                    label=label,
                )
                label = "_nolegend_"
        skipped = int((~finite).sum())
        if skipped:
            ax.text(
                0.99,
                0.02,
                f"{skipped} mode(s) without target power left out",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize="small",
                color="0.4",
            )
        ax.legend(loc="best", fontsize="small")
        ax.set_xticks(modes if modes.size <= 20 else modes[:: math.ceil(modes.size / 20)])
    ax.set_ylim(low - 0.05, high + 0.05)
    ax.set_xlabel("eigenmode i of the reference kernel (0 = largest eigenvalue)")
    ax.set_ylabel("learnability of mode i")
    ax.set_title(title or f"Per-mode learnability at step {snap.step} (verdict: {snap.verdict or 'n/a'})")
    return fig


def learnability_figure(history: Sequence[Any], *, title: str = "Eigenlearning: predicted vs actual") -> Figure:
    r"""Learnability and test MSE over training, actual vs predicted from ``K0`` and from ``Kt`` (two panels).

    Left: ``learnability_actual``, ``learnability_predicted_init`` and ``learnability_predicted_current``, each
    prediction with the shaded band of its interval (``..._lower`` to ``..._upper``). Right: the same for the test
    MSE on the probe (log scale when every value is positive). ``nan`` values leave gaps.

    Args:
        history: the :class:`~ntkmonitor.Snapshot` of each measurement, in order (``tracker.history``).
        title: the figure title.

    Returns:
        A figure with two axes, three lines each (actual, predicted (K0), predicted (Kt)).

    Example:
        >>> snaps = [Snapshot(step=s, test_mse_actual=1 - s / 20, test_mse_predicted_init=1 - s / 15) for s in (0, 10)]
        >>> [len(ax.lines) for ax in learnability_figure(snaps).axes]
        [3, 3]
    """
    snaps = _history(history)
    fig, (left, right) = _new_figure(4.0, ncols=2, top=0.75, right=0.15, left=0.95, wspace=0.4)
    steps = np.array([s.step for s in snaps], dtype=np.float64)
    panels = (
        (left, "learnability", "learnability L(f) of the target"),
        (right, "test_mse", "test MSE on the probe"),
    )
    for ax, prefix, ylabel in panels:
        series = [
            (_series(snaps, f"{prefix}_actual"), "actual", _ACTUAL, "o", "-"),
            (_series(snaps, f"{prefix}_predicted_init"), "predicted (K0)", _PRED_INIT, "s", "--"),
            (_series(snaps, f"{prefix}_predicted_current"), "predicted (Kt)", _PRED_CURRENT, "^", ":"),
        ]
        for values, label, color, marker, style in series:
            ax.plot(steps, values, color=color, marker=marker, markersize=4, linestyle=style, label=label)
        for source, color in (("init", _PRED_INIT), ("current", _PRED_CURRENT)):
            lower = _series(snaps, f"{prefix}_predicted_{source}_lower")
            upper = _series(snaps, f"{prefix}_predicted_{source}_upper")
            if np.isfinite(lower).any():
                ax.fill_between(steps, lower, upper, color=color, alpha=0.15, linewidth=0)
        values = np.concatenate([v for v, *_ in series]) if series else np.zeros(0)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            _no_data(ax, "nothing measured yet")
        elif prefix == "test_mse" and (finite > 0).all() and finite.max() / finite.min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        _integer_steps(ax)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _reference_levels(left, (1.0,))
    left.set_title("learnability")
    right.set_title("test MSE")
    fig.suptitle(title)
    return fig


def drift_figure(
    history: Sequence[Any], thresholds: Any = None, *, title: str = "Drift from the lazy (kernel) regime"
) -> Figure:
    r"""The lazy-regime drift metrics over training, on log axes, with the verdict thresholds.

    Left panel, the kernel: kernel distance ``1 - <K0, Kt>/(|K0| |Kt|)`` and relative kernel change
    ``|Kt - K0| / |K0|``. Right panel, weights and function: relative parameter change and linearization error.
    The reference (where nothing has moved; its kernel distance is round-off) is left out; ``nan`` leaves gaps.
    With ``thresholds``
    the lazy (dashed) and feature-learning (dotted) thresholds of the kernel distance and of the linearization
    error are drawn in the color of their metric.

    Args:
        history: the :class:`~ntkmonitor.Snapshot` of each measurement, in order (``tracker.history``).
        thresholds: a :class:`~ntkmonitor.DriftThresholds` (e.g. ``tracker.thresholds``), or ``None``.
        title: the figure title (the latest verdict is appended).

    Returns:
        A figure with two axes, two metric lines each (plus two reference lines each with ``thresholds``).

    Example:
        >>> snaps = [Snapshot(step=s, kernel_distance=s * 1e-3, linearization_error=s * 1e-2) for s in (0, 10, 20)]
        >>> fig = drift_figure(snaps, DriftThresholds())
        >>> [len(ax.lines) for ax in fig.axes]
        [4, 4]
    """
    snaps = _history(history)
    verdict = snaps[-1].verdict if snaps else ""
    # the reference (nothing moved yet) is left out: its kernel distance is round-off (about 1e-14), which a
    # log axis would draw and so squash the data
    snaps = [s for s in snaps if not (s.parameter_change == 0 or (s.step == 0 and s.kernel_distance < 1e-9))]
    fig, (left, right) = _new_figure(4.0, ncols=2, top=0.75, right=0.15, left=0.95, wspace=0.4)
    steps = np.array([s.step for s in snaps], dtype=np.float64)
    panels = (
        (
            left,
            "kernel",
            [
                ("kernel_distance", "kernel distance", _ACTUAL, "distance"),
                ("relative_kernel_change", "relative kernel change", _PRED_INIT, None),
            ],
        ),
        (
            right,
            "weights and function",
            [
                ("parameter_change", "relative parameter change", _PRED_CURRENT, None),
                ("linearization_error", "linearization error", "tab:red", "linearization"),
            ],
        ),
    )
    for ax, panel_title, metrics in panels:
        arrays = []
        for attr, label, color, threshold in metrics:
            values = _positive(_series(snaps, attr))
            arrays.append(values)
            ax.plot(steps, values, color=color, marker="o", markersize=4, label=label)
            if thresholds is not None and threshold is not None:
                name = "distance" if threshold == "distance" else "lin. error"
                lazy = float(getattr(thresholds, f"lazy_{threshold}"))
                feature = float(getattr(thresholds, f"feature_{threshold}"))
                ax.axhline(
                    lazy, color=color, linestyle="--", linewidth=1, alpha=0.7, label=f"{name}: lazy below {lazy:g}"
                )
                ax.axhline(
                    feature,
                    color=color,
                    linestyle=":",
                    linewidth=1.2,
                    alpha=0.7,
                    label=f"{name}: feature learning above {feature:g}",
                )
        if _has_data(*arrays):
            ax.set_yscale("log")
        else:
            _no_data(ax, "no drift measured yet")
        ax.set_xlabel("step")
        _integer_steps(ax)
        ax.set_ylabel("value (log scale)")
        ax.set_title(panel_title)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    fig.suptitle(f"{title} (latest verdict: {verdict})" if verdict else title)
    return fig


def mode_heatmap_figure(
    history: Sequence[Any], *, title: str = "Spectral bias: fraction of each eigenmode learned"
) -> Figure:
    r"""Heatmap of the fraction of each top eigenmode learned (``mode_learnability_actual``) vs training step.

    Rows are the reference kernel's modes (row 0 = largest eigenvalue, at the top), columns the measurements
    (labeled by step). Spectral bias shows as the top rows turning to 1 before the lower ones. ``nan`` (no
    target power in that mode, or the mode not reported) is grey; colors are clipped to
    :data:`HEATMAP_RANGE`.

    Args:
        history: the :class:`~ntkmonitor.Snapshot` of each measurement, in order (``tracker.history``).
        title: the figure title.

    Returns:
        A figure with two axes: the heatmap and its colorbar.

    Example:
        >>> snaps = [Snapshot(step=s, mode_indices=[0, 1], mode_learnability_actual=[s / 10, s / 40]) for s in (0, 5)]
        >>> len(mode_heatmap_figure(snaps).axes)
        2
    """
    import matplotlib

    snaps = _history(history)
    modes = sorted({int(i) for s in snaps for i in s.mode_indices})
    rows = {mode: r for r, mode in enumerate(modes)}
    grid = np.full((len(modes), len(snaps)), np.nan)
    for c, snap in enumerate(snaps):
        values = _vector(snap.mode_learnability_actual, "mode_learnability_actual")
        for mode, value in zip(snap.mode_indices, values, strict=False):  # missing values stay nan
            grid[rows[int(mode)], c] = value
    height = min(8.0, max(3.5, 1.5 + 0.3 * len(modes)))
    fig, (ax,) = _new_figure(height, right=0.6)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    low, high = HEATMAP_RANGE
    image = ax.imshow(
        np.ma.masked_invalid(grid) if grid.size else np.full((1, 1), np.nan),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=low,
        vmax=high,
        origin="upper",
    )
    colorbar = fig.colorbar(image, ax=ax, extend="both", fraction=0.05, pad=0.02)
    colorbar.set_label(r"fraction of the mode learned $\hat v_i / v_i$")
    if grid.size == 0:
        _no_data(ax, "no mode reported")
    else:
        stride = max(1, math.ceil(len(snaps) / 12))
        columns = list(range(0, len(snaps), stride))
        ax.set_xticks(columns, [str(snaps[c].step) for c in columns])
        stride = max(1, math.ceil(len(modes) / 25))
        ax.set_yticks(list(range(0, len(modes), stride)), [str(modes[r]) for r in range(0, len(modes), stride)])
    ax.set_xlabel("step (one column per measurement)")
    ax.set_ylabel("eigenmode i of K0 (0 = largest)")
    ax.set_title(title)
    return fig


def learning_curve_figure(
    n: Any,
    learnability: Any,
    test_mse: Any,
    *,
    train_size: int | None = None,
    learnability_band: tuple[Any, Any] | None = None,
    test_mse_band: tuple[Any, Any] | None = None,
    reach: float | None = None,
    measured: tuple[Any, Any, Any] | None = None,
    title: str = "Predicted learning curve (eigenlearning, from the initial kernel)",
) -> Figure:
    r"""The predicted learnability and test MSE as functions of the training-set size ``n`` (two panels).

    Left: the target's predicted learnability ``L(f)`` against ``n`` on a log x axis, y from 0 to 1. Right: the
    predicted test MSE against ``n``, log-log (linear y when no value is positive). Each prediction is drawn with
    the shaded band of its interval when the bands are given. A vertical dashed line marks ``train_size``, the
    size of the actual training set, and a dotted one ``reach``, beyond which the prediction extrapolates.
    ``measured`` points (e.g. the self-check's kernel regression on the probe) are drawn as markers. Points with
    a non-positive ``n`` cannot be drawn on a log axis and are left out, like ``nan`` (or ``None``) values,
    which leave gaps.

    Args:
        n: ``(P,)`` training-set sizes, ascending (e.g. ``result["learning_curve"]["n"]``).
        learnability: ``(P,)`` predicted learnability at each ``n``.
        test_mse: ``(P,)`` predicted test MSE at each ``n``.
        train_size: the actual training-set size to mark, or ``None``.
        learnability_band: ``((P,), (P,))`` lower and upper ends of the learnability intervals, or ``None``.
        test_mse_band: ``((P,), (P,))`` lower and upper ends of the test-MSE intervals, or ``None``.
        reach: the largest ``n`` the probe resolves without extrapolation, marked when given.
        measured: ``(sizes (S,), learnability (S,), test MSE (S,))`` measured points, or ``None``.
        title: the figure title.

    Returns:
        A figure with two axes, one line each (plus the ``train_size`` and ``reach`` markers and the measured
        points on each, when given), and one legend below both.

    Example:
        >>> n = [10, 100, 1000]
        >>> fig = learning_curve_figure(n, [0.2, 0.6, 0.9], [0.8, 0.4, 0.1], train_size=500)
        >>> [(ax.get_xscale(), len(ax.lines)) for ax in fig.axes]
        [('log', 2), ('log', 2)]
    """
    sizes = _vector(n, "n")
    learn = _vector(learnability, "learnability")
    mse = _vector(test_mse, "test_mse")
    if not (sizes.size == learn.size == mse.size):
        raise InputError(
            f"Expected one learnability and one test MSE per training-set size ({sizes.size}), but got "
            f"{learn.size} learnability and {mse.size} test MSE values."
        )
    keep = np.isfinite(sizes) & (sizes > 0)
    sizes, learn, mse = sizes[keep], learn[keep], mse[keep]
    bands = []
    for band, name in ((learnability_band, "learnability_band"), (test_mse_band, "test_mse_band")):
        if band is None:
            bands.append(None)
            continue
        lower, upper = (_vector(v, name) for v in band)
        if not (lower.size == upper.size == keep.size):
            raise InputError(f"Expected {name} to hold two arrays of {keep.size} values, but got other sizes.")
        bands.append((lower[keep], upper[keep]))
    mark = train_size is not None and math.isfinite(float(train_size)) and float(train_size) > 0
    fig, (left, right) = _new_figure(4.6, ncols=2, top=0.75, right=0.15, left=0.95, bottom=1.35, wspace=0.4)
    points = None if measured is None else tuple(_vector(v, "measured") for v in measured)
    what = "" if points is not None else "predicted "
    panels = (
        (left, learn, f"{what}learnability L(f)", "learnability", bands[0], 1),
        (right, _positive(mse), f"{what}test MSE", "test MSE", bands[1], 2),
    )
    for ax, values, ylabel, panel_title, band, column in panels:
        if sizes.size and _has_data(values):
            ax.plot(sizes, values, color=_PRED_INIT, marker="o", markersize=3, label="predicted")
            if band is not None:
                ax.fill_between(
                    sizes, band[0], band[1], color=_PRED_INIT, alpha=0.2, linewidth=0, label="interval (90 %)"
                )
            if points is not None and points[0].size:
                ax.plot(
                    points[0],
                    points[column],
                    linestyle="none",
                    marker="D",
                    markersize=6,
                    color=_ACTUAL,
                    label="measured (kernel regression on the probe)",
                )
            ax.set_xscale("log")
            if ax is right:
                ax.set_yscale("log")
            if mark:
                ax.axvline(
                    float(train_size), color="0.3", linestyle="--", linewidth=1, label=f"train size n = {train_size}"
                )
            if reach is not None and math.isfinite(float(reach)) and float(reach) > 0:
                ax.axvline(
                    float(reach),
                    color="0.5",
                    linestyle=":",
                    linewidth=1.2,
                    label=f"probe resolves n \u2264 {float(reach):.0f}; beyond it the prediction is extrapolated",
                )
        else:
            _no_data(ax, "no prediction")
        ax.set_xlabel("training-set size n (log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    if handles:  # one legend for both panels, below them: it never covers a curve
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize="small", frameon=False)
    _reference_levels(left, (0.0, 1.0))
    left.set_ylim(-0.02, 1.02)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------------- output
def figure_to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (at the figure's own dpi).

    Args:
        fig: a matplotlib figure.

    Returns:
        The PNG file's bytes.

    Example:
        >>> png = figure_to_png(spectrum_figure([1.0, 0.5, 0.1]))
        >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an RGB array, e.g. for ``SummaryWriter.add_image(..., dataformats="HWC")``.

    A figure drawn on another canvas (e.g. one from pyplot) is rendered with Agg and keeps its own canvas.

    Args:
        fig: a matplotlib figure.

    Returns:
        ``(H, W, 3)`` uint8 array; ``W`` is 800 for the figures of this module.

    Example:
        >>> image = figure_to_array(spectrum_figure([1.0, 0.5, 0.1]))
        >>> image.dtype, image.shape[1:]
        (dtype('uint8'), (800, 3))
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    previous = fig.canvas
    canvas = previous if isinstance(previous, FigureCanvasAgg) else FigureCanvasAgg(fig)
    try:
        canvas.draw()
        return np.array(canvas.buffer_rgba(), dtype=np.uint8)[..., :3].copy()
    finally:
        if canvas is not previous:
            fig.set_canvas(previous)
