"""Typed results of ``ntkmonitor audit`` and ``ntkmonitor predict``: what :mod:`ntkmonitor.audit` computes and
:mod:`ntkmonitor.report` renders.

:class:`AuditResult` holds the whole result in typed parts (:class:`ModelInfo`, :class:`ProbeInfo`,
:class:`AnalysisInfo`, :class:`ReferenceSpectrum`, :class:`TimelineEntry` with its :class:`~ntkmonitor.Snapshot`,
:class:`LearningCurve`, :class:`SelfCheckCurve`, :class:`WeightDistance`). :meth:`AuditResult.to_dict` is the
strict-JSON form written to ``report.json``; :meth:`AuditResult.from_dict` reads it back, and is the one place where
loose data (a ``report.json`` from an older version, a hand-made dict) is coerced: every part is optional and
missing numbers are ``nan``. Like :mod:`ntkmonitor.record`, this module imports no engine code.

Example:
    >>> result = AuditResult.from_dict({"kind": "predict", "probe": {"size": 64, "train_size": 1000}})
    >>> result.probe.size, result.timeline, result.verdict
    (64, [], None)
    >>> AuditResult.from_dict(result.to_dict()).to_dict() == result.to_dict()
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .record import DriftThresholds, Snapshot, Verdict, as_float, to_json

__all__ = [
    "AuditResult",
    "ModelInfo",
    "ProbeInfo",
    "AnalysisInfo",
    "ReferenceSpectrum",
    "PowerLaw",
    "TimelineEntry",
    "LearningCurve",
    "SelfCheckCurve",
    "WeightDistance",
]


# ---------------------------------------------------------------------------------------------------- coercion
def _int(value: Any) -> int | None:
    number = as_float(value)
    return int(number) if math.isfinite(number) else None


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _floats(value: Any) -> list[float]:
    if hasattr(value, "tolist"):  # numpy arrays, tensors
        value = value.tolist()
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else []
    return [as_float(v) for v in items]


def _ints(value: Any) -> list[int]:
    """Whole numbers (sizes, counts); entries that are not finite numbers are dropped."""
    return [int(v) for v in _floats(value) if math.isfinite(v)]


def _strings(value: Any) -> list[str]:
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else []
    return [_str(v) for v in items]


def _verdict(value: Any) -> Verdict | None:
    try:
        return Verdict(value) if value else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------- parts
@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The audited model.

    Attributes:
        spec: the ``--model`` / ``--lightning-module`` spec.
        num_params: parameters of the model.
        num_outputs: ``k``, outputs per example.
        device: where the kernel was computed.
        kernel_method: the ``--method`` asked for.
    """

    spec: str = ""
    num_params: int | None = None
    num_outputs: int | None = None
    device: str = ""
    kernel_method: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> ModelInfo:
        """Coerce a loose dict (every key optional)."""
        d = _map(data)
        return cls(
            _str(d.get("spec")),
            _int(d.get("num_params")),
            _int(d.get("num_outputs")),
            _str(d.get("device")),
            _str(d.get("kernel_method")),
        )


@dataclasses.dataclass(frozen=True)
class ProbeInfo:
    """The probe and the training set.

    Attributes:
        size: ``M``, probe points.
        source: where the probe came from, in words.
        overlaps_training_data: whether the probe was drawn from the training data (``None``: unknown).
        train_size: ``n``.
        seed: the seed of the draw (``None``: unknown).
    """

    size: int | None = None
    source: str = ""
    overlaps_training_data: bool | None = None
    train_size: int | None = None
    seed: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> ProbeInfo:
        """Coerce a loose dict (every key optional)."""
        d = _map(data)
        overlap = d.get("overlaps_training_data")
        return cls(
            _int(d.get("size")),
            _str(d.get("source")),
            overlap if isinstance(overlap, bool) else None,
            _int(d.get("train_size")),
            _int(d.get("seed")),
        )


@dataclasses.dataclass(frozen=True)
class AnalysisInfo:
    """The analysis options of the run.

    Attributes:
        ridge: ridge of the predictions.
        mode: ``"trace"`` or ``"full"``.
        params: the parameter selection (``None``: all).
        top_k: modes reported per checkpoint.
    """

    ridge: float = math.nan
    mode: str = ""
    params: list[str] | None = None
    top_k: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> AnalysisInfo:
        """Coerce a loose dict (every key optional)."""
        d = _map(data)
        params = d.get("params")
        return cls(
            as_float(d.get("ridge")), _str(d.get("mode")), _strings(params) if params else None, _int(d.get("top_k"))
        )


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """``lambda_i ~ c i^-alpha`` fitted to the reference spectrum, with its ``r2``."""

    c: float
    alpha: float
    r2: float


