r"""The data record that flows from the engine to the sinks: :class:`Snapshot`, :class:`Reference`, the metric
keys, the :class:`Verdict` and its thresholds, strict-JSON cleaning and number formatting.

Nothing here imports the kernel engine: the sinks (:mod:`ntkmonitor.tensorboard`), the figures
(:mod:`ntkmonitor.plots`) and the report (:mod:`ntkmonitor.report`) build on this module alone. The tracker
produces a :class:`Reference` once (at initialization) and a :class:`Snapshot` per measurement; a sink takes
``(snapshot, reference)``.

Example:
    >>> snap = Snapshot(step=3, kernel_distance=0.01, linearization_error=0.02, verdict="lazy")
    >>> snap.scalars()["ntk/drift/kernel_distance"], snap.verdict_code
    (0.01, 0.0)
    >>> to_json({"a": float("nan"), "b": [1.0, float("inf")]})
    {'a': None, 'b': [1.0, 'inf']}
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from . import _checks
from .errors import InputError, NTKMonitorWarning

__all__ = [
    "Snapshot",
    "Reference",
    "Verdict",
    "DriftThresholds",
    "SCALAR_KEYS",
    "MODE_KEY",
    "MODE_KINDS",
    "LEARNABILITY_KEYS",
    "TEST_MSE_KEYS",
    "DRIFT_KEYS",
    "DRIFT_DISTANCE_KEYS",
    "DRIFT_CHANGE_KEYS",
    "INTERVAL_KEYS",
    "chart_keys",
    "OVERLAY_RUNS",
    "OVERLAY_LEARNABILITY",
    "OVERLAY_TEST_MSE",
    "OVERLAY_MODE",
    "OVERVIEW_VERDICT",
    "DESCRIPTIONS",
    "overlays",
    "to_json",
    "from_json",
    "format_number",
    "format_count",
    "as_float",
]


class Verdict(str, Enum):
    """The three regimes :func:`verdict` distinguishes.

    A ``str`` enum: members compare equal to their values and serialize to JSON as plain strings.

    - ``LAZY`` (``"lazy"``): the kernel and the linearization both hold; NTK theory applies.
    - ``DRIFTING`` (``"drifting"``): measurable drift; predictions from the initial kernel degrade.
    - ``FEATURE_LEARNING`` (``"feature-learning"``): the kernel changed substantially; the network is
      learning features and the initial kernel no longer describes it.

    Example:
        >>> Verdict("lazy") == "lazy", str(Verdict.FEATURE_LEARNING.value)
        (True, 'feature-learning')
    """

    LAZY = "lazy"
    DRIFTING = "drifting"
    FEATURE_LEARNING = "feature-learning"

    def __str__(self) -> str:
        return self.value

    @property
    def code(self) -> float:
        """The verdict as a number for charts: lazy 0, drifting 1, feature-learning 2."""
        return float(list(Verdict).index(self))


@dataclass(frozen=True)
class DriftThresholds:
    """Thresholds of :func:`verdict` on the kernel distance and the linearization error.

    The defaults are rules of thumb, not theorems: a kernel distance below 0.05 (a cosine similarity above
    0.95 with the initial kernel) and a function within 10 % of its linearization are what the kernel
    theory describes well; beyond a kernel distance of 0.25 or a linearization error of 0.5 the predictions
    of the initial kernel are qualitatively off (Fort et al. 2020, https://arxiv.org/abs/2010.15110, measure
    distances of 0.3-0.8 for standard nets in their feature-learning phase).

    Attributes:
        lazy_distance: lazy requires ``kernel_distance < lazy_distance``.
        lazy_linearization: lazy requires ``linearization_error < lazy_linearization`` (when measured).
        feature_distance: ``kernel_distance > feature_distance`` means feature learning.
        feature_linearization: ``linearization_error > feature_linearization`` means feature learning.

    Example:
        >>> strict = DriftThresholds(lazy_distance=0.01, lazy_linearization=0.05)
        >>> str(verdict(0.03, 0.02, strict))
        'drifting'
    """

    lazy_distance: float = 0.05
    lazy_linearization: float = 0.1
    feature_distance: float = 0.25
    feature_linearization: float = 0.5

    def __post_init__(self) -> None:
        for name in ("lazy_distance", "lazy_linearization", "feature_distance", "feature_linearization"):
            _checks.real_number(getattr(self, name), name)
        if self.lazy_distance > self.feature_distance or self.lazy_linearization > self.feature_linearization:
            raise InputError(
                "Expected lazy thresholds <= feature-learning thresholds, but got "
                f"lazy_distance={self.lazy_distance}, feature_distance={self.feature_distance}, "
                f"lazy_linearization={self.lazy_linearization}, feature_linearization={self.feature_linearization}."
            )


SCALAR_KEYS: dict[str, str] = {
    "ntk/drift/kernel_distance": "kernel_distance",
    "ntk/drift/kernel_velocity": "kernel_velocity",
    "ntk/drift/relative_kernel_change": "relative_kernel_change",
    "ntk/drift/parameter_change": "parameter_change",
    "ntk/drift/linearization_error": "linearization_error",
    "ntk/drift/kernel_alignment": "kernel_alignment",
    "ntk/drift/eigenspace_overlap": "eigenspace_overlap",
    "ntk/drift/verdict": "verdict_code",
    "ntk/learnability/actual": "learnability_actual",
    "ntk/learnability/function_alignment": "function_alignment",
    "ntk/learnability/predicted_init": "learnability_predicted_init",
    "ntk/learnability/predicted_current": "learnability_predicted_current",
    "ntk/learnability/predicted_init_lower": "learnability_predicted_init_lower",
    "ntk/learnability/predicted_init_upper": "learnability_predicted_init_upper",
    "ntk/learnability/predicted_current_lower": "learnability_predicted_current_lower",
    "ntk/learnability/predicted_current_upper": "learnability_predicted_current_upper",
    "ntk/test_mse/actual": "test_mse_actual",
    "ntk/test_mse/predicted_init": "test_mse_predicted_init",
    "ntk/test_mse/predicted_current": "test_mse_predicted_current",
    "ntk/test_mse/predicted_init_lower": "test_mse_predicted_init_lower",
    "ntk/test_mse/predicted_init_upper": "test_mse_predicted_init_upper",
    "ntk/test_mse/predicted_current_lower": "test_mse_predicted_current_lower",
    "ntk/test_mse/predicted_current_upper": "test_mse_predicted_current_upper",
    "ntk/theory/ridge": "ridge",
    "ntk/theory/complexity_init": "complexity_init",
    "ntk/theory/probe_reach": "prediction_reach",
    "ntk/self_check/learnability_gap": "self_check_learnability_gap",
    "ntk/self_check/mse_ratio": "self_check_mse_ratio",
    "ntk/theory/kappa_init": "kappa_init",
    "ntk/theory/kappa_current": "kappa_current",
    "ntk/spectrum/top_eigenvalue": "top_eigenvalue",
    "ntk/spectrum/effective_rank": "effective_rank",
    "ntk/spectrum/participation_ratio": "participation_ratio",
    "ntk/spectrum/kernel_trace": "kernel_trace",
    "ntk/time/measure_seconds": "seconds",
}
"""Scalar metric keys -> :class:`Snapshot` fields. Every key is documented in ``docs/callback.md``.

