r"""The framework-free monitoring engine: :class:`NTKTracker` and its :class:`Snapshot`.

The tracker holds a fixed *probe* ``(x, y)`` of ``M`` held-out points. :meth:`NTKTracker.reference`
captures the state at initialization (the kernel ``K0`` and its spectrum, the outputs ``f0``, a copy of
the parameters, the target's coefficients); each :meth:`NTKTracker.measure` computes the current kernel
and compares: drift from the lazy regime, the spectrum, the eigenlearning prediction from the initial
and from the current kernel, and the network's actual learnability. It knows nothing of Lightning or
TensorBoard; the callback (:class:`ntkmonitor.NTKMonitor`) and the sinks build on it.

Conventions (see ``docs/theory.md``):

- the kernel is the **trace**-mode eNTK ``(M, M)``;
- the learned function is the output **centered at initialization**, ``f_hat = f_t - f_0``;
- targets: ``y`` of shape ``(M,)`` or ``(M, k)`` (regression), or **integer class labels** ``(M,)``,
  which become one-hot regression targets ``(M, k)`` with ``k`` the model's output width;
- per-mode quantities use the **reference** eigenbasis (fixed for the run), top ``top_k`` modes by
  eigenvalue;
- the prediction's ridge: ``ridge`` if given; else, with ``lr`` given, the finite-time heuristic
  :func:`~ntkmonitor.theory.effective_ridge` ``(n, lr, step)``; else ``0`` (trained to convergence);
- predictions at the real training-set size ``n`` come from :class:`~ntkmonitor.ProbeEstimator` (the one
  policy of the tracker, the callback and the CLI), each with an interval; ``Snapshot.prediction_note``
  says how the prediction was obtained and when the probe is too small for a tight interval;
- at the reference, :meth:`~ntkmonitor.ProbeEstimator.self_check` holds the theory against kernel
  regression on the probe itself (:attr:`NTKTracker.self_check`).

Example:
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    >>> x = torch.randn(32, 4)
    >>> tracker = NTKTracker(model, (x, torch.sin(x[:, 0])), train_size=16)
    >>> tracker.reference().kernel_distance
    0.0
    >>> snap = tracker.measure(step=10)
    >>> sorted(snap.scalars())[:2]
    ['ntk/drift/eigenspace_overlap', 'ntk/drift/kernel_alignment']
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch
from torch import nn

from . import _checks, _inputs, drift, theory
from ._functional import FunctionalModel
from .errors import InputError, NoSolutionError
from .estimator import THEORY_TOLERANCE, ProbeEstimator, ProbePrediction, SelfCheck
from .kernel import NTKFunction
from .options import AnalysisOptions, KernelOptions, split_options
from .record import MODE_KEY, SCALAR_KEYS, Reference, Snapshot
from .spectrum import Spectrum, eigendecompose

__all__ = [
    "NTKTracker",
    "Snapshot",
    "Reference",
    "SCALAR_KEYS",
    "MODE_KEY",
    "predict_from_spectrum",
    "probe_order",
    "validate_options",
]

TAIL_FACTOR = 10
"""Predictions extrapolate the probe's spectrum to ``TAIL_FACTOR * max(n, r)`` modes (see
:func:`predict_from_spectrum`)."""

SCALE_WARNING = 3.0
"""With a squared loss, a learned function this many times larger than the target (RMS over the probe) means the
network was not trained on that loss (e.g. cross-entropy logits): the note says so."""


def probe_order(count: int, seed: int) -> list[int]:
    """The private permutation of ``range(count)`` a probe is drawn from: its first ``M`` items.

    A probe of ``M`` points is ``order[:M]``, so a larger probe contains a smaller one, and the draw consumes no
    global random state (a ``torch.Generator`` seeded with ``seed``). The callback and the command line share it:
    the same seed and dataset give the same probe.

    Args:
        count: the number of candidate points.
        seed: the seed.

    Returns:
        The permutation as a list of ints.

    Example:
        >>> probe_order(5, seed=0) == probe_order(5, seed=0), sorted(probe_order(5, seed=0))
        (True, [0, 1, 2, 3, 4])
    """
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()


def validate_options(**options: Any) -> None:
    """Check analysis options (``top_k``, ``ridge``, ``lr``, ``loss``, ``noise``, ``thresholds``, ``resamples``).

    Kept for compatibility: the checks live in :class:`~ntkmonitor.AnalysisOptions`, which this builds.

    Args:
        **options: fields of :class:`~ntkmonitor.AnalysisOptions`.

    Raises:
        InputError: naming the option, what was expected and what was received.

    Example:
        >>> validate_options(top_k=5, ridge=0.1)
        >>> validate_options(loss="l1")
        Traceback (most recent call last):
        ...
        ntkmonitor.errors.InputError: Expected loss to be 'half_mse', 'mse' or 'cross_entropy', but got 'l1'.
    """
    AnalysisOptions(**options)


class NTKTracker:
    """Measures a model against NTK theory on a fixed probe, from a plain PyTorch loop or a callback.

    Args:
        model: the network being trained (never modified; see :func:`~ntkmonitor.empirical_ntk`).
        probe: ``(x, y)``: ``M`` held-out inputs (a tensor, tuple or dict batch) and targets ``(M,)`` /
            ``(M, k)`` (floats) or integer class labels ``(M,)`` (one-hot to the output width).
        train_size: ``n``, the number of training examples (for the theory's predictions).
        kernel: :class:`~ntkmonitor.KernelOptions` of the kernel (the mode is always ``"trace"``).
        analysis: :class:`~ntkmonitor.AnalysisOptions` of the analysis.
        storage_device: where references (``K0``, ``theta_0``, ``f0``, the probe) are kept; default CPU.
        **options: any field of the two option classes, overriding ``kernel`` / ``analysis``; checked once,
            here (see *Options*).

    Options:
        method: eNTK method (``"auto"``, ``"structured"``, ``"jacobian"``, ``"ntk_vp"``).
        params: parameter subset for the kernel and the drift metrics (names / module prefixes).
        chunk_size: eNTK chunk size.
        dtype: eNTK computation dtype (``None``: the parameters', at least float32).
        output_fn: selects the output tensor from a tuple/dict output.
        top_k: modes reported per measurement (top by reference eigenvalue) and eigenspace-overlap size.
        ridge: fixed ridge ``delta`` for the predictions; ``None`` to use ``lr`` or 0.
        lr: learning rate for the finite-time ridge ``effective_ridge(n, lr, step, loss=loss)``
            (a heuristic for plain SGD/GD); ignored when ``ridge`` is given.
        loss: ``"half_mse"`` or ``"mse"``, the normalization of the training loss for ``lr``; or
            ``"cross_entropy"`` for a classifier: the eigenlearning predictions then describe what *squared-loss*
            training would reach (they are labelled so in ``prediction_note``), and the scale-free
            ``function_alignment`` is the measurement to read, since cross-entropy grows the logits without bound.
        noise: target-noise variance ``eps^2`` for the predicted test MSE.
        thresholds: :class:`~ntkmonitor.DriftThresholds` of the verdict.
        resamples: sub-probes for the prediction intervals (:class:`~ntkmonitor.ProbeEstimator`; 0 for the
            tail-model spread only, which is cheaper on large probes).

    Attributes:
        history: the :class:`Snapshot` of every measurement, in order.
        target: ``(M, k)`` float64 regression target on the probe.
        K0: ``(M, M)`` reference kernel; ``spectrum0`` its :class:`~ntkmonitor.Spectrum`;
            ``coefficients0`` ``(M, k)`` the target's coefficients in that eigenbasis; ``f0`` ``(M, k)``
            the outputs at the reference; ``params0`` the reference parameters; ``estimator0`` the
            :class:`~ntkmonitor.ProbeEstimator` of ``(K0, target)``.
        self_check: the :class:`~ntkmonitor.SelfCheck` of ``estimator0`` (kernel regression on the probe
            itself against the prediction), ``None`` before the reference.
        last_spectrum: the :class:`~ntkmonitor.Spectrum` of the latest measurement's kernel.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        >>> x, labels = torch.randn(20, 3), torch.randint(0, 4, (20,))
        >>> tracker = NTKTracker(model, (x, labels), train_size=100, top_k=5)
        >>> tracker.target.shape  # one-hot
        torch.Size([20, 4])
        >>> _ = tracker.reference()
        >>> len(tracker.history)
        1
    """

    def __init__(
        self,
        model: nn.Module,
        probe: tuple[Any, torch.Tensor],
        train_size: int,
        *,
        kernel: KernelOptions | None = None,
        analysis: AnalysisOptions | None = None,
        storage_device: torch.device | str = "cpu",
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"Expected model to be a torch.nn.Module, but got {type(model).__name__}.")
        if not (isinstance(probe, (tuple, list)) and len(probe) == 2):
            raise InputError(
                f"Expected probe to be a pair (x, y) of inputs and targets, but got {type(probe).__name__}"
                f"{f' of length {len(probe)}' if isinstance(probe, (tuple, list)) else ''}."
            )
        train_size = _checks.positive_int(train_size, "train_size (the training-set size n)")
        kernel, analysis = split_options(options, kernel, analysis)
        self.model = model
        self.train_size = train_size
        self.kernel_options = dataclasses.replace(kernel, mode="trace")
        self.analysis = analysis
        self.top_k = analysis.top_k
        self.ridge = analysis.ridge
        self.lr = analysis.lr
        self.loss = analysis.loss
        self.noise = analysis.noise
        self.thresholds = analysis.thresholds
        self.resamples = analysis.resamples
        self.storage_device = torch.device(storage_device)
        self.ntk = NTKFunction(model, self.kernel_options)
        self.history: list[Snapshot] = []
        self._set_probe(*probe)
        self._reset_reference()

    # ------------------------------------------------------------------ probe and target
    def _set_probe(self, x: Any, y: torch.Tensor) -> None:
        M = _inputs.validate_batch(x, "probe x")
        if not isinstance(y, torch.Tensor):
            y = _checks.as_tensor(y, "probe y")
        for key, t in _inputs.named_leaves(x):
            _checks.finite_data(t, f"probe x{key}")
        _checks.finite_data(y, "probe y")
        if y.ndim not in (1, 2) or y.shape[0] != M:
            raise InputError(
                f"Expected probe y to have shape ({M},) or ({M}, k) to match the {M} probe inputs, but got "
                f"{tuple(y.shape)}."
            )
        self.x = _inputs.tree_map(lambda t: t.detach().to(self.storage_device).clone(), x)
        self.y = y.detach().to(self.storage_device).clone()
        self.M = M
        fm = self.ntk.functional_model()
        with fm.measuring():
            k = fm.profile(_inputs.prepare(self.x, fm.device, fm.dtype), M, "probe x").num_outputs
        self.num_outputs = k
        self.target = self._as_target(self.y, k)

    @staticmethod
    def _as_target(y: torch.Tensor, k: int) -> torch.Tensor:
        """``(M, k)`` float64 regression target; integer labels become one-hot."""
        if not y.is_floating_point():
            if y.ndim != 1:
                raise InputError(f"Expected integer class labels of shape (M,), but got {tuple(y.shape)}.")
            if int(y.min()) < 0 or int(y.max()) >= k:
                raise InputError(
                    f"Expected class labels in [0, {k}) to match the model's {k} outputs, but got labels from "
                    f"{int(y.min())} to {int(y.max())}."
                )
            return torch.nn.functional.one_hot(y.long(), k).to(torch.float64)
        target = y.to(torch.float64)
        target = target[:, None] if target.ndim == 1 else target
        if target.shape[1] != k:
            raise InputError(
                f"Expected probe y with {k} columns to match the model's {k} outputs, but got {target.shape[1]}. "
                "Pass integer labels for one-hot targets, or select the output with output_fn."
            )
        return target

    # ------------------------------------------------------------------ measurements
    def _reset_reference(self) -> None:
        self.K0: torch.Tensor | None = None
        self.spectrum0: Spectrum | None = None
        self.f0: torch.Tensor | None = None
        self.params0: dict[str, torch.Tensor] | None = None
        self.coefficients0: torch.Tensor | None = None
        self.estimator0: ProbeEstimator | None = None
        self._why_none = {"init": "", "current": ""}
        self.self_check: SelfCheck | None = None
        self._K_prev: torch.Tensor | None = None
        self._step_prev: int | None = None
        self._record: Reference | None = None
        self.last_spectrum: Spectrum | None = None

    @property
    def has_reference(self) -> bool:
        """Whether :meth:`reference` (or :meth:`load_state_dict`) has run."""
        return self.K0 is not None

    def _kernel(self) -> torch.Tensor:
        return self.ntk(self.x).detach().to(self.storage_device)

    def _outputs_and_params(self, fm: FunctionalModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with fm.measuring(), torch.no_grad():
            out = fm(fm.primals, _inputs.prepare(self.x, fm.device, fm.dtype))
        params = {name: p.detach() for name, p in fm.primals.items()}
        return out.detach().to(self.storage_device, torch.float64), params

    def warm_up(self) -> None:
        """Run the transforms once on two probe points (``torch.func`` initializes lazily, once per process).

        Optional: it only moves that one-time cost (0.5-2 s on CPU) out of the first measurement, so an
        overhead budget is not spent on it.
        """
        two = _inputs.take(self.x, slice(0, 2))
        self.ntk(two)
        fm = self.ntk.functional_model()
        _, params = self._outputs_and_params(fm)
        drift.linearization_gap(fm, params, params, two)

    def measurement_cost(self) -> tuple[float, float]:
        """Time one kernel on the probe and one analysis of it (spectrum and prediction intervals).

        Used to size a probe to a time budget (``NTKMonitor(probe_size="auto")``): the kernel grows like
        ``M^2`` and the analysis, eigendecompositions, like ``M^3``. Changes nothing.

        Returns:
            ``(kernel_seconds, analysis_seconds)`` on this probe.

        Example:
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
            >>> x = torch.randn(20, 3)
            >>> kernel_s, analysis_s = NTKTracker(model, (x, x[:, 0]), train_size=50).measurement_cost()
            >>> kernel_s > 0 and analysis_s > 0
            True
        """
        start = time.perf_counter()
        K = self._kernel()
        middle = time.perf_counter()
        spectrum = eigendecompose(K)
        estimator = self._estimator(K, spectrum, "current")
        if estimator is not None:
            estimator.predict(self.train_size)
        return middle - start, time.perf_counter() - middle

    def reference(self, step: int = 0, epoch: int | None = None) -> Snapshot:
        """Capture the reference state (call it at initialization) and return its :class:`Snapshot`.

        Args:
            step: the step to record (normally 0).
            epoch: the epoch to record.

        Returns:
            The snapshot at the reference (kernel distance 0, actual learnability 0).
        """
        start = time.perf_counter()
        K0 = self._kernel()
        fm = self.ntk.functional_model()
        f0, params = self._outputs_and_params(fm)
        self.K0 = K0
        self.spectrum0 = eigendecompose(K0)
        self.f0 = f0
        self.params0 = {name: p.to(self.storage_device, copy=True) for name, p in params.items()}
        self.coefficients0 = self.spectrum0.project(self.target)
        self._set_estimator0()
        self.history = []
        self._record = None
        snap = self._snapshot(step, epoch, K0, (fm, f0, params), self.spectrum0, start, self.estimator0, "init")
        if self.self_check is not None:
            snap.self_check_learnability_gap = self.self_check.learnability_gap
            snap.self_check_mse_ratio = self.self_check.mse_ratio
        return snap

    @property
    def reference_record(self) -> Reference:
        """The frozen :class:`~ntkmonitor.Reference` of this run (after :meth:`reference`): what sinks draw against.

        Example:
            >>> tracker.reference_record.probe_size  # doctest: +SKIP
            32
        """
        if self.spectrum0 is None or self.coefficients0 is None:
            raise InputError("Expected reference() to run before reference_record is read, but it has not.")
        if self._record is None:
            self._record = Reference(
                eigenvalues=self.spectrum0.eigenvalues.tolist(),
                target_power=self.coefficients0.pow(2).sum(1).tolist(),
                thresholds=self.thresholds,
                probe_size=self.M,
                train_size=self.train_size,
            )
        return self._record

    def publish(self, sink: Any, *, final: bool = False) -> None:
        """Hand the latest measurement to a :class:`~ntkmonitor.sinks.Sink`, with the reference and the spectrum.

        Args:
            sink: e.g. a :class:`~ntkmonitor.tensorboard.TensorBoardSink` or :class:`~ntkmonitor.sinks.MetricsSink`.
            final: the end of the run (figures of the final state, then a flush).

        Example:
            >>> tracker.publish(sink)  # doctest: +SKIP
        """
        if not self.history:
            raise InputError("Expected a measurement to publish, but the tracker has none. Call reference() first.")
        spectrum = self.last_spectrum
        sink.log(
            self.history[-1],
            self.reference_record,
            eigenvalues=None if spectrum is None else spectrum.eigenvalues,
            final=final,
        )

    def _estimator(self, K: torch.Tensor, spectrum: Spectrum, which: str) -> ProbeEstimator | None:
        """The probe estimator of ``(K, target)``; ``None`` (no prediction, a note) when none can be made.

        The estimator from ``Kt`` takes the tolerance the self-check measured for ``K0``.
        """
        self._why_none[which] = f"no prediction: a {self.M}-point probe is too small"
        if self.M < 3:
            return None
        init = which == "init"
        tolerance = THEORY_TOLERANCE if init or self.estimator0 is None else self.estimator0.tolerance
        try:
            return ProbeEstimator(
                K, self.target, spectrum=spectrum, resamples=self.resamples, tolerance=tolerance, calibrate=init
            )
        except InputError as err:  # e.g. a zero kernel: the prediction is undefined, the measurement goes on
            self._why_none[which] = f"no prediction: {err}"
            return None

    def _set_estimator0(self) -> None:
        """``estimator0`` and its :attr:`self_check`, whose measured tolerance widens the intervals."""
        assert self.K0 is not None and self.spectrum0 is not None
        self.estimator0 = None
        self.estimator0 = self._estimator(self.K0, self.spectrum0, "init")
        self.self_check = None if self.estimator0 is None else self.estimator0.calibration

    def measure(self, step: int, epoch: int | None = None) -> Snapshot:
        """Measure the model now and append the :class:`Snapshot` to :attr:`history`.

        Args:
            step: the current optimizer step (the finite-time ridge uses it).
            epoch: the current epoch, if known.

        Returns:
            The new snapshot.
        """
        if not self.has_reference:
            raise InputError("Expected reference() to run before measure(), but no reference was captured.")
        start = time.perf_counter()
        Kt = self._kernel()
        fm = self.ntk.functional_model()
        f_t, params = self._outputs_and_params(fm)
        spectrum = eigendecompose(Kt)
        estimator = self._estimator(Kt, spectrum, "current")
        return self._snapshot(step, epoch, Kt, (fm, f_t, params), spectrum, start, estimator, "current")

    def _ridge(self, step: int) -> float:
        if self.ridge is not None:
            return self.ridge
        if self.lr is not None:
            return math.inf if step <= 0 else theory.effective_ridge(self.train_size, self.lr, step, loss=self.loss)
        return 0.0

    def _predict(
        self, estimator: ProbeEstimator | None, ridge: float, which: str
    ) -> tuple[ProbePrediction | None, str]:
        if math.isinf(ridge):  # nothing trained yet
            return None, "step 0 with lr: nothing learned yet"
        if estimator is None:
            return None, self._why_none[which]
        try:
            prediction = estimator.predict(self.train_size, ridge=ridge, noise=self.noise)
        except (ArithmeticError, ValueError) as err:  # undefined here: a note, never a failed measurement
            return None, f"no prediction: {type(err).__name__}: {err}"
        return prediction, prediction.note

    def _snapshot(
        self,
        step: int,
        epoch: int | None,
        Kt: torch.Tensor,
        outputs: tuple[FunctionalModel, torch.Tensor, dict[str, torch.Tensor]],
        spectrum: Spectrum,
        start: float,
        estimator: ProbeEstimator | None,
        which: str,
    ) -> Snapshot:
        assert self.K0 is not None and self.spectrum0 is not None and self.f0 is not None
        fm, f_t, params = outputs
        snap = Snapshot(step=int(step), epoch=epoch)
        snap.kernel_distance = drift.kernel_distance(self.K0, Kt)
        if self._K_prev is not None and self._step_prev is not None and step > self._step_prev:
            snap.kernel_velocity = drift.kernel_velocity(self._K_prev, Kt, step - self._step_prev)
        snap.relative_kernel_change = drift.relative_kernel_change(self.K0, Kt)
        change = drift.relative_parameter_change(self.params0, params)
        snap.parameter_change = change.total
        snap.parameter_change_per_tensor = dict(change.per_parameter)
        # Also at the reference, where it is nan (nothing moved): that checks forward-mode AD on this model
        # before training starts and keeps its one-time warm-up out of the measurements during training.
        snap.linearization_error = drift.linearization_gap(fm, self.params0, params, self.x, f0=self.f0, f_t=f_t)
        snap.kernel_alignment = drift.kernel_target_alignment(Kt, self.target)
        k = min(self.top_k, self.M - 1)
        # drift.eigenspace_overlap(self.K0, Kt, k), from the eigenvectors both spectra already hold
        k = max(1, min(k, self.spectrum0.rank, spectrum.rank))
        snap.eigenspace_overlap = drift.subspace_overlap(
            self.spectrum0.eigenvectors[:, :k], spectrum.eigenvectors[:, :k]
        )
        snap.verdict = drift.verdict(snap.kernel_distance, snap.linearization_error, self.thresholds).value

        lam = spectrum.eigenvalues
        snap.top_eigenvalues = lam[: self.top_k].tolist()
        snap.effective_rank = spectrum.effective_rank()
        snap.participation_ratio = spectrum.participation_ratio()
        snap.kernel_trace = float(lam.sum())

        ridge = self._ridge(step)
        snap.ridge = ridge
        pred0, note0 = self._predict(self.estimator0, ridge, "init")
        pred_t, note_t = self._predict(estimator, ridge, which)
        power = float(self.target.pow(2).mean(0).sum())
        for pred, suffix in ((pred0, "init"), (pred_t, "current")):
            if pred is None and math.isinf(ridge):  # nothing learned: L = 0, MSE = mean y^2 + noise
                learn, mse = 0.0, power / self.num_outputs + self.noise
                learn_iv, mse_iv = (learn, learn), (mse, mse)
            elif pred is not None:
                learn, mse = pred.learnability, pred.test_mse
                learn_iv, mse_iv = pred.learnability_interval, pred.test_mse_interval
                setattr(snap, f"kappa_{suffix}", pred.kappa)
            else:
                continue
            setattr(snap, f"learnability_predicted_{suffix}", learn)
            setattr(snap, f"test_mse_predicted_{suffix}", mse)
            setattr(snap, f"learnability_predicted_{suffix}_lower", learn_iv[0])
            setattr(snap, f"learnability_predicted_{suffix}_upper", learn_iv[1])
            setattr(snap, f"test_mse_predicted_{suffix}_lower", mse_iv[0])
            setattr(snap, f"test_mse_predicted_{suffix}_upper", mse_iv[1])
        if pred0 is not None:
            snap.complexity_init = pred0.complexity
            snap.complexity_init_lower, snap.complexity_init_upper = pred0.complexity_interval
            snap.prediction_regime = pred0.regime
            snap.prediction_reach = pred0.reach
            snap.suggested_probe_size = pred0.suggested_probe_size or 0
        snap.prediction_note = note0 or note_t  # the K0 prediction is the headline; Kt's note says the same

        f_hat = f_t - self.f0
        snap.learnability_actual = theory.learnability(self.target, f_hat)
        snap.test_mse_actual = float((f_hat - self.target).pow(2).mean())
        snap.function_alignment = _alignment(self.target, f_hat)
        snap.prediction_note = "; ".join(n for n in (snap.prediction_note, self._loss_note(f_hat)) if n)
        top = min(self.top_k, self.spectrum0.rank)
        modes = theory.mode_learnability(self.spectrum0, self.target, f_hat)
        snap.mode_indices = list(range(top))
        if pred0 is not None:
            snap.mode_learnability_predicted = pred0.mode_learnability[:top].tolist()
            snap.mode_learnability_predicted_lower = pred0.mode_learnability_lower[:top].tolist()
            snap.mode_learnability_predicted_upper = pred0.mode_learnability_upper[:top].tolist()
        else:
            fill = 0.0 if math.isinf(ridge) else math.nan
            snap.mode_learnability_predicted = [fill] * top
            snap.mode_learnability_predicted_lower = [fill] * top
            snap.mode_learnability_predicted_upper = [fill] * top
        snap.mode_learnability_actual = modes.values[:top].tolist()
        overall = snap.learnability_actual
        scale = overall if math.isfinite(overall) and overall != 0 else math.nan
        snap.mode_learnability_relative = [v / scale for v in snap.mode_learnability_actual]
        snap.target_power = self.coefficients0[:top].pow(2).sum(1).tolist()

        self._K_prev, self._step_prev = Kt, int(step)
        self.last_spectrum = spectrum
        snap.seconds = time.perf_counter() - start
        self.history.append(snap)
        return snap

    def _loss_note(self, f_hat: torch.Tensor) -> str:
        """What the loss means for reading the predictions (a classifier, or outputs at an unexpected scale)."""
        if self.loss == "cross_entropy":
            return (
                "trained with cross-entropy: the predictions are those of the squared-loss (MSE) theory; read "
                "function_alignment (scale-free) rather than learnability and test MSE, whose scale the logits set"
            )
        scale = float(f_hat.pow(2).mean().sqrt()) / max(float(self.target.pow(2).mean().sqrt()), 1e-12)
        if scale > SCALE_WARNING:
            return (
                f"the learned function is {scale:.3g}x larger than the target on the probe: the network was not "
                "trained on a squared loss against these targets (cross-entropy logits?); the MSE theory does not "
                "apply: pass loss='cross_entropy' and read function_alignment"
            )
        return ""

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue against the same reference (probe, ``K0``, ``theta_0``, history).

        Returns:
            A dict of tensors and plain Python values (``torch.save``-able with ``weights_only=True``).
        """
        return {
            "version": 1,
            "x": self.x,
            "y": self.y,
            "K0": self.K0,
            "eigenvalues0": None if self.spectrum0 is None else self.spectrum0.eigenvalues,
            "eigenvectors0": None if self.spectrum0 is None else self.spectrum0.eigenvectors,
            "f0": self.f0,
            "params0": self.params0,
            "K_prev": self._K_prev,
            "step_prev": self._step_prev,
            "train_size": self.train_size,
            "history": [s.to_dict() for s in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; measurements continue against the saved reference.

        Args:
            state: a dict from :meth:`state_dict`.
        """
        if not isinstance(state, dict) or state.get("version") != 1:
            raise InputError("Expected a state dict from NTKTracker.state_dict() (version 1), but got something else.")
        self._set_probe(state["x"], state["y"])
        self.train_size = int(state["train_size"])
        self._reset_reference()
        if state["K0"] is not None:
            self.K0 = state["K0"].to(self.storage_device)
            self.spectrum0 = Spectrum(state["eigenvalues0"], state["eigenvectors0"], M=self.M)
            self.f0 = state["f0"].to(self.storage_device)
            self.params0 = {k: v.to(self.storage_device) for k, v in state["params0"].items()}
            self.coefficients0 = self.spectrum0.project(self.target)
            self._set_estimator0()
            self._K_prev = None if state["K_prev"] is None else state["K_prev"].to(self.storage_device)
            self._step_prev = state["step_prev"]
        self.history = [Snapshot.from_dict(d) for d in state["history"]]


def _alignment(y: torch.Tensor, f: torch.Tensor) -> float:
    """``<yc, fc> / (||yc|| ||fc||)``, both centered over the probe; ``nan`` when either is constant."""
    yc = y - y.mean(dim=0, keepdim=True)
    fc = f.to(y.dtype) - f.to(y.dtype).mean(dim=0, keepdim=True)
    denominator = float(yc.norm() * fc.norm())
    return float((yc * fc).sum()) / denominator if denominator > 0 else math.nan


def predict_from_spectrum(
    spectrum: Spectrum, coefficients: torch.Tensor, n: int, *, ridge: float = 0.0, noise: float = 0.0
) -> tuple[theory.Prediction | None, str]:
    """The spectrum-only prediction (the policy before :class:`~ntkmonitor.ProbeEstimator`; kept for comparison).

    **Superseded**: the tracker, the callback and the CLI use :class:`~ntkmonitor.ProbeEstimator`, which is
    unbiased where this is not (``benchmarks/bench_prediction.py`` compares the two). This function treats the
    probe's eigenvalues and own-basis coefficients as the population's and gives the tail zero target power,
    which makes every resolved mode look learnable as ``n`` approaches ``M``.

    A probe of ``M`` points resolves only its top ``r <= M`` modes; the operator has infinitely many.
    Ignoring the rest overestimates learnability as ``n`` approaches ``r`` (every resolved mode looks
    learnable) and leaves the ridgeless equation for ``kappa`` without a solution for ``n >= r``. So the
    spectrum is always extended by :func:`~ntkmonitor.theory.extrapolate_tail` to ``TAIL_FACTOR * max(n, r)``
    modes with zero target power in the tail (for ``n << r`` this barely moves ``kappa``). If no power law
    can be fitted (too few or non-decaying eigenvalues), the probe's spectrum alone is used.

    Args:
        spectrum: the kernel's spectrum on the probe (``M`` points).
        coefficients: ``(r,)`` or ``(r, k)`` target coefficients in that eigenbasis (``spectrum.project(y)``).
        n: training-set size.
        ridge: ``delta >= 0``.
        noise: target-noise variance.

    Returns:
        ``(prediction, note)``: the :class:`~ntkmonitor.Prediction` (``None`` if no prediction is possible)
        and a note saying how it was obtained.

    Example:
        >>> spec = eigendecompose(torch.diag(40 * torch.arange(1.0, 41.0) ** -1.5))  # lambda_i = i^-1.5
        >>> y = torch.zeros(40, 1)
        >>> y[:3] = 1.0
        >>> small, note = predict_from_spectrum(spec, spec.project(y), n=10)
        >>> large, _ = predict_from_spectrum(spec, spec.project(y), n=100)  # n > 40 probe modes
        >>> 0 < small.learnability < large.learnability < 1, note[:26]
        (True, 'tail extrapolated: alpha=1')
    """
    positive = spectrum.eigenvalues > 0
    r = int(positive.sum())
    try:
        eigs, mult, fit = theory.extrapolate_tail(spectrum, TAIL_FACTOR * max(int(n), r))
    except InputError as err:
        try:
            prediction = theory.predict(spectrum.eigenvalues, coefficients, n, ridge=ridge, noise=noise)
        except NoSolutionError:
            return None, f"no solution: n={n} >= the probe's {r} modes and no power-law tail ({err})"
        return prediction, f"probe spectrum only (no power-law tail: {err})"
    values = coefficients[:, None] if coefficients.ndim == 1 else coefficients  # (r, k); 1-D targets too
    coeffs = torch.zeros(eigs.shape[0], values.shape[1], dtype=torch.float64)
    coeffs[:r] = values[positive].cpu()
    prediction = theory.predict(eigs, coeffs, n, ridge=ridge, noise=noise, multiplicities=mult)
    note = f"tail extrapolated: alpha={fit.alpha:.3f} (r2={fit.r2:.3f}) beyond the probe's {r} modes"
    return prediction, note
