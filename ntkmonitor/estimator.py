r"""Eigenlearning predictions at the real training-set size, from a finite probe: :class:`ProbeEstimator`.

The eigenlearning theory (:mod:`ntkmonitor.theory`) needs the kernel's *operator* eigenvalues and the
target's power per eigenmode. A probe of ``M`` points only samples them, while users train on ``n >> M``
points. Plugging the probe's own eigenvalues and coefficients into the theory is biased three ways: the
coefficients are measured in an eigenbasis fitted to the same points (inflating the top modes), the
target's power beyond the probe's resolution is lost, and the finite-sample eigenvalues are biased. This
module never uses the probe's eigenbasis as if it were the population's. It estimates the only functions
of the population that the theory needs, as functions of the effective regularization ``kappa``:

.. math::

    D_1(\kappa) = \sum_i \frac{\lambda_i}{\lambda_i + \kappa}, \qquad
    B(\kappa) = \sum_i \frac{\kappa}{\lambda_i + \kappa} v_i^2 + \epsilon^2,

whose ``kappa``-derivatives give ``D_2 = sum_i L_i^2 = D_1 + kappa D_1'`` and
``A_2 = sum_i (1 - L_i)^2 v_i^2 + eps^2 = B - kappa B'``. Then, with ``kappa`` solving
``D_1(kappa) + delta / kappa = n``,

.. math::

    \mathcal{L} = 1 - \frac{B(\kappa)}{\overline{y^2}}, \qquad
    \mathcal{E} = \frac{n}{n - D_2(\kappa)}\, A_2(\kappa).

**Deterministic equivalents.** On the probe, with ``K_M = K / M`` and a *sample* ridge ``l``,
``R = (K_M + l I)^{-1}``, the resolvent's traces and quadratic forms concentrate on population
quantities (Bach 2023, https://arxiv.org/abs/2303.01372; Misiakiewicz, Saeed 2024,
https://arxiv.org/abs/2403.08938; this is also what makes the GCV and KARE risk estimators work, Jacot et
al. 2020, https://arxiv.org/abs/2006.09796):

.. math::

    \frac{1}{M}\operatorname{tr} R \approx \frac{1}{\kappa}, \qquad
    \operatorname{tr}(K_M R) \approx D_1(\kappa), \qquad
    \frac{1}{M} y^\top R\, y \approx \frac{B(\kappa)}{\kappa},

so each ``l`` yields one point ``(kappa, D_1, B)`` of the population functions, derivatives included, with
no eigenbasis estimated. The target's power beyond the probe's resolution, label noise, and the
"smooth part plus ``c I``" structure of high-dimensional kernel matrices (El Karoui 2010,
https://arxiv.org/abs/1001.0492) are all inside these traces. ``l = 0`` reaches ``n = M``; *negative*
sample ridges ``-mu_min < l < 0`` continue the same equations to ``n`` of about ``1.5M - 2M`` (Kobak,
Lomond, Sanchez 2020, https://jmlr.org/papers/v21/19-844.html, on negative ridges), up to the edge
``l = -e mu_min`` for the edge fractions ``e`` in :data:`EDGES`.

**Beyond the probe's reach** the functions are continued as power laws from the edge, with the local
exponents there: ``D_1 ~ kappa^-s`` (an eigenvalue tail ``lambda_i ~ i^(-1/s)``) and, per output,
``B ~ kappa^g`` (target power decaying with the eigenvalues), the assumption of Simon et al. 2023
(https://arxiv.org/abs/2110.03922, "real data") and Bordelon, Canatar, Pehlevan 2020
(https://arxiv.org/abs/2002.02561). The point estimate is the mean over the edges in :data:`EDGES`.

**Intervals.** Each prediction carries a ``confidence`` interval made of three parts, added: the spread of
the tail models (the edges); the probe's sampling error, from ``resamples`` random sub-probes of
``SUBSAMPLE_FRACTION * M`` points, scaled by the delete-d jackknife factor ``sqrt(m / (M - m))``
(Shao, Wu 1989) and Student's ``t`` quantile for ``resamples - 1`` degrees of freedom; and the theory's own
finite-``n`` accuracy (:data:`THEORY_TOLERANCE`), widened to what a calibrating self-check on the probe
measures (kernel regression on subsets of the probe against the prediction). Test MSE and the complexity are
handled in log space.

**Finite-rank kernels** (fewer parameters than probe points): the probe shows ``r < M`` nonzero modes,
and for ``n >= r`` ridgeless regression is least squares on ``r`` features, so ``E = n / (n - r) * RSS /
(M - r)`` (the classical formula), which is the ``kappa -> 0`` limit of the same equations.

Assumptions (``docs/theory.md``): the probe points are a sample of the training distribution (held-out,
not training points); the probe labels carry the same noise as the training labels (noise is simply
power that is never learned); extrapolation beyond the reach assumes power-law tails; the predictions
describe kernel regression with the kernel given (the network in the lazy regime).

Example:
    >>> x = torch.randn(120, 5, dtype=torch.float64)
    >>> K = (x @ x.T / 5 + 1) ** 2 + torch.eye(120)  # smooth part plus c I
    >>> est = ProbeEstimator(K, torch.sin(x[:, 0]), resamples=4)
    >>> p = est.predict(4000)  # far beyond the probe's reach (est.reach): extrapolated, with an interval
    >>> p.regime, p.test_mse_interval[0] <= p.test_mse <= p.test_mse_interval[1]
    ('extrapolated', True)
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _checks
from .errors import InputError
from .spectrum import Spectrum, eigendecompose

__all__ = [
    "ProbeEstimator",
    "ProbePrediction",
    "SelfCheck",
    "predict_from_probe",
    "EDGES",
    "RESAMPLES",
    "SUBSAMPLE_FRACTION",
    "CONFIDENCE",
    "WIDE_LEARNABILITY",
    "WIDE_MSE_RATIO",
    "THEORY_TOLERANCE",
    "CALIBRATION_SPLITS",
]

EDGES: tuple[float, ...] = (0.8, 0.85, 0.9)
"""Edge fractions ``e``: the most negative sample ridge used is ``-e * mu_min`` (``mu_min`` the probe's smallest
operator eigenvalue). Larger edges reach further (``n`` up to about ``2M``) but are noisier; the prediction
averages the power-law continuations from these edges, and their spread is part of the interval."""

RESAMPLES = 8
"""Default number of random sub-probes for the sampling part of the interval."""

CALIBRATION_SPLITS = 4
"""Random splits per size of the self-check that calibrates the tolerance at construction."""

SUBSAMPLE_FRACTION = 0.8
"""Size of each sub-probe as a fraction of ``M`` (delete-d jackknife with ``d = 0.2 M``)."""

CONFIDENCE = 0.9
"""Default two-sided confidence of the intervals."""

THEORY_TOLERANCE: tuple[float, float] = (0.01, 0.05)
"""``(learnability, relative test MSE)`` added to each side of every interval: the eigenlearning theory's own
accuracy at finite ``n`` (exact only asymptotically; a few percent, Simon et al. 2021)."""

WIDE_LEARNABILITY = 0.1
"""A learnability interval wider than this is called wide (the note then suggests a probe size)."""

WIDE_MSE_RATIO = 2.0
"""A test-MSE interval whose upper/lower ratio exceeds this is called wide."""

_MIN_POINTS = 3

_MIN_NULL_MODES = 8
"""A probe kernel with at least ``max(8, M // 10)`` eigenvalues at round-off, below a gap of :data:`_RANK_GAP`, is
finite-rank (fewer features than points); otherwise such eigenvalues are the kernel's precision (e.g. a smooth
kernel in float32), and a floor ridge replaces them."""

_RANK_GAP = 1e3
"""The smallest eigenvalue above round-off must exceed the round-off level this many times for finite rank."""


# ---------------------------------------------------------------------------------------------------- resolvent
class _Resolvent:
    """The deterministic-equivalent functions of one probe's eigensystem, for sample ridges ``l``."""

    def __init__(self, mu: np.ndarray, z: np.ndarray, power: float, rtol: float) -> None:
        # mu (M,) operator eigenvalues >= 0; z (M, k) = (u_j^T y)^2; power = mean_j |y_j|^2 (summed over outputs)
        M = mu.shape[0]
        top = float(mu.max()) if M else 0.0
        zero = mu <= rtol * top
        self.mu = np.where(zero, 0.0, mu)
        self.zero = zero
        self.z = z
        self.M = M
        self.k = z.shape[1]
        self.power = power
        self.rank = int((~zero).sum())
        self.mu_min = float(self.mu[~zero].min()) if self.rank else 0.0
        # Eigenvalues at round-off are the kernel's precision, not its features: they get a floor ridge. Only many
        # of them below a clear gap (the smallest resolved eigenvalue far above round-off) mean a model with fewer
        # features than probe points: least squares beyond the rank.
        gap = self.mu_min > _RANK_GAP * rtol * top
        self.finite = gap and M - self.rank >= max(_MIN_NULL_MODES, M // 10)
        self.floor = rtol * top if self.rank < M else 0.0
        self.residual = z[zero].sum(axis=0) / (M - self.rank) if self.finite else np.zeros(self.k)
        self._edges: dict[float, tuple[np.ndarray, ...]] = {}

    def kappa_d1(self, lam: float) -> tuple[float, float]:
        """``(kappa, D1)`` at one sample ridge: the only two functions the ``kappa`` equation needs (fast path)."""
        r = 1.0 / (self.mu + lam)
        return self.M / float(r.sum()), float(self.mu @ r)  # kappa > 0: lam > 0 whenever a mode is zero

    def at_edge(self, edge: float) -> tuple[np.ndarray, ...]:
        """:meth:`at` the lowest sample ridge of ``edge``, cached (it does not depend on ``n`` or the ridge)."""
        if edge not in self._edges:
            self._edges[edge] = tuple(v[0] for v in self.at(np.array([self.lowest(edge)])))
        return self._edges[edge]

    def at(self, lam: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(kappa, D1, D2, B, A2)`` at sample ridges ``lam`` (G,); ``B``, ``A2`` are ``(G, k)``."""
        lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
        r = 1.0 / (self.mu[None, :] + lam[:, None])  # (G, M)
        r2 = r * r
        t = r.sum(axis=1) / self.M
        dt = -r2.sum(axis=1) / self.M
        D1 = (self.mu * r).sum(axis=1)
        dD1 = -(self.mu * r2).sum(axis=1)
        q = r @ self.z / self.M
        dq = -(r2 @ self.z) / self.M
        kappa = 1.0 / t
        dkappa = -dt / (t * t)  # d kappa / d lam > 0
        B = kappa[:, None] * q
        dB = (dkappa[:, None] * q + kappa[:, None] * dq) / dkappa[:, None]  # d B / d kappa
        D2 = D1 + kappa * dD1 / dkappa
        A2 = B - kappa[:, None] * dB
        return kappa, D1, D2, B, A2

    def lowest(self, edge: float) -> float:
        """The lowest usable sample ridge: ``-edge mu_min``; the floor ridge with round-off zeros; 0 if finite-rank."""
        if self.finite:
            return 0.0
        if self.rank < self.M:  # round-off eigenvalues: the floor ridge, raised 10x per 0.05 below the top edge
            return self.floor * 10.0 ** (20.0 * (max(EDGES) - edge))
        return -edge * self.mu_min

    def solve(self, n: float, ridge: float, edge: float) -> float | None:
        """The sample ridge ``l`` with ``D1 + ridge / kappa = n``, or ``None`` when ``n`` is beyond the reach."""
        lo = self.lowest(edge)
        top = max(float(self.mu.max()), 1e-300)

        def excess(lam: float) -> float:
            kappa, D1 = self.kappa_d1(lam)
            return D1 + (ridge / kappa if ridge > 0 else 0.0) - n

        if not self.finite:
            if excess(lo) < 0:
                return None
            small = 1e-15 * top
        else:  # the limit l -> 0+ has kappa -> 0: reachable exactly when a ridge is present or n < rank
            small = 1e-14 * top
            if excess(small) < 0:
                return None
        hi = top
        while excess(lo + hi) > 0:
            hi *= 10.0
            if hi > 1e300:
                return lo + hi
        a, b = math.log(small), math.log(hi)  # l = lo + exp(u): excess(a) >= 0 >= excess(b)
        for _ in range(64):  # brackets of width 2^-64 in log l
            u = 0.5 * (a + b)
            if excess(lo + math.exp(u)) > 0:
                a = u
            else:
                b = u
        return lo + math.exp(0.5 * (a + b))


@dataclass(frozen=True)
class _Point:
    """One prediction from one probe and one edge: the functions at the solved ``kappa``."""

    kappa: float
    D2: float
    B: np.ndarray  # (k,)
    A2: np.ndarray  # (k,)
    regime: str


def _point(res: _Resolvent, n: float, ridge: float, edge: float) -> _Point:
    lam = res.solve(n, ridge, edge)
    if lam is not None:
        kappa, D1, D2, B, A2 = res.at(np.array([lam]))
        return _Point(float(kappa[0]), float(D2[0]), B[0], A2[0], "resolved")
    if res.finite:  # ridgeless, n >= rank: least squares on the rank features
        return _Point(0.0, float(res.rank), res.residual, res.residual, "finite-rank")
    # power-law continuation from the edge
    kappa_e, D1_e, D2_e, B_e, A2_e = res.at_edge(edge)
    kappa_e, D1_e = float(kappa_e), float(D1_e)
    s = float(np.clip(1.0 - D2_e / D1_e, 0.05, 0.95))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.clip(np.where(B_e > 0, 1.0 - A2_e / B_e, 1.0), 0.0, 1.0)
    a, b = -800.0, 0.0  # x = kappa / kappa_e = exp(u); D1_e x^-s + ridge / (kappa_e x) decreases in u
    for _ in range(200):
        u = 0.5 * (a + b)
        x = math.exp(u)
        if D1_e * x ** (-s) + ridge / (kappa_e * x) > n:
            a = u
        else:
            b = u
    x = math.exp(0.5 * (a + b))
    D1 = D1_e * x ** (-s)
    B = B_e * x**g
    return _Point(kappa_e * x, (1.0 - s) * D1, B, (1.0 - g) * B, "extrapolated")


# ---------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class ProbePrediction:
    r"""The eigenlearning prediction for ``n`` training points, estimated from a probe, with intervals.

    See :class:`ProbeEstimator` for the method. Learnabilities and MSEs are means over the data
    distribution (of which the probe is a sample); the test MSE is against labels as noisy as the probe's.

    Attributes:
        n: training-set size.
        ridge: ridge ``delta`` (raw kernel units, ``K_DD + delta I``).
        noise: extra label-noise variance ``eps^2`` added to the training labels (beyond the probe's own).
        M: probe size.
        kappa: effective regularization ``kappa`` (0 in the finite-rank regime).
        learnability: ``1 - B(kappa) / mean(y^2)``.
        test_mse: ``E = n / (n - D_2) * (A_2 + eps^2)``, mean over outputs.
        train_mse: ``(delta / (n kappa))^2 E``.
        test_mse_per_output: ``(k,)`` float64.
        overfitting_coefficient: ``E0 = n / (n - D_2)``.
        complexity: ``sqrt(2 y^T K_DD^{-1} y / n)`` at this ``n``, estimated as ``sqrt(2 B / (kappa n))`` (the
            data-dependent complexity of Arora et al. 2019, https://arxiv.org/abs/1901.08584; ``inf`` when
            ``K_DD`` is singular).
        mode_learnability: ``(r,)`` float64, ``mu_i / (mu_i + kappa)`` for the probe's top ``r`` operator
            eigenvalues ``mu_i`` (descending).
        learnability_interval: ``(lower, upper)``.
        test_mse_interval: ``(lower, upper)``.
        complexity_interval: ``(lower, upper)``.
        mode_learnability_lower: ``(r,)``.
        mode_learnability_upper: ``(r,)``.
        regime: ``"resolved"`` (``n`` within the probe's reach), ``"extrapolated"`` (power-law tails beyond
            it) or ``"finite-rank"`` (ridgeless least squares on the kernel's few features).
        reach: the largest ``n`` (ridgeless) the probe resolves without extrapolation.
        wide: whether the interval is wide (see :data:`WIDE_LEARNABILITY`, :data:`WIDE_MSE_RATIO`).
        suggested_probe_size: when ``wide``, the probe size that would make it tight; else ``None``.
        note: the prediction in plain words: how it was obtained, and why the interval is wide.

    Example:
        >>> x = torch.randn(60, 3, dtype=torch.float64)
        >>> p = ProbeEstimator(torch.exp(-torch.cdist(x, x)), x[:, 0], resamples=2).predict(20)
        >>> lo, hi = p.learnability_interval
        >>> lo <= p.learnability <= hi, p.regime
        (True, 'resolved')
    """

    n: float
    ridge: float
    noise: float
    M: int
    kappa: float
    learnability: float
    test_mse: float
    train_mse: float
    test_mse_per_output: torch.Tensor
    overfitting_coefficient: float
    complexity: float
    mode_learnability: torch.Tensor
    learnability_interval: tuple[float, float]
    test_mse_interval: tuple[float, float]
    complexity_interval: tuple[float, float]
    mode_learnability_lower: torch.Tensor
    mode_learnability_upper: torch.Tensor
    regime: str
    reach: float
    wide: bool = False
    suggested_probe_size: int | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tensors become lists, tuples lists).

        Example:
            >>> import json
            >>> x = torch.randn(30, 2, dtype=torch.float64)
            >>> p = ProbeEstimator(torch.exp(-torch.cdist(x, x)), x[:, 0], resamples=2).predict(10)
            >>> isinstance(json.dumps(p.to_dict()), str)
            True
        """
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


@dataclass(frozen=True, eq=False)
class SelfCheck:
    r"""Kernel regression on the probe itself, against the prediction: a measured learning curve.

    For each size ``m`` of :attr:`sizes`, ``splits`` random subsets of ``m`` probe points are used as
    training sets (ridgeless kernel regression, or with the estimator's ridge) and the other ``M - m`` as
    test points.

    Attributes:
        sizes: ``(s,)`` training-set sizes ``m < M``.
        measured_learnability: ``(s,)`` mean over splits of ``<y_test, f_hat> / <y_test, y_test>``.
        measured_test_mse: ``(s,)`` mean over splits of ``mean (f_hat - y_test)^2``.
        predicted_learnability: ``(s,)`` the estimator's prediction at ``m``.
        predicted_test_mse: ``(s,)``.
        learnability_lower: ``(s,)``; ``learnability_upper``, ``test_mse_lower``, ``test_mse_upper`` likewise.
        learnability_upper: ``(s,)``.
        test_mse_lower: ``(s,)``.
        test_mse_upper: ``(s,)``.
        learnability_gap: ``mean_m |predicted - measured|`` learnability (0 = perfect).
        mse_ratio: geometric mean over ``m`` of predicted / measured test MSE (1 = perfect).
        coverage: fraction of sizes whose measured learnability and test MSE both lie in the intervals.
        splits: random splits per size.
        measured_learnability_se: ``(s,)`` standard error of the measured learnability over the splits.
        measured_log_test_mse_se: ``(s,)`` standard error of ``log`` of the measured test MSE over the splits.

    Example:
        >>> x = torch.randn(64, 3, dtype=torch.float64)
        >>> check = ProbeEstimator(torch.exp(-torch.cdist(x, x)), x[:, 0], resamples=2).self_check(splits=2)
        >>> check.sizes.tolist()
        [4, 8, 16, 32]
    """

    sizes: torch.Tensor
    measured_learnability: torch.Tensor
    measured_test_mse: torch.Tensor
    predicted_learnability: torch.Tensor
    predicted_test_mse: torch.Tensor
    learnability_lower: torch.Tensor
    learnability_upper: torch.Tensor
    test_mse_lower: torch.Tensor
    test_mse_upper: torch.Tensor
    learnability_gap: float
    mse_ratio: float
    coverage: float
    splits: int
    measured_learnability_se: torch.Tensor | None = None
    measured_log_test_mse_se: torch.Tensor | None = None

    def tolerance(self, base: tuple[float, float] = THEORY_TOLERANCE) -> tuple[float, float]:
        r"""The theory's accuracy as this check measured it, for :meth:`ProbeEstimator.with_tolerance`.

        ``(max(base_L, max_m |L_pred - L_meas| - 2 se_L), max(base_E, exp(max_m |log(E_pred / E_meas)| - 2 se) - 1))``
        over the sizes ``m >= max(8, M / 8)`` (smaller training sets are dominated by the theory's finite-``n``
        error): only a disagreement beyond twice the check's own standard error (over its random splits) counts.

        Args:
            base: the floor, :data:`THEORY_TOLERANCE` by default.

        Returns:
            ``(learnability, relative test MSE)``.

        Example:
            >>> x = torch.randn(128, 3, dtype=torch.float64)
            >>> check = ProbeEstimator(torch.exp(-torch.cdist(x, x)), x[:, 0], resamples=0).self_check(splits=2)
            >>> tol = check.tolerance()
            >>> tol[0] >= THEORY_TOLERANCE[0] and tol[1] >= THEORY_TOLERANCE[1]
            True
        """
        low_l, low_e = _tolerance(base)
        big = self.sizes >= max(8, int(self.sizes.max()) // 4)  # sizes are M/16 .. M/2 by default
        zero = torch.zeros_like(self.measured_test_mse)
        se_l = self.measured_learnability_se if self.measured_learnability_se is not None else zero
        se_e = self.measured_log_test_mse_se if self.measured_log_test_mse_se is not None else zero
        dl = ((self.predicted_learnability - self.measured_learnability).abs() - 2 * se_l)[big]
        de = ((self.predicted_test_mse / self.measured_test_mse).log().abs() - 2 * se_e)[big]
        dl, de = dl[torch.isfinite(dl)], de[torch.isfinite(de)]
        tol_l = max(low_l, float(dl.max())) if dl.numel() else low_l
        tol_e = max(low_e, math.expm1(float(de.max()))) if de.numel() else low_e
        return tol_l, tol_e

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tensors become lists).

        Example:
            >>> x = torch.randn(32, 2, dtype=torch.float64)
            >>> d = ProbeEstimator(torch.exp(-torch.cdist(x, x)), x[:, 0], resamples=2).self_check(splits=2).to_dict()
            >>> sorted(d)[:2]
            ['coverage', 'learnability_gap']
        """
        return {
            name: (value.tolist() if isinstance(value, torch.Tensor) else value)
            for name in self.__dataclass_fields__
            for value in (getattr(self, name),)
        }


# ---------------------------------------------------------------------------------------------------- estimator
class ProbeEstimator:
    r"""Configure once on a probe ``(K, y)``, then predict kernel regression at any training-set size ``n``.

    The method, its assumptions and sources are in the module docstring (:mod:`ntkmonitor.estimator`) and in
    ``docs/theory.md``: deterministic equivalents of the probe's resolvent with sample ridges down to
    ``-0.9 mu_min`` (no probe eigenbasis is trusted), power-law continuation beyond that reach, and intervals
    from the tail models' spread plus a delete-d jackknife over sub-probes.

    Cost: one ``eigh`` of ``K`` plus ``resamples`` of ``(0.8 M)``-point sub-kernels, and the calibrating
    self-check (16 kernel regressions on at most ``M/2`` points) at construction; each :meth:`predict` is ``O(M)``
    per bisection step (milliseconds).

    Args:
        K: ``(M, M)`` trace-mode kernel of the probe with itself (any float dtype; eigenvalues at most
            ``4 M eps(dtype) mu_max`` count as zero, so a float32 kernel of fewer features than points is finite-rank).
        y: ``(M,)`` or ``(M, k)`` targets on the probe (held-out points, labels as noisy as the training labels).
        spectrum: the complete :class:`~ntkmonitor.Spectrum` of ``K`` if already computed (saves one ``eigh``).
        resamples: sub-probes for the sampling part of the intervals (0: tail-model spread only).
        confidence: two-sided confidence of the intervals, in ``(0, 1)``.
        edges: edge fractions (see :data:`EDGES`).
        tolerance: ``(learnability, relative test MSE)`` added to each side of every interval: the theory's own
            accuracy (:data:`THEORY_TOLERANCE`), or a measured one (:meth:`SelfCheck.tolerance`,
            :meth:`with_tolerance`).
        calibrate: run :meth:`self_check` (``CALIBRATION_SPLITS`` splits) at construction and widen ``tolerance``
            to what it measures (:meth:`SelfCheck.tolerance`): where kernel regression on the probe itself departs
            from the theory, the intervals say so. Kept in :attr:`calibration`. Needs ``M >= 8``.
        seed: seed of the private generator that draws the sub-probes (the global RNG is never used).

    Raises:
        InputError: ``K`` not square and symmetric, non-finite, fewer than 3 points, ``y`` of the wrong shape,
            a partial ``spectrum``, or an option out of range.

    Example:
        >>> x = torch.randn(100, 4, dtype=torch.float64)
        >>> K = torch.exp(-torch.cdist(x, x) ** 2 / 4)
        >>> est = ProbeEstimator(K, torch.sign(x[:, 0]), resamples=4)
        >>> [round(est.predict(n).learnability, 2) <= 1 for n in (10, 100, 1000)]
        [True, True, True]
        >>> est.reach > 100  # negative sample ridges reach beyond M
        True
    """

    def __init__(
        self,
        K: torch.Tensor,
        y: torch.Tensor,
        *,
        spectrum: Spectrum | None = None,
        resamples: int = RESAMPLES,
        confidence: float = CONFIDENCE,
        edges: Sequence[float] = EDGES,
        tolerance: tuple[float, float] = THEORY_TOLERANCE,
        calibrate: bool = True,
        seed: int = 0,
    ) -> None:
        Kd, dtype = _checks.symmetric_matrix(K, "K")
        M = Kd.shape[0]
        if M < _MIN_POINTS:
            raise InputError(
                f"Expected a probe of at least {_MIN_POINTS} points to estimate predictions, but got {M}. Use a "
                "larger probe (probe_size=... / --probe-size)."
            )
        target, _ = _checks.targets(y, M, "y")
        if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0:
            raise InputError(f"Expected resamples to be an int >= 0, but got {resamples!r}.")
        confidence = _checks.real_number(confidence, "confidence", strict=True)
        if not confidence < 1:
            raise InputError(f"Expected confidence in (0, 1), but got {confidence!r}.")
        edges = tuple(float(e) for e in edges)
        if not edges or not all(0.0 <= e < 1.0 for e in edges):
            raise InputError(f"Expected edges to be fractions in [0, 1), but got {edges!r}.")
        self.tolerance = _tolerance(tolerance)
        if spectrum is not None and (not isinstance(spectrum, Spectrum) or not spectrum.complete or spectrum.M != M):
            got = (
                f"a Spectrum of rank {spectrum.rank} on {spectrum.M} points"
                if isinstance(spectrum, Spectrum)
                else (type(spectrum).__name__)
            )
            raise InputError(
                f"Expected spectrum to be the complete Spectrum of K (eigendecompose(K) without top_k), but got {got}."
            )
        self.M = M
        self.num_outputs = int(target.shape[1])
        self.confidence = confidence
        self.edges = edges
        self._rtol = M * float(torch.finfo(dtype).eps) * 4
        Kd, target = Kd.cpu(), target.cpu()
        K_in = _checks.as_tensor(K, "K").cpu()  # in its own dtype: eigendecompose judges round-off by it
        spec = spectrum if spectrum is not None else eigendecompose(K_in)
        self.eigenvalues = spec.eigenvalues.detach().to(torch.float64).cpu()
        if not bool((self.eigenvalues > 0).any()):
            raise InputError(
                f"Expected a kernel with a positive eigenvalue, but K is zero on all {M} probe points: no measured "
                "parameter moves the outputs there. Check the parameter selection (params=...)."
            )
        self._main = self._resolvent(spec, target)
        self._subs: list[tuple[_Resolvent, torch.Tensor]] = []
        m = int(round(SUBSAMPLE_FRACTION * M))
        if resamples > 0 and _MIN_POINTS <= m < M:
            generator = torch.Generator().manual_seed(int(seed))
            for _ in range(resamples):
                idx = torch.randperm(M, generator=generator)[:m]
                sub = eigendecompose(K_in[idx][:, idx])
                if bool((sub.eigenvalues > 0).any()):  # a sub-probe the kernel is zero on says nothing
                    self._subs.append((self._resolvent(sub, target[idx]), sub.eigenvalues))
        self._jackknife = math.sqrt(m / (M - m)) if self._subs else 0.0
        self._z = _t_quantile(0.5 + 0.5 * confidence, max(len(self._subs) - 1, 1))
        self._K, self._y = Kd, target
        self.calibration: SelfCheck | None = None
        if calibrate and M >= 8:
            self.calibration = self.self_check(splits=CALIBRATION_SPLITS, seed=seed)
            self.tolerance = self.calibration.tolerance(self.tolerance)

    def _resolvent(self, spec: Spectrum, target: torch.Tensor) -> _Resolvent:
        mu = spec.eigenvalues.detach().to(torch.float64).cpu().numpy()
        z = (spec.eigenvectors.detach().to(torch.float64).cpu().T @ target).pow(2).numpy()
        power = float(target.pow(2).sum(dim=1).mean())
        return _Resolvent(mu, z, power, self._rtol)

    # ------------------------------------------------------------------ properties
    @property
    def rank(self) -> int:
        """Number of probe eigenvalues above round-off (``M`` unless the kernel has fewer features than points)."""
        return self._main.rank

    @property
    def reach(self) -> float:
        """The largest ridgeless ``n`` resolved without extrapolation (about ``1.5 M - 2 M``; ``rank`` if singular)."""
        res = self._main
        if res.finite:
            return float(res.rank)
        return float(res.at_edge(min(self.edges))[1])

    # ------------------------------------------------------------------ prediction
    def _quantities(self, res: _Resolvent, n: float, ridge: float, noise: float) -> dict[str, Any]:
        points = [_point(res, n, ridge, e) for e in self.edges]
        k = res.k
        out: dict[str, Any] = {"regime": points[-1].regime if len({p.regime for p in points}) == 1 else "extrapolated"}
        per_edge = []
        for p in points:
            E0 = n / (n - p.D2) if n > p.D2 else math.inf
            E = E0 * (p.A2 + noise)  # (k,)
            learn = 1.0 - float(p.B.sum()) / res.power if res.power > 0 else math.nan
            Bsum = float(p.B.sum())
            if p.kappa > 0:
                complexity = math.sqrt(max(2.0 * Bsum / (p.kappa * n), 0.0))
            else:
                complexity = math.inf if Bsum > 0 else 0.0
            train = (ridge / (n * p.kappa)) ** 2 * E if p.kappa > 0 else np.zeros(k)
            per_edge.append((p.kappa, learn, E, E0, complexity, train))
        kappas = np.array([q[0] for q in per_edge])
        out["kappa_edges"] = kappas
        out["kappa"] = _geomean(kappas)
        out["learnability_edges"] = np.array([q[1] for q in per_edge])
        out["learnability"] = float(np.mean(out["learnability_edges"]))
        E = np.stack([q[2] for q in per_edge])  # (e, k)
        out["per_output"] = np.array([_geomean(E[:, a]) for a in range(k)])
        out["mse_edges"] = E.mean(axis=1)
        out["test_mse"] = _geomean(out["mse_edges"])
        out["E0"] = float(np.mean([q[3] for q in per_edge]))
        out["complexity_edges"] = np.array([q[4] for q in per_edge])
        out["complexity"] = _geomean(out["complexity_edges"])
        out["train_mse"] = _geomean(np.array([float(np.mean(q[5])) for q in per_edge]))
        return out

    def predict(self, n: float, *, ridge: float = 0.0, noise: float = 0.0) -> ProbePrediction:
        r"""The prediction for ``n`` training points, with intervals.

        Args:
            n: training-set size ``> 0`` (``n >> M`` is allowed: the interval says how sure it is).
            ridge: ``delta >= 0`` in raw kernel units (see :func:`~ntkmonitor.effective_ridge` for finite
                training time).
            noise: extra label-noise variance ``eps^2`` of the training labels beyond what the probe's labels
                carry (0 when the probe is labelled like the training set).

        Returns:
            A :class:`ProbePrediction`.

        Example:
            >>> x = torch.randn(80, 3, dtype=torch.float64)
            >>> est = ProbeEstimator(torch.exp(-torch.cdist(x, x)), x[:, 1], resamples=2)
            >>> est.predict(40).test_mse > est.predict(400).test_mse
            True
        """
        n = _checks.real_number(n, "n", strict=True)
        ridge = _checks.real_number(ridge, "ridge")
        noise = _checks.real_number(noise, "noise")
        main = self._quantities(self._main, n, ridge, noise)
        r = int(self.eigenvalues.shape[0])
        mu = self.eigenvalues.numpy()
        modes = _mode_learnability(mu, main["kappa"])
        # tail-model band (edges) and sampling error (jackknife over sub-probes)
        learn_band = (float(np.min(main["learnability_edges"])), float(np.max(main["learnability_edges"])))
        log_mse = np.log(np.maximum(main["mse_edges"], 1e-300))
        log_cx = np.log(np.maximum(main["complexity_edges"], 1e-300))
        sd_learn = sd_mse = sd_cx = 0.0
        sd_modes = np.zeros(r)
        if self._subs:
            subs = [(self._quantities(res, n, ridge, noise), eig) for res, eig in self._subs]
            sd_learn = self._spread([q["learnability"] for q, _ in subs])
            sd_mse = self._spread([math.log(max(q["test_mse"], 1e-300)) for q, _ in subs])
            sd_cx = self._spread([math.log(max(q["complexity"], 1e-300)) for q, _ in subs])
            rows = []
            for q, eig in subs:
                e = eig.numpy()
                e = np.concatenate([e, np.zeros(max(r - e.shape[0], 0))])[:r]
                rows.append(_mode_learnability(e, q["kappa"]))
            sd_modes = self._jackknife * np.std(np.stack(rows), axis=0)
        z = self._z
        tol_l, tol_e = self.tolerance
        tol_e = math.log1p(tol_e)
        learn_iv = (max(learn_band[0] - z * sd_learn - tol_l, 0.0), min(learn_band[1] + z * sd_learn + tol_l, 1.0))
        mse_iv = (_exp(log_mse.min() - z * sd_mse - tol_e), _exp(log_mse.max() + z * sd_mse + tol_e))
        cx_iv = (_exp(log_cx.min() - z * sd_cx - tol_e), _exp(log_cx.max() + z * sd_cx + tol_e))
        kappa_lo, kappa_hi = float(main["kappa_edges"].min()), float(main["kappa_edges"].max())
        modes_lo = np.clip(np.minimum(_mode_learnability(mu, kappa_hi), modes) - z * sd_modes, 0.0, 1.0)
        modes_hi = np.clip(np.maximum(_mode_learnability(mu, kappa_lo), modes) + z * sd_modes, 0.0, 1.0)
        reach = self.reach
        wide = (learn_iv[1] - learn_iv[0] > WIDE_LEARNABILITY) or (
            mse_iv[0] > 0 and mse_iv[1] / mse_iv[0] > WIDE_MSE_RATIO
        )
        suggested = self._suggest(n, reach, learn_iv, mse_iv) if wide else None
        learnability = min(max(main["learnability"], 0.0), 1.0) if math.isfinite(main["learnability"]) else math.nan
        note = self._note(n, main["regime"], reach, wide, suggested)
        return ProbePrediction(
            n=n,
            ridge=ridge,
            noise=noise,
            M=self.M,
            kappa=main["kappa"],
            learnability=learnability,
            test_mse=main["test_mse"],
            train_mse=main["train_mse"],
            test_mse_per_output=torch.as_tensor(main["per_output"], dtype=torch.float64),
            overfitting_coefficient=main["E0"],
            complexity=main["complexity"],
            mode_learnability=torch.as_tensor(modes, dtype=torch.float64),
            learnability_interval=(min(learn_iv[0], learnability), max(learn_iv[1], learnability)),
            test_mse_interval=(min(mse_iv[0], main["test_mse"]), max(mse_iv[1], main["test_mse"])),
            complexity_interval=(min(cx_iv[0], main["complexity"]), max(cx_iv[1], main["complexity"])),
            mode_learnability_lower=torch.as_tensor(modes_lo, dtype=torch.float64),
            mode_learnability_upper=torch.as_tensor(modes_hi, dtype=torch.float64),
            regime=main["regime"],
            reach=reach,
            wide=wide,
            suggested_probe_size=suggested,
            note=note,
        )

    def learning_curve(
        self, sizes: Sequence[float], *, ridge: float = 0.0, noise: float = 0.0
    ) -> list[ProbePrediction]:
        """:meth:`predict` at each training-set size.

        Args:
            sizes: training-set sizes.
            ridge: as in :meth:`predict`.
            noise: as in :meth:`predict`.

        Returns:
            One :class:`ProbePrediction` per size.

        Example:
            >>> x = torch.randn(40, 2, dtype=torch.float64)
            >>> curve = ProbeEstimator(torch.exp(-torch.cdist(x, x)), x[:, 0], resamples=0).learning_curve([5, 50])
            >>> curve[0].test_mse > curve[1].test_mse
            True
        """
        return [self.predict(n, ridge=ridge, noise=noise) for n in sizes]

    def with_tolerance(self, tolerance: tuple[float, float]) -> ProbeEstimator:
        """The same estimator (sharing its eigendecompositions) with another ``tolerance``.

        Args:
            tolerance: ``(learnability, relative test MSE)``, e.g. ``self.self_check().tolerance()``: widen the
                intervals by what kernel regression on the probe itself shows the theory to miss.

        Returns:
            A new :class:`ProbeEstimator`; this one is unchanged.

        Example:
            >>> x = torch.randn(64, 3, dtype=torch.float64)
            >>> est = ProbeEstimator(torch.exp(-torch.cdist(x, x)), x[:, 0], resamples=2)
            >>> wider = est.with_tolerance((0.1, 1.0))
            >>> wider.predict(32).learnability_interval[1] - wider.predict(32).learnability_interval[0] > 0.2
            True
        """
        other = copy.copy(self)
        other.tolerance = _tolerance(tolerance)
        return other

    def _spread(self, values: Sequence[float]) -> float:
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        return float(self._jackknife * arr.std()) if arr.size > 1 else 0.0

    def _suggest(self, n: float, reach: float, learn_iv: tuple[float, float], mse_iv: tuple[float, float]) -> int:
        """A probe size that would resolve ``n`` and shrink the sampling width to the 'tight' thresholds."""
        factor = max(n / reach, 1.0) if reach > 0 else 1.0
        width = learn_iv[1] - learn_iv[0]
        if math.isfinite(width):
            factor = max(factor, (width / WIDE_LEARNABILITY) ** 2)
        if mse_iv[0] > 0 and math.isfinite(mse_iv[1]):
            log_ratio = math.log(mse_iv[1]) - math.log(mse_iv[0])
            factor = max(factor, (log_ratio / math.log(WIDE_MSE_RATIO)) ** 2)
        factor = min(factor, _MAX_SUGGESTED / self.M)
        return int(math.ceil(self.M * factor / 64.0) * 64)

    def _note(self, n: float, regime: str, reach: float, wide: bool, suggested: int | None) -> str:
        M = self.M
        if regime == "resolved":
            text = f"n={n:g} is within what the {M}-point probe resolves (up to n~{reach:.0f}): no extrapolation"
        elif regime == "finite-rank":
            text = (
                f"the kernel has only {self.rank} features on the {M}-point probe, so n={n:g} >= {self.rank} is "
                "least squares on them"
            )
        else:
            text = (
                f"n={n:g} is {n / reach:.1f}x beyond what the {M}-point probe resolves (n~{reach:.0f}); "
                "the prediction continues the probe's power laws"
            )
        if wide and suggested is not None:
            more = "more than " if suggested >= _MAX_SUGGESTED else "about "
            text += f"; the interval is wide: a probe of {more}{suggested} points would make it tight"
        lo, hi = THEORY_TOLERANCE
        if self.tolerance[0] > 2 * lo or self.tolerance[1] > 2 * hi:
            text += (
                f"; kernel regression on the probe itself departs from the theory (by up to "
                f"{self.tolerance[0]:.2g} in learnability and {1 + self.tolerance[1]:.2g}x in test MSE), and the "
                "interval is widened by that much"
            )
        return text

    # ------------------------------------------------------------------ self-check
    def self_check(
        self, sizes: Sequence[int] | None = None, *, splits: int = 8, ridge: float = 0.0, seed: int = 0
    ) -> SelfCheck:
        r"""Kernel regression on random subsets of the probe, tested on the rest, against :meth:`predict`.

        A measured learning curve of this very kernel on this very data, up to ``m = M / 2``: where the
        predictions disagree with it, they cannot be trusted at the real ``n`` either.

        Args:
            sizes: training sizes ``2 <= m <= M - 2``; default ``M/16, M/8, M/4, M/2`` (those ``>= 2``).
            splits: random splits per size (``>= 1``).
            ridge: ridge of the regressions and the predictions.
            seed: seed of the private generator that draws the splits.

        Returns:
            A :class:`SelfCheck`.

        Example:
            >>> x = torch.randn(128, 4, dtype=torch.float64)
            >>> check = ProbeEstimator(torch.exp(-torch.cdist(x, x)), torch.sin(x[:, 0]), resamples=0).self_check()
            >>> check.learnability_gap < 0.1
            True
        """
        M = self.M
        if sizes is None:
            sizes = sorted({m for m in (M // 16, M // 8, M // 4, M // 2) if m >= 2})
        sizes = [int(_checks.positive_int(m, "sizes")) for m in sizes]
        if not sizes or any(not 2 <= m <= M - 2 for m in sizes):
            raise InputError(f"Expected self-check sizes in [2, {M - 2}] for a {M}-point probe, but got {sizes}.")
        splits = _checks.positive_int(splits, "splits")
        ridge = _checks.real_number(ridge, "ridge")
        generator = torch.Generator().manual_seed(int(seed))
        K, y = self._K, self._y
        meas_l, meas_e, se_l, se_e, preds = [], [], [], [], []
        for m in sizes:
            ls, es = [], []
            for _ in range(splits):
                perm = torch.randperm(M, generator=generator)
                tr, te = perm[:m], perm[m:]
                A = K[tr][:, tr] + ridge * torch.eye(m, dtype=K.dtype)
                f_hat = K[te][:, tr] @ _psd_solve(A, y[tr])
                yt = y[te]
                power = float(yt.pow(2).sum())
                ls.append(float((yt * f_hat).sum()) / power if power > 0 else math.nan)
                es.append(float((f_hat - yt).pow(2).mean()))
            finite = np.array([v for v in ls if math.isfinite(v)])
            meas_l.append(float(finite.mean()) if finite.size else math.nan)
            meas_e.append(float(np.mean(es)))
            # standard errors over the splits (the check's own noise; log scale for the MSE)
            se_l.append(float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else 0.0)
            logs_e = np.log(np.maximum(np.array(es), 1e-300))
            se_e.append(float(logs_e.std(ddof=1) / math.sqrt(len(es))) if len(es) > 1 else 0.0)
            preds.append(self.predict(m, ridge=ridge))
        pl = np.array([p.learnability for p in preds])
        pe = np.array([p.test_mse for p in preds])
        ml, me = np.array(meas_l), np.array(meas_e)
        ll = np.array([p.learnability_interval[0] for p in preds])
        lu = np.array([p.learnability_interval[1] for p in preds])
        el = np.array([p.test_mse_interval[0] for p in preds])
        eu = np.array([p.test_mse_interval[1] for p in preds])
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(pe / me)
        logs = logs[np.isfinite(logs)]
        ratio = float(np.exp(logs.mean())) if logs.size else math.nan
        gaps = np.abs(pl - ml)
        gaps = gaps[np.isfinite(gaps)]
        covered = (ml >= ll) & (ml <= lu) & (me >= el) & (me <= eu)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float64)

        return SelfCheck(
            sizes=torch.as_tensor(sizes),
            measured_learnability=t(ml),
            measured_test_mse=t(me),
            predicted_learnability=t(pl),
            predicted_test_mse=t(pe),
            learnability_lower=t(ll),
            learnability_upper=t(lu),
            test_mse_lower=t(el),
            test_mse_upper=t(eu),
            learnability_gap=float(gaps.mean()) if gaps.size else math.nan,
            mse_ratio=ratio,
            coverage=float(covered.mean()),
            splits=splits,
            measured_learnability_se=t(np.array(se_l)),
            measured_log_test_mse_se=t(np.array(se_e)),
        )


_MAX_SUGGESTED = 1_000_000
"""Suggested probe sizes are capped here (the note then says "more than")."""


def _tolerance(value: Any) -> tuple[float, float]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise InputError(f"Expected tolerance to be a pair (learnability, relative test MSE), but got {value!r}.")
    return (_checks.real_number(value[0], "tolerance[0]"), _checks.real_number(value[1], "tolerance[1]"))


def _exp(value: float) -> float:
    """``exp`` that saturates (0 or ``inf``) instead of raising on overflow."""
    return math.exp(min(max(value, -745.0), 709.0)) if math.isfinite(value) else (math.inf if value > 0 else 0.0)


def _t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal; accurate to ~1e-3 for dof >= 3)."""
    z = statistics.NormalDist().inv_cdf(p)
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def _geomean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan
    if np.any(np.isinf(values)):
        return math.inf
    if np.any(values <= 0):
        return float(np.mean(values))
    return float(np.exp(np.mean(np.log(values))))


def _mode_learnability(mu: np.ndarray, kappa: float) -> np.ndarray:
    if kappa <= 0:
        return np.where(mu > 0, 1.0, 0.0)
    return mu / (mu + kappa)


def _psd_solve(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A^{-1} b`` for a symmetric PSD ``A``: Cholesky, else the minimum-norm least-squares solution."""
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(b, L)
    return torch.linalg.lstsq(A, b, driver="gelsd").solution


def predict_from_probe(
    K: torch.Tensor,
    y: torch.Tensor,
    n: float,
    *,
    ridge: float = 0.0,
    noise: float = 0.0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> ProbePrediction:
    """One-shot :class:`ProbeEstimator` ``(K, y)`` then :meth:`~ProbeEstimator.predict` ``(n)``.

    Args:
        K: ``(M, M)`` trace-mode kernel of the probe.
        y: ``(M,)`` or ``(M, k)`` probe targets.
        n: training-set size.
        ridge: ridge ``delta``.
        noise: extra training-label noise variance.
        resamples: sub-probes for the interval.
        confidence: confidence of the interval.

    Returns:
        A :class:`ProbePrediction`.

    Example:
        >>> x = torch.randn(50, 2, dtype=torch.float64)
        >>> predict_from_probe(torch.exp(-torch.cdist(x, x)), x[:, 0], 25, resamples=2).regime
        'resolved'
    """
    return ProbeEstimator(K, y, resamples=resamples, confidence=confidence).predict(n, ridge=ridge, noise=noise)