Per-mode keys follow :data:`MODE_KEY`, per-parameter keys ``ntk/params/<name>/relative_change``."""

MODE_KEY = "ntk/mode_{index:02d}/learnability_{kind}"
"""Per-mode key; ``index`` is the 0-based mode of the reference kernel, ``kind`` ``predicted``, ``actual``,
``relative`` (scale-free, see :attr:`Snapshot.mode_learnability_relative`), ``predicted_lower`` or
``predicted_upper``."""


def chart_keys(prefix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Keys ``prefix + name`` of :data:`SCALAR_KEYS`, for a chart that overlays them (each must exist).

    Example:
        >>> chart_keys("ntk/test_mse/", ("actual",))
        ('ntk/test_mse/actual',)
    """
    keys = tuple(prefix + name for name in names)
    missing = [key for key in keys if key not in SCALAR_KEYS]
    if missing:
        raise KeyError(f"not metric keys: {missing}")
    return keys


LEARNABILITY_KEYS = chart_keys("ntk/learnability/", ("actual", "predicted_init", "predicted_current"))
"""Learnability, measured and predicted (from ``K0`` and from ``Kt``)."""

TEST_MSE_KEYS = chart_keys("ntk/test_mse/", ("actual", "predicted_init", "predicted_current"))
"""Test MSE, measured and predicted."""