@dataclasses.dataclass(frozen=True)
class ReferenceSpectrum:
    """The reference kernel's spectrum.

    Attributes:
        eigenvalues: operator eigenvalues, descending.
        target_power: the target's power per eigenmode.
        effective_rank: of the spectrum.
        participation_ratio: of the spectrum.
        power_law: the fitted decay, or ``None``.
    """

    eigenvalues: list[float] = dataclasses.field(default_factory=list)
    target_power: list[float] = dataclasses.field(default_factory=list)
    effective_rank: float = math.nan
    participation_ratio: float = math.nan
    power_law: PowerLaw | None = None

    @classmethod
    def from_dict(cls, data: Any) -> ReferenceSpectrum:
        """Coerce a loose dict (every key optional)."""
        d = _map(data)
        fit = _map(d.get("power_law"))
        law = PowerLaw(as_float(fit.get("c")), as_float(fit.get("alpha")), as_float(fit.get("r2"))) if fit else None
        return cls(
            _floats(d.get("eigenvalues")),
            _floats(d.get("target_power")),
            as_float(d.get("effective_rank")),
            as_float(d.get("participation_ratio")),
            law,
        )


@dataclasses.dataclass(frozen=True)
class TimelineEntry:
    """One measured checkpoint: its label, its training step and its :class:`~ntkmonitor.Snapshot`."""

    label: str
    step: int | None
    snapshot: Snapshot

    @classmethod
    def from_dict(cls, data: Any, index: int = 0) -> TimelineEntry:
        """Coerce a loose dict; a missing label becomes ``checkpoint <index>``."""
        d = _map(data)
        snap = dict(_map(d.get("snapshot")))
        step = _int(d.get("step", snap.get("step")))
        snap["step"] = step if step is not None else index
        label = _str(d.get("label")) or f"checkpoint {index}"
        return cls(label, step, Snapshot.from_dict(snap))


@dataclasses.dataclass(frozen=True)
class LearningCurve:
    """The predicted learning curve over ``n`` with its intervals (:class:`~ntkmonitor.ProbeEstimator`).

    Attributes:
        n: training-set sizes.
        learnability: predicted learnability per size; ``learnability_lower``/``_upper`` its interval.
        learnability_lower: lower ends.
        learnability_upper: upper ends.
        test_mse: predicted test MSE per size; ``test_mse_lower``/``_upper`` its interval.
        test_mse_lower: lower ends.
        test_mse_upper: upper ends.
        kappa: ``kappa`` per size.
        regime: ``"resolved"``, ``"extrapolated"`` or ``"finite-rank"`` per size.
        ridge: the ridge of the predictions.
        reach: the largest ``n`` the probe resolves.
        at_train_size: the whole prediction at ``n`` (``ProbePrediction.to_dict()``).
        note: how the prediction at ``n`` was obtained.
    """

    n: list[int] = dataclasses.field(default_factory=list)
    learnability: list[float] = dataclasses.field(default_factory=list)
    learnability_lower: list[float] = dataclasses.field(default_factory=list)
    learnability_upper: list[float] = dataclasses.field(default_factory=list)
    test_mse: list[float] = dataclasses.field(default_factory=list)
    test_mse_lower: list[float] = dataclasses.field(default_factory=list)
    test_mse_upper: list[float] = dataclasses.field(default_factory=list)
    kappa: list[float] = dataclasses.field(default_factory=list)
    regime: list[str] = dataclasses.field(default_factory=list)
    ridge: float = math.nan
    reach: float = math.nan
    at_train_size: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> LearningCurve:
        """Coerce a loose dict (every key optional)."""
        d = _map(data)
        lists = {
            name: _floats(d.get(name))
            for name in ("learnability", "learnability_lower", "learnability_upper", "test_mse")
            + ("test_mse_lower", "test_mse_upper", "kappa")
        }
        return cls(
            n=_ints(d.get("n")),
            **lists,
            regime=_strings(d.get("regime")),
            ridge=as_float(d.get("ridge")),
            reach=as_float(d.get("reach")),
            at_train_size=dict(_map(d.get("at_train_size"))),
            note=_str(d.get("note")),
        )

    def interval_at_train_size(self, name: str) -> tuple[float, float] | None:
        """``(lower, upper)`` of ``name`` (``"learnability"`` or ``"test_mse"``) at ``n``, or ``None``."""
        bounds = _floats(self.at_train_size.get(f"{name}_interval"))
        return (bounds[0], bounds[1]) if len(bounds) == 2 else None

    def at(self, n: float | None) -> tuple[float, float, str]:
        """Learnability and test MSE at ``n``: exact, or interpolated linearly in ``log n``.

        Returns ``(learnability, test_mse, how)`` with ``how`` ``"exact"``, ``"interpolated"`` or ``""`` (not
        available). This reads the plotted curve; its own points are the predictions.
        """
        target = as_float(n)
        if (
            not math.isfinite(target)
            or target <= 0
            or not (len(self.n) == len(self.learnability) == len(self.test_mse))
        ):
            return math.nan, math.nan, ""
        points = sorted(
            (s, l_, m)
            for s, l_, m in zip(self.n, self.learnability, self.test_mse, strict=True)
            if math.isfinite(s) and s > 0
        )
        for s, l_, m in points:
            if s == target:
                return l_, m, "exact"
        for (s0, l0, m0), (s1, l1, m1) in zip(points, points[1:], strict=False):
            if s0 < target < s1:
                w = (math.log(target) - math.log(s0)) / (math.log(s1) - math.log(s0))
                return l0 + w * (l1 - l0), m0 + w * (m1 - m0), "interpolated"
        return math.nan, math.nan, ""


