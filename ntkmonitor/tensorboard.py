r"""Write a monitored run to TensorBoard: scalars, one overlaid chart per comparison, histograms, figures, text.

Works with any ``torch.utils.tensorboard.SummaryWriter`` (or a writer with the same ``add_*`` methods, such as
Lightning's ``TensorBoardLogger.experiment``). Nothing here imports TensorBoard or matplotlib until it is
used. Every write is guarded: a value or figure that cannot be written is skipped with an
:class:`~ntkmonitor.NTKMonitorWarning`, never an exception that would stop training.

Tags (see ``docs/callback.md`` for the meaning and formula of every key):

- **Scalars** (``SummaryWriter.add_scalar`` at ``global_step = snapshot.step``): every key of
  :meth:`Snapshot.scalars() <ntkmonitor.Snapshot.scalars>` — the keys of :data:`~ntkmonitor.record.SCALAR_KEYS`,
  the per-mode keys ``ntk/mode_NN/learnability_{predicted,actual}`` (:data:`~ntkmonitor.record.MODE_KEY`) and
  the per-parameter keys ``ntk/params/<name>/relative_change``. Undefined (``nan``) values are not written.
- **Custom scalars** (the "Custom Scalars" dashboard, category :data:`LAYOUT_CATEGORY` ``"ntkmonitor"``): one
  overlaid chart each for :data:`LEARNABILITY_CHART`, :data:`TEST_MSE_CHART`, :data:`DRIFT_CHART`; a "Margin"
  chart (the prediction drawn as a band between the ends of its interval) for each of :data:`MARGIN_CHARTS`;
  and, per reported mode ``i``, ``"mode i: predicted vs actual"`` (:data:`MODE_CHART`, the predicted value, the
  ends of its interval and the actual value). Registered once per writer.
- **Histogram** :data:`HISTOGRAM_TAG` ``"ntk/spectrum/log10_eigenvalues"``: ``log10`` of the positive operator
  eigenvalues of the current kernel, one histogram per measurement.
- **Images** under ``"ntk/figures/..."`` (:data:`FIGURE_TAGS`): the spectrum with the target's power per mode
  (reference kernel), per-mode predicted vs actual learnability (latest measurement), learnability and test
  MSE over time, drift over time, and the spectral-bias heatmap (:mod:`ntkmonitor.plots`).
- **Text** :data:`SUMMARY_TAG` ``"ntk/summary"``: a markdown summary per measurement (``torch``'s writer
  stores it as ``"ntk/summary/text_summary"``).

Example:
    >>> import tempfile
    >>> from torch.utils.tensorboard import SummaryWriter
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    >>> x = torch.randn(24, 3)
    >>> tracker = ntkmonitor.tracker.NTKTracker(model, (x, x[:, 0]), train_size=50, ridge=1e-3, top_k=4)
    >>> snapshot = tracker.reference()
    >>> with tempfile.TemporaryDirectory() as logdir:
    ...     writer = SummaryWriter(logdir)
    ...     log_snapshot(writer, snapshot, eigenvalues=tracker.spectrum0.eigenvalues)
    ...     writer.close()
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from .errors import InputError, NTKMonitorWarning
from .record import (
    DESCRIPTIONS,
    DRIFT_CHANGE_KEYS,
    DRIFT_DISTANCE_KEYS,
    INTERVAL_KEYS,
    OVERLAY_LEARNABILITY,
    OVERLAY_MODE,
    OVERLAY_TEST_MSE,
    OVERVIEW_VERDICT,
    Reference,
    Snapshot,
    overlays,
)
from .summary import text_summary

__all__ = [
    "custom_scalars_layout",
    "register_layout",
    "log_scalars",
    "log_spectrum_histogram",
    "log_figures",
    "log_text_summary",
    "text_summary",
    "log_snapshot",
    "TensorBoardSink",
    "LAYOUT_CATEGORY",
    "LEARNABILITY_CHART",
    "TEST_MSE_CHART",
    "DRIFT_CHART",
    "CHANGE_CHART",
    "MODE_CHART",
    "MARGIN_CHARTS",
    "HISTOGRAM_TAG",
    "SUMMARY_TAG",
    "SPECTRUM_FIGURE_TAG",
    "MODE_FIGURE_TAG",
    "LEARNABILITY_FIGURE_TAG",
    "DRIFT_FIGURE_TAG",
    "HEATMAP_FIGURE_TAG",
    "FIGURE_TAGS",
    "DEFAULT_FIGURES_SECONDS",
    "add_scalar",
]

DEFAULT_FIGURES_SECONDS = 60.0
"""After the first measurements, :class:`TensorBoardSink` draws figures again once this much time has passed."""

LAYOUT_CATEGORY = "ntkmonitor"
"""Category of the custom-scalars charts."""

LEARNABILITY_CHART = "learnability: predicted vs actual"
"""Chart of the overlay tag ``ntk/0_overview/learnability``, one line per run (measured, predicted from K0, from Kt)."""

TEST_MSE_CHART = "log10 test MSE: predicted vs actual"
"""Chart of the overlay tag ``ntk/0_overview/log10_test_mse``, one line per run."""

DRIFT_CHART = "drift: kernel distance and linearization error"
"""Chart of ``ntk/drift/kernel_distance`` and ``ntk/drift/linearization_error`` (what the verdict reads)."""

CHANGE_CHART = "drift: relative kernel and parameter change"
"""Chart of ``ntk/drift/relative_kernel_change`` and ``ntk/drift/parameter_change`` (another scale)."""

MODE_CHART = "mode {index}: predicted vs actual"
"""Chart title per reported mode ``index`` (0-based), overlaying the :data:`~ntkmonitor.record.MODE_KEY` keys
(predicted, actual, and the ends of the predicted interval)."""

_QUANTITY = {"learnability": "learnability", "test_mse": "test MSE"}
_SOURCE = {"init": "K0", "current": "Kt"}

MARGIN_CHARTS: dict[str, tuple[str, ...]] = {
    f"{_QUANTITY[quantity]} predicted from {_SOURCE[source]}, with its interval": keys
    for (quantity, source), keys in INTERVAL_KEYS.items()
}
""""Margin" charts: title -> ``(value, lower, upper)`` tags; TensorBoard draws the band between the ends."""

HISTOGRAM_TAG = "ntk/spectrum/log10_eigenvalues"
"""Histogram of ``log10(lambda_i)`` over the positive operator eigenvalues of the measured kernel."""

SUMMARY_TAG = "ntk/summary"
"""Markdown text summary of a measurement (torch's writer appends ``/text_summary`` to the stored tag)."""

SPECTRUM_FIGURE_TAG = "ntk/figures/spectrum"
"""Image: reference eigenvalues and the target's power per mode (:func:`~ntkmonitor.plots.spectrum_figure`)."""

MODE_FIGURE_TAG = "ntk/figures/mode_learnability"
"""Image: per-mode predicted vs actual learnability, latest measurement
(:func:`~ntkmonitor.plots.mode_learnability_figure`)."""

LEARNABILITY_FIGURE_TAG = "ntk/figures/learnability"
"""Image: learnability and test MSE, actual vs predicted, over steps (:func:`~ntkmonitor.plots.learnability_figure`)."""

DRIFT_FIGURE_TAG = "ntk/figures/drift"
"""Image: drift metrics over steps with the verdict thresholds (:func:`~ntkmonitor.plots.drift_figure`)."""

HEATMAP_FIGURE_TAG = "ntk/0_overview/spectral_bias"
"""Image: fraction of each eigenmode learned vs step (:func:`~ntkmonitor.plots.mode_heatmap_figure`), among the
overview cards that TensorBoard's Time Series dashboard shows first."""

FIGURE_TAGS = (SPECTRUM_FIGURE_TAG, MODE_FIGURE_TAG, LEARNABILITY_FIGURE_TAG, DRIFT_FIGURE_TAG, HEATMAP_FIGURE_TAG)
"""Every image tag :func:`log_figures` writes, in order."""

_REGISTERED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_REGISTERED_IDS: set[int] = set()  # writers that accept neither weak references nor attributes
_ATTRIBUTE = "_ntkmonitor_layout_registered"


@contextmanager
def _guard(what: str) -> Iterator[None]:
    """Turn any failure inside into an :class:`NTKMonitorWarning` (logging must never stop training)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - a sink must survive anything the writer or matplotlib raises
        warnings.warn(
            f"ntkmonitor could not write {what} to TensorBoard and skipped it: {type(err).__name__}: {err}",
            NTKMonitorWarning,
            stacklevel=3,
        )


def _check_snapshot(snapshot: Any) -> Snapshot:
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"Expected a Snapshot (from NTKTracker.measure), but got {type(snapshot).__name__}.")
    return snapshot


def _regex(tag: str) -> str:
    """An anchored regex that matches exactly ``tag`` (custom-scalars chart tags are regexes)."""
    return f"^{re.escape(tag)}$"


# ---------------------------------------------------------------------------------------------------- layout
def custom_scalars_layout(mode_indices: Sequence[int] = ()) -> dict[str, dict[str, list[Any]]]:
    r"""The custom-scalars layout that overlays each prediction with its measurement in one chart.

    One category :data:`LAYOUT_CATEGORY` with "Multiline" charts: :data:`LEARNABILITY_CHART` and
    :data:`TEST_MSE_CHART` (the overlay tags, which the runs of :data:`~ntkmonitor.record.OVERLAY_RUNS` write, so
    each chart has a line per run in its own colour), :data:`DRIFT_CHART` and :data:`CHANGE_CHART` (metrics of one
    scale each); the "Margin" charts of :data:`MARGIN_CHARTS` (a prediction and the band of its interval); then
    ``"mode i: predicted vs actual"`` per mode. Multiline tags are regexes (TensorBoard's format), anchored
    ``^...$`` so each matches exactly one key; Margin tags are exact.

    Args:
        mode_indices: the reported modes (``snapshot.mode_indices``, 0-based).

    Returns:
        ``{category: {chart title: ["Multiline", [tag regex, ...]] or ["Margin", [value, lower, upper]]}}`` for
        ``SummaryWriter.add_custom_scalars``.

    Example:
        >>> layout = custom_scalars_layout([0, 1])
        >>> list(layout["ntkmonitor"])[-1]
        'mode 1: predicted vs actual'
        >>> layout["ntkmonitor"]["mode 1: predicted vs actual"][1]
        ['^ntk/overlay/mode_01_learnability$']
        >>> layout["ntkmonitor"]["learnability predicted from K0, with its interval"][0]
        'Margin'
    """
    charts: dict[str, list[Any]] = {
        LEARNABILITY_CHART: ["Multiline", [_regex(OVERLAY_LEARNABILITY)]],
        TEST_MSE_CHART: ["Multiline", [_regex(OVERLAY_TEST_MSE)]],
        DRIFT_CHART: ["Multiline", [_regex(k) for k in DRIFT_DISTANCE_KEYS]],
        CHANGE_CHART: ["Multiline", [_regex(k) for k in DRIFT_CHANGE_KEYS]],
        **{title: ["Margin", list(tags)] for title, tags in MARGIN_CHARTS.items()},
    }
    for index in mode_indices:
        charts[MODE_CHART.format(index=int(index))] = ["Multiline", [_regex(OVERLAY_MODE.format(index=int(index)))]]
    return {LAYOUT_CATEGORY: charts}


def _weakrefable(writer: Any) -> bool:
    try:
        weakref.ref(writer)
    except TypeError:
        return False
    return True


def _is_registered(writer: Any) -> bool:
    if _weakrefable(writer):
        return writer in _REGISTERED
    return bool(getattr(writer, _ATTRIBUTE, False)) or id(writer) in _REGISTERED_IDS


def _mark_registered(writer: Any) -> None:
    if _weakrefable(writer):
        _REGISTERED[writer] = True
        return
    try:
        setattr(writer, _ATTRIBUTE, True)
    except (AttributeError, TypeError):
        _REGISTERED_IDS.add(id(writer))


def register_layout(writer: Any, mode_indices: Sequence[int] = ()) -> bool:
    r"""Register :func:`custom_scalars_layout` with ``writer``, once: later calls do nothing.

    TensorBoard reads one layout per run, so the first call's ``mode_indices`` define the per-mode charts (the
    tracker reports the same modes at every measurement).

    Args:
        writer: a ``SummaryWriter`` (anything with ``add_custom_scalars``).
        mode_indices: the reported modes (``snapshot.mode_indices``).

    Returns:
        ``True`` if this call registered the layout, ``False`` if it was registered before (or failed, with a
        warning).

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as logdir:
        ...     writer = SummaryWriter(logdir)
        ...     print(register_layout(writer, [0, 1]), register_layout(writer, [0, 1]))
        ...     writer.close()
        True False
    """
    if _is_registered(writer):
        return False
    done = False
    with _guard("the custom-scalars layout"):
        writer.add_custom_scalars(custom_scalars_layout(mode_indices))
        _mark_registered(writer)
        done = True
    return done


# ---------------------------------------------------------------------------------------------------- writes
def add_scalar(writer: Any, tag: str, value: float, step: int) -> None:
    """``writer.add_scalar``, with the description of :data:`~ntkmonitor.record.DESCRIPTIONS` for ``tag`` attached.

    TensorBoard shows a tag's description on its chart; it reads it from the tag's metadata, which
    ``SummaryWriter.add_scalar`` cannot set, so described tags are written as a scalar summary with metadata.

    Args:
        writer: a ``SummaryWriter`` (any object with ``add_scalar`` for undescribed tags).
        tag: the key.
        value: the number.
        step: the global step.
    """
    description = DESCRIPTIONS.get(tag)
    file_writer = getattr(writer, "_get_file_writer", None)
    if description is None or not callable(file_writer):
        writer.add_scalar(tag, value, global_step=step)
        return
    from torch.utils.tensorboard.summary import scalar

    summary = scalar(tag, value)
    summary.value[0].metadata.summary_description = description
    summary.value[0].metadata.plugin_data.plugin_name = "scalars"
    file_writer().add_summary(summary, step)


def log_scalars(writer: Any, snapshot: Snapshot) -> int:
    r"""Write every key of ``snapshot.scalars()`` at ``global_step=snapshot.step``.

    ``nan`` values (undefined at this measurement) are not in ``scalars()`` and are not written.

    Args:
        writer: a ``SummaryWriter``.
        snapshot: the measurement.

    Returns:
        The number of scalars written.

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as logdir:
        ...     writer = SummaryWriter(logdir)
        ...     print(log_scalars(writer, Snapshot(step=5, kernel_distance=0.01, learnability_actual=0.3)))
        ...     writer.close()
        2
    """
    snap = _check_snapshot(snapshot)
    written = 0
    with _guard(f"the scalars of step {snap.step}"):
        for key, value in snap.scalars().items():
            add_scalar(writer, key, value, snap.step)
            written += 1
    return written


def log_spectrum_histogram(writer: Any, eigenvalues: Any, step: int) -> bool:
    r"""Write a histogram of ``log10`` of the positive operator eigenvalues under :data:`HISTOGRAM_TAG`.

    The eigenvalues span many decades; their logarithms are what the histogram can show. Zero (clipped)
    eigenvalues are left out.

    Args:
        writer: a ``SummaryWriter``.
        eigenvalues: ``(R,)`` operator eigenvalues (e.g. ``tracker.last_spectrum.eigenvalues``).
        step: the global step.

    Returns:
        Whether a histogram was written (``False`` when no eigenvalue is positive, or on failure with a warning).

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as logdir:
        ...     writer = SummaryWriter(logdir)
        ...     print(log_spectrum_histogram(writer, torch.tensor([1.0, 0.1, 0.01, 0.0]), step=0))
        ...     writer.close()
        True
    """
    done = False
    with _guard(f"the spectrum histogram of step {step}"):
        if hasattr(eigenvalues, "detach"):
            eigenvalues = eigenvalues.detach().cpu().double().numpy()
        lam = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
        positive = lam[np.isfinite(lam) & (lam > 0)]
        if positive.size:
            writer.add_histogram(HISTOGRAM_TAG, np.log10(positive), global_step=int(step))
            done = True
    return done


def log_figures(
    writer: Any,
    history: Sequence[Snapshot],
    *,
    eigenvalues0: Any = None,
    target_power0: Any = None,
    step: int,
    thresholds: Any = None,
    kappa: float | None = None,
) -> list[str]:
    r"""Render the figures of :mod:`ntkmonitor.plots` and write them as images under :data:`FIGURE_TAGS`.

    - :data:`SPECTRUM_FIGURE_TAG`: ``eigenvalues0`` with ``target_power0`` (skipped when ``eigenvalues0`` is
      ``None``), with ``kappa`` marked;
    - :data:`MODE_FIGURE_TAG`: per-mode predicted vs actual of ``history[-1]``;
    - :data:`LEARNABILITY_FIGURE_TAG`, :data:`DRIFT_FIGURE_TAG` (with ``thresholds``),
      :data:`HEATMAP_FIGURE_TAG`: over the whole ``history``.

    A figure that fails to render or write is skipped with an :class:`~ntkmonitor.NTKMonitorWarning`.

    Args:
        writer: a ``SummaryWriter``.
        history: the snapshots so far (``tracker.history``); the per-snapshot figures are skipped when empty.
        eigenvalues0: ``(R,)`` operator eigenvalues of the reference kernel (``tracker.spectrum0.eigenvalues``).
        target_power0: ``(R,)`` target power per reference mode, ``v_i^2`` summed over outputs
            (``tracker.coefficients0.pow(2).sum(1)``).
        step: the global step of the images.
        thresholds: :class:`~ntkmonitor.DriftThresholds` to draw in the drift figure, or ``None``.
        kappa: ``kappa`` to mark in the spectrum figure (e.g. ``history[-1].kappa_init``), or ``None``.

    Returns:
        The tags written.

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> history = [Snapshot(step=s, kernel_distance=s / 100, mode_indices=[0], mode_learnability_predicted=[0.5],
        ...                     mode_learnability_actual=[s / 20]) for s in (0, 10)]
        >>> with tempfile.TemporaryDirectory() as logdir:
        ...     writer = SummaryWriter(logdir)
        ...     tags = log_figures(writer, history, eigenvalues0=[1.0, 0.1], target_power0=[0.5, 0.2], step=10)
        ...     writer.close()
        >>> tags == list(FIGURE_TAGS)
        True
    """
    from . import plots

    snaps = list(history)
    builders: list[tuple[str, Any]] = []
    if eigenvalues0 is not None:
        builders.append(
            (SPECTRUM_FIGURE_TAG, lambda: plots.spectrum_figure(eigenvalues0, target_power0, kappa=kappa)),
        )
    if snaps:
        builders += [
            (MODE_FIGURE_TAG, lambda: plots.mode_learnability_figure(snaps[-1])),
            (LEARNABILITY_FIGURE_TAG, lambda: plots.learnability_figure(snaps)),
            (DRIFT_FIGURE_TAG, lambda: plots.drift_figure(snaps, thresholds)),
            (HEATMAP_FIGURE_TAG, lambda: plots.mode_heatmap_figure(snaps)),
        ]
    written = []
    for tag, build in builders:
        with _guard(f"the figure {tag!r} of step {step}"):
            image = plots.figure_to_array(build())
            writer.add_image(tag, image, global_step=int(step), dataformats="HWC")
            written.append(tag)
    return written


def log_text_summary(writer: Any, snapshot: Snapshot) -> bool:
    r"""Write the markdown :func:`text_summary` of a measurement under :data:`SUMMARY_TAG`.

    Args:
        writer: a ``SummaryWriter``.
        snapshot: the measurement.

    Returns:
        Whether the text was written (``False`` on failure, with a warning).

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as logdir:
        ...     writer = SummaryWriter(logdir)
        ...     print(log_text_summary(writer, Snapshot(step=3, verdict="drifting")))
        ...     writer.close()
        True
    """
    snap = _check_snapshot(snapshot)
    done = False
    with _guard(f"the text summary of step {snap.step}"):
        writer.add_text(SUMMARY_TAG, text_summary(snap), global_step=snap.step)
        done = True
    return done


def log_snapshot(writer: Any, snapshot: Snapshot, *, eigenvalues: Any = None) -> None:
    r"""Write one measurement: :func:`register_layout` (once), :func:`log_scalars`, the histogram, the text.

    Args:
        writer: a ``SummaryWriter``.
        snapshot: the measurement.
        eigenvalues: ``(R,)`` operator eigenvalues of the measured kernel for :func:`log_spectrum_histogram`
            (``tracker.last_spectrum.eigenvalues``); ``None`` for no histogram.

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as logdir:
        ...     writer = SummaryWriter(logdir)
        ...     log_snapshot(writer, Snapshot(step=0, kernel_distance=0.0), eigenvalues=[2.0, 1.0])
        ...     writer.close()
    """
    snap = _check_snapshot(snapshot)
    register_layout(writer, snap.mode_indices)
    log_scalars(writer, snap)
    if eigenvalues is not None:
        log_spectrum_histogram(writer, eigenvalues, snap.step)
    log_text_summary(writer, snap)


# ---------------------------------------------------------------------------------------------------- sink
class TensorBoardSink:
    r"""Writes measurements (:class:`~ntkmonitor.Snapshot` with the run's :class:`~ntkmonitor.Reference`) to a
    ``SummaryWriter``; a :class:`~ntkmonitor.sinks.Sink`.

    Each :meth:`log` writes a snapshot (:func:`log_snapshot`: layout once, scalars, the histogram of the current
    spectrum, the text summary), its overlays (one tag per comparison, written by the runs of
    :data:`~ntkmonitor.record.OVERLAY_RUNS`, so TensorBoard draws measured and predicted in colours) and, at the
    first measurement after the reference, then every ``figures_seconds`` (and every ``figures_every``
    measurements when set) or when ``final=True``, the figures (:func:`log_figures`). Logging the
    same snapshot twice writes it once (``tracker.publish(sink, final=True)`` after the last measurement only adds
    the figures). Failures warn with :class:`~ntkmonitor.NTKMonitorWarning` and are skipped.

    Args:
        writer: a ``SummaryWriter`` (``torch.utils.tensorboard``, or Lightning's ``logger.experiment``).
        figures_every: also draw figures every this many measurements; ``0`` or ``None``: not by count.
        figures_seconds: after the first figures, draw them again once this many seconds have passed (``0``: not by
            time).
        overlays: also write the overlay runs (:data:`~ntkmonitor.record.OVERLAY_RUNS`) in sub-directories of the
            writer's log directory, resolved when the sink is made.
        early_figures: draw figures at the first measurement after the reference (``False``: only by count, time
            or ``final=True``).

    Attributes:
        writer: the writer.
        figures_every: the figure cadence.
        measurements: how many distinct snapshots were written.
        history: those snapshots, in order (what the figures over time draw).
        figure_seconds: wall time spent rendering figures.

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        >>> x = torch.randn(24, 3)
        >>> tracker = ntkmonitor.tracker.NTKTracker(model, (x, x[:, 0]), train_size=50, ridge=1e-3, top_k=4)
        >>> with tempfile.TemporaryDirectory() as logdir:
        ...     writer = SummaryWriter(logdir)
        ...     sink = TensorBoardSink(writer, figures_every=0)
        ...     _ = tracker.reference()
        ...     tracker.publish(sink)
        ...     _ = tracker.measure(step=1)
        ...     tracker.publish(sink)
        ...     tracker.publish(sink, final=True)  # figures
        ...     writer.close()
        >>> sink.measurements
        2
    """

    def __init__(
        self,
        writer: Any,
        figures_every: int | None = None,
        *,
        figures_seconds: float = DEFAULT_FIGURES_SECONDS,
        overlays: bool = True,
        early_figures: bool = True,
    ) -> None:
        if figures_every is not None and (
            isinstance(figures_every, bool) or not isinstance(figures_every, int) or figures_every < 0
        ):
            raise InputError(f"Expected figures_every to be None or an int >= 0, but got {figures_every!r}.")
        if isinstance(figures_seconds, bool) or not isinstance(figures_seconds, (int, float)) or figures_seconds < 0:
            raise InputError(f"Expected figures_seconds to be a number >= 0, but got {figures_seconds!r}.")
        self.writer = writer
        self.figures_every = figures_every or 0
        self.figures_seconds = float(figures_seconds)
        self.overlays = overlays
        self.measurements = 0
        self.history: list[Snapshot] = []
        self._last: Snapshot | None = None
        self._last_figures: Snapshot | None = None
        self._figures_at: float | None = None
        self._runs: dict[str, Any] = {}
        self.figure_seconds = 0.0
        self.early_figures = early_figures
        logdir = None
        with _guard("the log directory of the overlay runs"):
            get = getattr(writer, "get_logdir", None)
            logdir = get() if callable(get) else getattr(writer, "log_dir", None)
        # resolved now: a relative directory must not move with a later os.chdir
        self._logdir = os.path.abspath(os.fspath(logdir)) if isinstance(logdir, (str, os.PathLike)) else None

    def _figures_due(self) -> bool:
        """At the first measurement after the reference, every ``figures_every`` measurements when set, and once
        ``figures_seconds`` have passed since the last figures."""
        if self.measurements == 2 and self.early_figures:
            return True
        if self.figures_every and self.measurements % self.figures_every == 0:
            return True
        waited = self._figures_at is not None and time.monotonic() - self._figures_at >= self.figures_seconds
        return bool(self.figures_seconds) and waited

    def _run_writer(self, run: str) -> Any:
        """The writer of the overlay run ``run`` (a sub-directory of the main writer's log directory), or ``None``
        when the main writer has no directory (a custom writer: the overlays are left out)."""
        if run not in self._runs:
            writer = None
            if self._logdir is not None:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(os.path.join(self._logdir, run))
            self._runs[run] = writer
        return self._runs[run]

    def _log_overlays(self, snapshot: Snapshot) -> None:
        with _guard(f"the overlays of step {snapshot.step}"):
            if math.isfinite(snapshot.verdict_code):
                add_scalar(self.writer, OVERVIEW_VERDICT, snapshot.verdict_code, snapshot.step)
            for run, values in overlays(snapshot).items():
                writer = self._run_writer(run)
                if writer is None:
                    return
                for tag, value in values.items():
                    add_scalar(writer, tag, value, snapshot.step)

    @classmethod
    def from_logdir(cls, log_dir: str, figures_every: int | None = None, **writer_kwargs: Any) -> TensorBoardSink:
        r"""A sink with a new ``torch.utils.tensorboard.SummaryWriter(log_dir, **writer_kwargs)``.

        Args:
            log_dir: the run's directory.
            figures_every: figure cadence (see :class:`TensorBoardSink`).
            **writer_kwargs: passed to ``SummaryWriter``.

        Returns:
            The sink; call :meth:`close` at the end.

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as logdir:
            ...     sink = TensorBoardSink.from_logdir(logdir)
            ...     sink.close()
        """
        from torch.utils.tensorboard import SummaryWriter

        return cls(SummaryWriter(log_dir, **writer_kwargs), figures_every)

    def log(self, snapshot: Snapshot, reference: Reference, *, eigenvalues: Any = None, final: bool = False) -> None:
        r"""Write a measurement (once per snapshot), and the figures when due or ``final``.

        A :class:`~ntkmonitor.sinks.Sink`: :meth:`ntkmonitor.NTKTracker.publish` calls it with the tracker's
        latest snapshot. The figures over time draw every snapshot this sink has received.

        Args:
            snapshot: the measurement.
            reference: the run's :class:`~ntkmonitor.Reference` (reference spectrum, target power, thresholds).
            eigenvalues: ``(R,)`` operator eigenvalues of the measured kernel for the histogram, or ``None``.
            final: force the figures (e.g. at the end of training) and flush the writer.

        Example:
            >>> try:
            ...     TensorBoardSink(writer=None).log(Snapshot(step=0), reference=None)
            ... except InputError as err:
            ...     print(str(err)[:46])
            Expected reference to be a Reference (tracker.
        """
        if not isinstance(snapshot, Snapshot):
            raise InputError(
                f"Expected snapshot to be a Snapshot, but got {type(snapshot).__name__}. From a tracker, call "
                "tracker.publish(sink)."
            )
        if not isinstance(reference, Reference):
            raise InputError(
                f"Expected reference to be a Reference (tracker.reference_record), but got {type(reference).__name__}."
            )
        new = snapshot is not self._last
        if new:
            log_snapshot(self.writer, snapshot, eigenvalues=eigenvalues)
            if self.overlays:
                self._log_overlays(snapshot)
            self._last = snapshot
            self.history.append(snapshot)
            self.measurements += 1
        due = new and self._figures_due()
        if (due or final) and snapshot is not self._last_figures:
            started = time.perf_counter()
            log_figures(
                self.writer,
                self.history,
                eigenvalues0=reference.eigenvalues,
                target_power0=reference.target_power,
                step=snapshot.step,
                thresholds=reference.thresholds,
                kappa=snapshot.kappa_init,
            )
            self._last_figures = snapshot
            self._figures_at = time.monotonic()
            self.figure_seconds += time.perf_counter() - started
        if final:
            self.flush()
            self._close_runs()  # the overlay writers are ours (the main writer is the caller's): no threads left

    def flush(self) -> None:
        """Flush the writer (guarded).

        Example:
            >>> TensorBoardSink(writer=None).flush()  # nothing to flush
        """
        for writer in [self.writer, *self._runs.values()]:
            if writer is not None:
                with _guard("a flush"):
                    writer.flush()

    def close(self) -> None:
        """Close the writer (guarded).

        Example:
            >>> TensorBoardSink(writer=None).close()
        """
        if self.writer is not None:
            with _guard("a close"):
                self.writer.close()
        self._close_runs()

    def _close_runs(self) -> None:
        """Close the overlay runs' writers (reopened, appending a new event file, if more is logged)."""
        for writer in self._runs.values():
            if writer is not None:
                with _guard("a close"):
                    writer.close()
        self._runs.clear()