DRIFT_DISTANCE_KEYS = chart_keys("ntk/drift/", ("kernel_distance", "linearization_error"))
"""The drift metrics that the verdict thresholds apply to (both between 0 and about 1)."""

DRIFT_CHANGE_KEYS = chart_keys("ntk/drift/", ("relative_kernel_change", "parameter_change"))
"""The relative changes of the kernel and of the parameters (another scale: charted apart)."""

DRIFT_KEYS = DRIFT_DISTANCE_KEYS + DRIFT_CHANGE_KEYS
"""Every drift metric the figures draw."""

INTERVAL_KEYS = {
    (quantity, source): chart_keys(
        f"ntk/{quantity}/", (f"predicted_{source}", f"predicted_{source}_lower", f"predicted_{source}_upper")
    )
    for quantity in ("learnability", "test_mse")
    for source in ("init", "current")
}
"""``(quantity, source) -> (value, lower, upper)`` keys of each prediction with its interval."""

OVERLAY_RUNS = {"actual": "ntk_actual", "init": "ntk_predicted_K0", "current": "ntk_predicted_Kt"}
"""TensorBoard runs (sub-directories of the log directory) that write the same overlay tags: measured values, and
the predictions from the reference kernel ``K0`` and from the current kernel ``Kt``. TensorBoard colours by run,
so every dashboard draws the three as differently coloured lines with a legend."""

OVERLAY_LEARNABILITY = "ntk/0_overview/learnability"
"""Overlay tag: learnability on the probe (each run writes its own: measured, predicted from K0 or from Kt)."""

OVERLAY_TEST_MSE = "ntk/0_overview/log10_test_mse"
"""Overlay tag: ``log10`` of the test MSE on the probe (a log scale, where a 30x gap is visible)."""

OVERVIEW_VERDICT = "ntk/0_overview/verdict"
"""The verdict code (as ``ntk/drift/verdict``) beside the overlays. The ``0_overview`` tags sort first on TensorBoard's
Time Series dashboard, which orders cards by name: learnability, test MSE, the spectral-bias heatmap, the verdict."""

OVERLAY_MODE = "ntk/overlay/mode_{index:02d}_learnability"
"""Overlay tag per reported mode (0-based, reference eigenbasis): measured vs predicted from K0."""

DESCRIPTIONS = {
    OVERLAY_LEARNABILITY: (
        "Learnability of the target on the held-out probe: measured (run ntk_actual) against the eigenlearning "
        "prediction from the initial kernel K0 (ntk_predicted_K0) and from the current kernel Kt "
        "(ntk_predicted_Kt). In the lazy regime the three agree."
    ),
    OVERLAY_TEST_MSE: (
        "log10 of the test MSE on the probe: measured (ntk_actual) against predicted from K0 and from Kt. A gap of "
        "1 is a factor of 10."
    ),
    "ntk/drift/kernel_distance": "1 - cosine similarity of the current kernel with the initial one (0 = unchanged).",
    "ntk/drift/linearization_error": (
        "Distance of the network from its linearization at initialization, relative to how far its outputs moved "
        "(about 0 in the lazy regime, of order 1 when it learns features)."
    ),
    "ntk/drift/verdict": "0 lazy, 1 drifting, 2 feature-learning (thresholds in docs/callback.md).",
    OVERVIEW_VERDICT: (
        "The drift verdict: 0 lazy (the kernel theory describes training), 1 drifting, 2 feature-learning. From the "
        "kernel distance and the linearization error (thresholds in docs/callback.md)."
    ),
}
"""Descriptions shown on TensorBoard's charts (the "?" of a card) for the keys a researcher reads first."""