@dataclasses.dataclass(frozen=True)
class SelfCheckCurve:
    """The theory's self-check on the probe (``SelfCheck.to_dict()``): measured vs predicted at sizes ``m < M``.

    Attributes:
        sizes: the sizes ``m``.
        measured_learnability: kernel regression on ``m`` probe points, tested on the rest.
        measured_test_mse: likewise.
        predicted_learnability: the prediction at ``m``.
        predicted_test_mse: likewise.
        learnability_lower: interval of the predicted learnability.
        learnability_upper: likewise.
        test_mse_lower: interval of the predicted test MSE.
        test_mse_upper: likewise.
        learnability_gap: mean absolute gap.
        mse_ratio: geometric mean of predicted / measured test MSE.
        coverage: fraction of sizes inside the intervals.
    """

    sizes: list[int] = dataclasses.field(default_factory=list)
    measured_learnability: list[float] = dataclasses.field(default_factory=list)
    measured_test_mse: list[float] = dataclasses.field(default_factory=list)
    predicted_learnability: list[float] = dataclasses.field(default_factory=list)
    predicted_test_mse: list[float] = dataclasses.field(default_factory=list)
    learnability_lower: list[float] = dataclasses.field(default_factory=list)
    learnability_upper: list[float] = dataclasses.field(default_factory=list)
    test_mse_lower: list[float] = dataclasses.field(default_factory=list)
    test_mse_upper: list[float] = dataclasses.field(default_factory=list)
    learnability_gap: float = math.nan
    mse_ratio: float = math.nan
    coverage: float = math.nan

    @classmethod
    def from_dict(cls, data: Any) -> SelfCheckCurve | None:
        """Coerce a loose dict; ``None`` when there is none."""
        d = _map(data)
        if not d:
            return None
        names = [f.name for f in dataclasses.fields(cls)]
        curves = {n: _floats(d.get(n)) for n in names[1:9]}
        return cls(sizes=_ints(d.get("sizes")), **curves, **{n: as_float(d.get(n)) for n in names[9:]})


@dataclasses.dataclass(frozen=True)
class WeightDistance:
    """Predicted distance travelled in weight space by the linearized network vs the measured distances.

    Attributes:
        predicted: ``sqrt((y - f0)^T K^-1 (y - f0))`` on the training data (``nan`` when not computed).
        measured: ``||theta_t - theta_0||`` per checkpoint.
        labels: the checkpoints.
        n: training points.
        ridge: the ridge.
        note: what it means, or why it was not computed.
    """

    predicted: float = math.nan
    measured: list[float] = dataclasses.field(default_factory=list)
    labels: list[str] = dataclasses.field(default_factory=list)
    n: int | None = None
    ridge: float = math.nan
    note: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> WeightDistance | None:
        """Coerce a loose dict; ``None`` when there is none."""
        d = _map(data)
        if not d:
            return None
        return cls(
            as_float(d.get("predicted")),
            _floats(d.get("measured")),
            _strings(d.get("labels")),
            _int(d.get("n")),
            as_float(d.get("ridge")),
            _str(d.get("note")),
        )