MODE_KINDS = ("predicted", "actual", "relative", "predicted_lower", "predicted_upper")
"""The ``kind`` of the per-mode keys, each a list attribute ``mode_learnability_<kind>`` of :class:`Snapshot`."""

_VERDICTS = {v.value for v in Verdict}


def to_json(value: Any, where: str = "value") -> Any:
    """``value`` as strict-JSON data: the one JSON cleaner of the package.

    ``nan`` -> ``None``, infinities -> ``"inf"`` / ``"-inf"`` (strict JSON has neither; :func:`as_float` reads the
    strings back); tensors, arrays and numpy scalars -> lists or numbers; enums -> their values;
    paths -> strings; mappings and sequences recursively. Anything else becomes its ``str`` with an
    :class:`~ntkmonitor.NTKMonitorWarning` that names where it was.

    Args:
        value: nested dicts, lists, tuples, numbers, strings, tensors or arrays.
        where: a name for ``value`` in the warning.

    Returns:
        The same structure with only JSON types.

    Example:
        >>> to_json({"x": (1.0, float("nan"))})
        {'x': [1.0, None]}
    """
    if isinstance(value, Enum):
        return to_json(value.value, where)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isinf(value):  # strict JSON has no infinity; "inf" reads back as one (as_float, from_json)
            return "inf" if value > 0 else "-inf"
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): to_json(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors (without importing either)
        return to_json(value.detach().cpu().tolist() if hasattr(value, "detach") else value.tolist(), where)
    warnings.warn(
        f"ntkmonitor wrote {where} as text: {type(value).__name__} is not a JSON type.", NTKMonitorWarning, stacklevel=2
    )
    return str(value)


_TEXT_FIELDS = ("verdict", "prediction_note", "prediction_regime")


def as_float(value: Any) -> float:
    """A float; ``nan`` for ``None``, booleans and anything that is not a number.

    Example:
        >>> as_float("0.5"), as_float(None), as_float("far")
        (0.5, nan, nan)
    """
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _items(value: Any) -> list[Any]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else []


def from_json(value: Any) -> Any:
    """Inverse of :func:`to_json` for numbers: ``None`` -> ``nan``, recursively through lists and dicts.

    Example:
        >>> from_json([1.0, None])
        [1.0, nan]
    """
    if value is None:
        return math.nan
    if value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    return value


def format_count(value: Any) -> str:
    """A whole number with thousands separators; ``n/a`` where undefined.

    Example:
        >>> format_count(12345.0), format_count(None)
        ('12,345', 'n/a')
    """
    number = as_float(value)
    return f"{int(number):,}" if math.isfinite(number) else "n/a"


def format_number(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; ``n/a`` for ``None``, ``nan``, infinities and non-numbers.

    Example:
        >>> format_number(0.123456), format_number(None), format_number(float("nan"), 3)
        ('0.1235', 'n/a', 'n/a')
    """
    if value is None or isinstance(value, bool):
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.{digits}g}" if math.isfinite(number) else "n/a"


@dataclass
class Snapshot:
    """Everything one measurement found. JSON-serializable through :meth:`to_dict`.

    Floats are ``nan`` where undefined (e.g. the kernel velocity and linearization error at the
    reference). All learnabilities and MSEs are on the probe (``M`` held-out points), for the output
    centered at initialization.

    Attributes:
        step: optimizer step of the measurement.
        epoch: training epoch, if known.
        seconds: wall time of the measurement.
        kernel_distance: ``1 - <K0, Kt>_F / (||K0|| ||Kt||)`` (Fort et al. 2020).
        kernel_velocity: kernel distance to the previous measurement per step.
        relative_kernel_change: ``||Kt - K0||_F / ||K0||_F``.
        parameter_change: ``||theta_t - theta_0|| / ||theta_0||`` over the selected parameters.
        parameter_change_per_tensor: the same per parameter tensor, ``{name: value}``.
        linearization_error: ``||f_t - f_lin|| / ||f_t - f_0||`` on the probe (Lee et al. 2019).
        kernel_alignment: centered kernel-target alignment of ``Kt`` (Cortes et al. 2012).
        eigenspace_overlap: top-``top_k`` eigenspace overlap of ``K0`` and ``Kt``.
        verdict: ``"lazy"``, ``"drifting"`` or ``"feature-learning"`` (:func:`~ntkmonitor.verdict`).
        top_eigenvalues: the current kernel's top ``top_k`` operator eigenvalues.
        effective_rank: of the current spectrum.
        participation_ratio: of the current spectrum.
        kernel_trace: ``sum_i lambda_i = tr(Kt) / M``.
        ridge: the ridge of the predictions.
        learnability_actual: ``<y, f_hat> / <y, y>``.
        function_alignment: the scale-free alignment of the learned function with the target,
            ``<yc, fc> / (||yc|| ||fc||)`` with both centered over the probe (per output, then summed): 1 when the
            network's output is an affine function of the target. The measurement to read for a classifier
            trained with cross-entropy, whose logits have no fixed scale.
        learnability_predicted_init: eigenlearning prediction from ``K0``.
        learnability_predicted_current: eigenlearning prediction from ``Kt``.
        learnability_predicted_init_lower: lower end of its interval (:class:`~ntkmonitor.ProbePrediction`);
            ``..._upper``, and the same pairs for ``..._current`` and the test MSEs, likewise.
        learnability_predicted_init_upper: upper end.
        learnability_predicted_current_lower: lower end of the interval of the prediction from ``Kt``.
        learnability_predicted_current_upper: upper end.
        test_mse_actual: ``mean (f_hat - y)^2`` over probe points and outputs.
        test_mse_predicted_init: predicted test MSE from ``K0``.
        test_mse_predicted_current: predicted test MSE from ``Kt``.
        test_mse_predicted_init_lower: lower end of its interval.
        test_mse_predicted_init_upper: upper end.
        test_mse_predicted_current_lower: lower end of the interval of the prediction from ``Kt``.
        test_mse_predicted_current_upper: upper end.
        kappa_init: ``kappa`` of the prediction from ``K0``.
        kappa_current: ``kappa`` of the prediction from ``Kt``.
        complexity_init: ``sqrt(2 y^T K_DD^{-1} y / n)`` predicted from ``K0`` at ``n`` (Arora et al. 2019).
        complexity_init_lower: lower end of its interval.
        complexity_init_upper: upper end.
        prediction_regime: ``"resolved"``, ``"extrapolated"`` or ``"finite-rank"`` (see
            :class:`~ntkmonitor.ProbePrediction`), of the prediction from ``K0``.
        prediction_reach: the largest ``n`` the probe resolves without extrapolation.
        suggested_probe_size: when the interval is wide, a probe size that would make it tight; else 0.
        self_check_learnability_gap: at the reference, mean ``|predicted - measured|`` learnability of kernel
            regression on the probe itself (:class:`~ntkmonitor.SelfCheck`); ``nan`` elsewhere.
        self_check_mse_ratio: at the reference, geometric mean of predicted / measured test MSE there.
        mode_indices: the reported modes (0-based, reference eigenbasis).
        mode_learnability_predicted: ``lambda_i / (lambda_i + kappa)`` from ``K0``, per reported mode.
        mode_learnability_predicted_lower: lower ends of their intervals.
        mode_learnability_predicted_upper: upper ends.
        mode_learnability_actual: ``v_hat_i / v_i`` per reported mode (``nan`` where the target has
            negligible power in the mode).
        mode_learnability_relative: ``mode_learnability_actual / learnability_actual``: how much of each mode is
            learned relative to the target as a whole, scale-free (the spectral-bias profile of a classifier whose
            logits have no fixed scale; 1 everywhere for a function proportional to the target).
        target_power: ``v_i^2`` (summed over outputs) of the target per reported mode.
        prediction_note: how the prediction was obtained, in plain words (resolved or extrapolated, and the
            probe size that would make a wide interval tight).

    Example:
        >>> snap = Snapshot(step=3)
        >>> snap.to_dict()["step"], math.isnan(snap.kernel_distance)
        (3, True)
    """

    step: int
    epoch: int | None = None
    seconds: float = math.nan
    kernel_distance: float = math.nan
    kernel_velocity: float = math.nan
    relative_kernel_change: float = math.nan
    parameter_change: float = math.nan
    parameter_change_per_tensor: dict[str, float] = field(default_factory=dict)
    linearization_error: float = math.nan
    kernel_alignment: float = math.nan
    eigenspace_overlap: float = math.nan
    verdict: str = ""
    top_eigenvalues: list[float] = field(default_factory=list)
    effective_rank: float = math.nan
    participation_ratio: float = math.nan
    kernel_trace: float = math.nan
    ridge: float = math.nan
    learnability_actual: float = math.nan
    function_alignment: float = math.nan
    learnability_predicted_init: float = math.nan
    learnability_predicted_current: float = math.nan
    test_mse_actual: float = math.nan
    test_mse_predicted_init: float = math.nan
    test_mse_predicted_current: float = math.nan
    learnability_predicted_init_lower: float = math.nan
    learnability_predicted_init_upper: float = math.nan
    learnability_predicted_current_lower: float = math.nan
    learnability_predicted_current_upper: float = math.nan
    test_mse_predicted_init_lower: float = math.nan
    test_mse_predicted_init_upper: float = math.nan
    test_mse_predicted_current_lower: float = math.nan
    test_mse_predicted_current_upper: float = math.nan
    kappa_init: float = math.nan
    kappa_current: float = math.nan
    complexity_init: float = math.nan
    complexity_init_lower: float = math.nan
    complexity_init_upper: float = math.nan
    prediction_regime: str = ""
    prediction_reach: float = math.nan
    suggested_probe_size: int = 0
    self_check_learnability_gap: float = math.nan
    self_check_mse_ratio: float = math.nan
    mode_indices: list[int] = field(default_factory=list)
    mode_learnability_predicted: list[float] = field(default_factory=list)
    mode_learnability_predicted_lower: list[float] = field(default_factory=list)
    mode_learnability_predicted_upper: list[float] = field(default_factory=list)
    mode_learnability_actual: list[float] = field(default_factory=list)
    mode_learnability_relative: list[float] = field(default_factory=list)
    target_power: list[float] = field(default_factory=list)
    prediction_note: str = ""

    @property
    def top_eigenvalue(self) -> float:
        """The largest operator eigenvalue of the current kernel (``nan`` if unknown)."""
        return self.top_eigenvalues[0] if self.top_eigenvalues else math.nan

    @property
    def verdict_code(self) -> float:
        """The verdict as a number for charts (:attr:`Verdict.code`); ``nan`` when there is none."""
        return Verdict(self.verdict).code if self.verdict in _VERDICTS else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A strict-JSON dict (``nan`` -> ``None``)."""
        return to_json(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """Inverse of :meth:`to_dict`; loose input is coerced field by field (a number that is not one is ``nan``).

        Example:
            >>> Snapshot.from_dict({"step": 2, "kernel_distance": None, "top_eigenvalues": [1.0, "x"]}).top_eigenvalues
            [1.0, nan]
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in _TEXT_FIELDS:
                values[f.name] = "" if value is None else str(value)
            elif f.name in ("step", "epoch", "suggested_probe_size"):
                number = as_float(value)
                values[f.name] = int(number) if math.isfinite(number) else (None if f.name == "epoch" else 0)
            elif f.name == "mode_indices":
                values[f.name] = [int(v) for v in map(as_float, _items(value)) if math.isfinite(v)]
            elif f.name == "parameter_change_per_tensor":
                values[f.name] = {str(k): as_float(v) for k, v in value.items()} if isinstance(value, Mapping) else {}
            elif isinstance(f.default, float):
                values[f.name] = as_float(value)
            else:
                values[f.name] = [as_float(v) for v in _items(value)]
        values.setdefault("step", 0)
        return cls(**values)

    def scalars(self) -> dict[str, float]:
        """Finite scalar metrics under their documented keys (see :data:`SCALAR_KEYS`)."""
        out: dict[str, float] = {}
        for key, attr in SCALAR_KEYS.items():
            out[key] = float(getattr(self, attr))
        per_mode = [(kind, getattr(self, f"mode_learnability_{kind}")) for kind in MODE_KINDS]
        for i, index in enumerate(self.mode_indices):
            for kind, values in per_mode:
                if i < len(values):
                    out[MODE_KEY.format(index=index, kind=kind)] = float(values[i])
        for name, value in self.parameter_change_per_tensor.items():
            out[f"ntk/params/{name}/relative_change"] = float(value)
        return {k: v for k, v in out.items() if math.isfinite(v)}


@dataclass(frozen=True)
class Reference:
    """What the reference (initialization) fixes for a run: the sinks draw every figure against it.

    Attributes:
        eigenvalues: ``(R,)`` operator eigenvalues of the reference kernel ``K0`` (descending), a list.
        target_power: ``(R,)`` the target's power ``v_i^2`` (summed over outputs) per reference mode, a list.
        thresholds: the :class:`DriftThresholds` of the verdict.
        probe_size: ``M``, the probe's points.
        train_size: ``n``, the training set's size.

    Example:
        >>> ref = Reference(eigenvalues=[2.0, 1.0], target_power=[0.5, 0.1], probe_size=8, train_size=100)
        >>> ref.thresholds.feature_distance
        0.25
    """

    eigenvalues: list[float]
    target_power: list[float]
    thresholds: DriftThresholds = field(default_factory=lambda: DriftThresholds())
    probe_size: int = 0
    train_size: int = 0


def overlays(snapshot: Snapshot) -> dict[str, dict[str, float]]:
    """The overlay values of a snapshot, per run of :data:`OVERLAY_RUNS`: ``{run: {tag: value}}`` (finite only).

    Example:
        >>> overlays(Snapshot(step=1, learnability_actual=0.5, learnability_predicted_init=0.6))["ntk_actual"]
        {'ntk/0_overview/learnability': 0.5}
    """
    out: dict[str, dict[str, float]] = {}
    for source, run in OVERLAY_RUNS.items():
        suffix = "actual" if source == "actual" else f"predicted_{source}"
        values = {
            OVERLAY_LEARNABILITY: getattr(snapshot, f"learnability_{suffix}"),
            OVERLAY_TEST_MSE: _log10(getattr(snapshot, f"test_mse_{suffix}")),
        }
        modes = {"actual": snapshot.mode_learnability_actual, "init": snapshot.mode_learnability_predicted}
        for i, index in enumerate(snapshot.mode_indices):
            if source in modes and i < len(modes[source]):
                values[OVERLAY_MODE.format(index=index)] = modes[source][i]
        out[run] = {tag: float(v) for tag, v in values.items() if math.isfinite(v)}
    return out


def _log10(value: float) -> float:
    return math.log10(value) if math.isfinite(value) and value > 0 else math.nan