# ---------------------------------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True)
class AuditResult:
    """Everything ``ntkmonitor audit`` / ``predict`` found, typed.

    Attributes:
        kind: ``"audit"`` or ``"predict"``.
        command: the command line that produced it.
        versions: ``{package: version}``.
        created: ISO timestamp.
        model: the :class:`ModelInfo`.
        probe: the :class:`ProbeInfo`.
        options: the :class:`AnalysisInfo`.
        spectrum0: the :class:`ReferenceSpectrum`.
        timeline: the measured checkpoints, the reference first.
        verdict: the last checkpoint's :class:`~ntkmonitor.Verdict` (``None`` with fewer than two checkpoints).
        thresholds: the :class:`~ntkmonitor.DriftThresholds` behind the verdicts.
        learning_curve: the :class:`LearningCurve`.
        self_check: the :class:`SelfCheckCurve`, or ``None``.
        weight_distance: the :class:`WeightDistance`, or ``None``.
        offdiagonal_fraction: with ``--mode full``, the share of the full kernel off the output-diagonal blocks.
        warnings: for the reader.
    """

    kind: str = "audit"
    command: str = ""
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    created: str = ""
    model: ModelInfo = dataclasses.field(default_factory=ModelInfo)
    probe: ProbeInfo = dataclasses.field(default_factory=ProbeInfo)
    options: AnalysisInfo = dataclasses.field(default_factory=AnalysisInfo)
    spectrum0: ReferenceSpectrum = dataclasses.field(default_factory=ReferenceSpectrum)
    timeline: list[TimelineEntry] = dataclasses.field(default_factory=list)
    verdict: Verdict | None = None
    thresholds: DriftThresholds = dataclasses.field(default_factory=DriftThresholds)
    learning_curve: LearningCurve = dataclasses.field(default_factory=LearningCurve)
    self_check: SelfCheckCurve | None = None
    weight_distance: WeightDistance | None = None
    offdiagonal_fraction: float | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The strict-JSON form written to ``report.json`` (``nan`` -> ``null``).

        Example:
            >>> AuditResult(kind="predict").to_dict()["kind"]
            'predict'
        """
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["timeline"] = [{"label": e.label, "step": e.step, "snapshot": e.snapshot.to_dict()} for e in self.timeline]
        data["full_kernel"] = (
            None if self.offdiagonal_fraction is None else {"offdiagonal_fraction": self.offdiagonal_fraction}
        )
        del data["offdiagonal_fraction"]
        for name in ("model", "probe", "options", "spectrum0", "thresholds", "learning_curve"):
            data[name] = dataclasses.asdict(data[name])
        for name in ("self_check", "weight_distance"):
            data[name] = None if data[name] is None else dataclasses.asdict(data[name])
        return to_json(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditResult:
        """Read a result dict back (``json.load`` of ``report.json``); every part is optional.

        Args:
            data: a mapping; missing or malformed parts take their defaults.

        Returns:
            The typed result.

        Raises:
            TypeError: ``data`` is not a mapping.

        Example:
            >>> AuditResult.from_dict({"timeline": [{"snapshot": {"kernel_distance": 0.1}}]}).timeline[0].label
            'checkpoint 0'
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"Expected the result to be a dict, but got {type(data).__name__}.")
        timeline = [TimelineEntry.from_dict(e, i) for i, e in enumerate(data.get("timeline") or [])]
        kind = _str(data.get("kind")) or ("audit" if timeline else "predict")
        thresholds = _map(data.get("thresholds"))
        try:
            limits = DriftThresholds(**thresholds) if thresholds else DriftThresholds()
        except (TypeError, ValueError):
            limits = DriftThresholds()
        full = _map(data.get("full_kernel"))
        fraction = as_float(full.get("offdiagonal_fraction")) if full else math.nan
        return cls(
            kind=kind,
            command=_str(data.get("command")),
            versions={_str(k): _str(v) for k, v in _map(data.get("versions")).items()},
            created=_str(data.get("created")),
            model=ModelInfo.from_dict(data.get("model")),
            probe=ProbeInfo.from_dict(data.get("probe")),
            options=AnalysisInfo.from_dict(data.get("options")),
            spectrum0=ReferenceSpectrum.from_dict(data.get("spectrum0")),
            timeline=timeline,
            verdict=_verdict(data.get("verdict")),
            thresholds=limits,
            learning_curve=LearningCurve.from_dict(data.get("learning_curve")),
            self_check=SelfCheckCurve.from_dict(data.get("self_check")),
            weight_distance=WeightDistance.from_dict(data.get("weight_distance")),
            offdiagonal_fraction=fraction if math.isfinite(fraction) else None,
            warnings=_strings(data.get("warnings")),
        )

    @classmethod
    def coerce(cls, result: AuditResult | Mapping[str, Any]) -> AuditResult:
        """``result`` itself, or :meth:`from_dict` of a mapping (what the renderers accept).

        Example:
            >>> AuditResult.coerce({"kind": "audit"}).kind
            'audit'
        """
        return result if isinstance(result, cls) else cls.from_dict(result)
