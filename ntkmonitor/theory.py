r"""Eigenlearning: predicted generalization of kernel regression from the kernel's eigensystem.

Kernel (ridge) regression with kernel ``K`` on ``n`` samples learns
``f_hat(x) = K(x, D) (K(D, D) + delta I)^{-1} y(D)``; an infinitely wide network trained to convergence
with MSE loss does the same with its NTK. Given the kernel's operator eigenvalues ``lambda_i`` and the
target's coefficients ``v_i`` (see :mod:`ntkmonitor.spectrum`), the eigenlearning theory predicts the
first- and second-order statistics of ``f_hat`` over random training sets:

.. math::

    \sum_i \frac{\lambda_i}{\lambda_i + \kappa} + \frac{\delta}{\kappa} = n, \qquad
    \mathcal{L}_i = \frac{\lambda_i}{\lambda_i + \kappa}, \qquad
    \mathcal{E}_0 = \frac{n}{n - \sum_i \mathcal{L}_i^2}, \qquad
    \mathcal{E} = \mathcal{E}_0 \Big(\sum_i (1 - \mathcal{L}_i)^2 v_i^2 + \epsilon^2\Big).

Sources: Simon, Dickens, DeWeese, "The Eigenlearning Framework" (https://arxiv.org/abs/2110.03922);
Bordelon, Canatar, Pehlevan 2020, "Spectrum dependent learning curves in kernel regression and wide
neural networks" (https://arxiv.org/abs/2002.02561); Canatar, Bordelon, Pehlevan 2021
(https://arxiv.org/abs/2006.13198). The predictions are exact in expectation only asymptotically (many
modes, large ``n``); at small sizes expect a few percent of deviation.

This module also measures the corresponding quantities (learnability of a learned function, per-mode
learnability, kernel regression, the conservation law) so that theory and measurement share one
convention. Everything is computed in float64.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from . import _checks
from .errors import InputError, NoSolutionError, NTKMonitorWarning
from .spectrum import PowerLawFit, Spectrum

__all__ = [
    "solve_kappa",
    "predict",
    "Prediction",
    "effective_ridge",
    "extrapolate_tail",
    "learnability",
    "mode_learnability",
    "ModeLearnability",
    "kernel_regression",
    "conservation_check",
    "ConservationCheck",
    "weight_distance",
]


# ---------------------------------------------------------------------------------------------------- inputs
def _spectrum_arrays(eigenvalues: Any, multiplicities: Any) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and multiplicities as validated float64 numpy arrays of one length."""
    if isinstance(eigenvalues, Spectrum):
        eigenvalues = eigenvalues.eigenvalues
    lam = _checks.float64(eigenvalues, "eigenvalues")
    if lam.ndim != 1 or lam.numel() == 0:
        raise InputError(
            f"Expected eigenvalues to be a non-empty 1-D tensor (r,), but got shape {tuple(lam.shape)}. "
            "Pass spectrum.eigenvalues from eigendecompose(K)."
        )
    if bool((lam < 0).any()):
        raise InputError(
            f"Expected non-negative eigenvalues, but got a minimum of {float(lam.min()):.3g}. Kernel eigenvalues "
            "of a PSD kernel are >= 0; eigendecompose(K) clips round-off negatives."
        )
    if multiplicities is None:
        m = torch.ones_like(lam)
    else:
        m = _checks.float64(multiplicities, "multiplicities")
        if m.shape != lam.shape:
            raise InputError(
                f"Expected multiplicities to have the shape of eigenvalues {tuple(lam.shape)}, but got "
                f"{tuple(m.shape)}. Pass one multiplicity per distinct eigenvalue."
            )
        if bool((m < 0).any()):
            raise InputError(f"Expected non-negative multiplicities, but got a minimum of {float(m.min()):.3g}.")
    return lam.cpu().numpy(), m.cpu().numpy()


def _coefficients(coefficients: Any, r: int) -> tuple[torch.Tensor, bool]:
    """Target coefficients as float64 ``(r, k)`` and whether they were 1-D."""
    return _checks.targets(coefficients, r, "coefficients", what="eigenvalue")


# ---------------------------------------------------------------------------------------------------- kappa
def solve_kappa(
    eigenvalues: torch.Tensor | Spectrum,
    n: float,
    *,
    ridge: float = 0.0,
    multiplicities: torch.Tensor | None = None,
) -> float:
    r"""The effective regularization ``kappa > 0`` of the eigenlearning theory.

    Solves

    .. math::

        \sum_i m_i \frac{\lambda_i}{\lambda_i + \kappa} + \frac{\delta}{\kappa} = n

    (Simon, Dickens, DeWeese 2021, https://arxiv.org/abs/2110.03922, eq. for the "effective
    regularization"; Bordelon, Canatar, Pehlevan 2020, https://arxiv.org/abs/2002.02561). The left side
    decreases strictly in ``kappa``; the root is bracketed analytically (``kappa <= (sum m lambda + delta) / n``;
    ``kappa >= delta / n``, and ``kappa >= c * lambda_min`` when ``delta = 0``) and found by Newton's method
    in ``log kappa`` safeguarded by bisection, in float64, to relative precision ~1e-15. Terms with
    ``lambda_i >= kappa`` are evaluated as ``1 - kappa / (lambda_i + kappa)`` to avoid cancellation, so
    ridges from 1e-15 to 1e10 and spectra spanning many orders of magnitude are handled.

    Args:
        eigenvalues: ``(r,)`` operator eigenvalues ``lambda_i >= 0`` (``eig(K) / M``), or a :class:`Spectrum`.
        n: training-set size, ``> 0`` (a float is accepted).
        ridge: ``delta >= 0`` in raw kernel units, as in ``K_DD + delta I``.
        multiplicities: ``(r,)`` multiplicities ``m_i >= 0`` of the eigenvalues (e.g. ``C(d, k)`` for
            degree-``k`` parities on the boolean cube); ``None`` for all ones.

    Returns:
        ``kappa`` as a Python float.

    Raises:
        NoSolutionError: ``ridge = 0`` and ``n >=`` the number of nonzero modes (counting multiplicities),
            or all eigenvalues are zero without a ridge.
        InputError: negative / non-finite eigenvalues, ``n <= 0``, negative ridge, shape mismatch.

    Example:
        >>> kappa = solve_kappa(torch.tensor([1.0, 0.5, 0.25, 0.125]), n=2)
        >>> lam = torch.tensor([1.0, 0.5, 0.25, 0.125], dtype=torch.float64)
        >>> round(float((lam / (lam + kappa)).sum()), 12)
        2.0
    """
    lam, m = _spectrum_arrays(eigenvalues, multiplicities)
    n = _checks.real_number(n, "n", strict=True)
    ridge = _checks.real_number(ridge, "ridge")
    keep = (lam > 0) & (m > 0)
    lam, m = lam[keep], m[keep]
    num_modes = float(m.sum())
    if ridge == 0.0 and n >= num_modes:
        raise NoSolutionError(
            f"Expected fewer training points than nonzero kernel modes when ridge=0, but got n={n:g} with only "
            f"{num_modes:g} nonzero modes (counting multiplicities): sum_i lambda_i/(lambda_i + kappa) < "
            f"{num_modes:g} <= n for every kappa > 0, so the eigenlearning equation has no solution. Fixes: use more "
            "probe points than training points (M > n), pass a ridge > 0 (e.g. effective_ridge(n, lr, steps) for "
            "finite training time), or extrapolate the spectrum's tail (Spectrum.power_law_fit)."
        )
    total = float((m * lam).sum())
    hi = (total + ridge) / n  # g(hi) <= 0
    lo_candidates = []
    if ridge > 0:
        lo_candidates.append(ridge / n)  # ridge/kappa = n there, so g >= 0
    if num_modes > n:
        lo_candidates.append(0.5 * (num_modes / n - 1.0) * float(lam.min()))  # sum > num_modes / (1 + c) > n
    lo = max(min(max(lo_candidates), hi), sys.float_info.min)  # a root below the smallest normal float is moot

    def g_kappa(kappa: float) -> tuple[float, float]:
        """The residual ``sum - n`` at ``kappa`` and its derivative with respect to ``log kappa``."""
        learn, rest = lam / (lam + kappa), kappa / (lam + kappa)
        big = lam >= kappa
        value = (float(m[big].sum()) - n) - float((m[big] * rest[big]).sum())
        value += float((m[~big] * learn[~big]).sum()) + ridge / kappa
        slope = -float((m * learn * rest).sum()) - ridge / kappa
        return value, slope

    def g(log_kappa: float) -> tuple[float, float]:
        return g_kappa(math.exp(log_kappa))

    a, b = math.log(lo), math.log(hi)  # g(a) >= 0 >= g(b)
    s = 0.5 * (a + b)
    last_step = b - a
    for _ in range(300):
        value, slope = g(s)
        if value == 0.0:
            break
        if value > 0:
            a = s
        else:
            b = s
        if b - a <= 1e-15 * max(1.0, abs(s)):
            break
        newton = s - value / slope if slope < 0 else math.nan
        # Newton when it stays strictly inside the bracket and shrinks fast enough, else bisection.
        if a < newton < b and abs(newton - s) < 0.5 * last_step:
            last_step, s = abs(newton - s), newton
            if last_step <= 1e-16 * max(1.0, abs(s)):
                break
        else:
            last_step, s = 0.5 * (b - a), 0.5 * (a + b)
    # Polish in kappa itself: log space resolves kappa only to ~eps * |log kappa| relative.
    kappa = math.exp(s)
    value, slope = g_kappa(kappa)
    for _ in range(3):
        if value == 0.0 or slope >= 0:
            break
        candidate = kappa - value * kappa / slope
        if not candidate > 0:
            break
        new_value, new_slope = g_kappa(candidate)
        if abs(new_value) >= abs(value):
            break
        kappa, value, slope = candidate, new_value, new_slope
    return kappa


# ---------------------------------------------------------------------------------------------------- predict
@dataclass(frozen=True, eq=False)
class Prediction:
    r"""What the eigenlearning theory predicts for kernel regression on ``n`` random samples.

    See :func:`predict` for the formulas (Simon, Dickens, DeWeese 2021, https://arxiv.org/abs/2110.03922).

    Attributes:
        kappa: effective regularization ``kappa``.
        n: training-set size.
        ridge: ridge ``delta``.
        noise: target-noise variance ``eps^2`` (per output).
        mode_learnability: ``(r,)`` float64, ``L_i = lambda_i / (lambda_i + kappa)``.
        learnability: target learnability ``sum_i L_i v_i^2 / sum_i v_i^2`` (summed over outputs);
            ``nan`` for an all-zero target.
        overfitting_coefficient: ``E0 = n / (n - sum_i m_i L_i^2)``.
        test_mse: predicted test MSE ``E`` (includes ``eps^2``), mean over outputs.
        train_mse: predicted train MSE ``(delta / (n kappa))^2 E``, mean over outputs.
        test_mse_per_output: ``(k,)`` float64, ``E`` per output (``(1,)`` for a 1-D target).
        coefficient_mean: like the coefficients ``(r,)``/``(r, k)``: ``E[v_hat_i] = L_i v_i``.
        coefficient_std: like the coefficients: ``sqrt(Var[v_hat_i]) = sqrt(L_i^2 E / n)`` (``E`` of each output).

    Example:
        >>> p = predict(torch.tensor([1.0, 0.1, 0.01]), torch.tensor([1.0, 0.0, 0.0]), n=1)
        >>> sorted(p.to_dict())[:3]
        ['coefficient_mean', 'coefficient_std', 'kappa']
    """

    kappa: float
    n: float
    ridge: float
    noise: float
    mode_learnability: torch.Tensor
    learnability: float
    overfitting_coefficient: float
    test_mse: float
    train_mse: float
    test_mse_per_output: torch.Tensor
    coefficient_mean: torch.Tensor
    coefficient_std: torch.Tensor

    def to_dict(self) -> dict[str, float | list]:
        """A JSON-friendly dict: floats stay floats, tensors become (nested) lists.

        Example:
            >>> import json
            >>> p = predict(torch.tensor([1.0, 0.1]), torch.tensor([1.0, 1.0]), n=1)
            >>> isinstance(json.dumps(p.to_dict()), str)
            True
        """
        out: dict[str, float | list] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.detach().cpu().tolist() if isinstance(value, torch.Tensor) else float(value)
        return out


def predict(
    eigenvalues: torch.Tensor | Spectrum,
    coefficients: torch.Tensor,
    n: float,
    *,
    ridge: float = 0.0,
    noise: float = 0.0,
    multiplicities: torch.Tensor | None = None,
) -> Prediction:
    r"""Predicted learnability, test and train MSE of kernel regression on ``n`` random samples.

    .. math::

        \mathcal{L}_i = \frac{\lambda_i}{\lambda_i + \kappa}, \quad
        \mathcal{L}(f) = \frac{\sum_i \mathcal{L}_i v_i^2}{\sum_i v_i^2}, \quad
        \mathcal{E}_0 = \frac{n}{n - \sum_i m_i \mathcal{L}_i^2}, \quad
        \mathcal{E} = \mathcal{E}_0 \Big(\sum_i (1 - \mathcal{L}_i)^2 v_i^2 + \epsilon^2\Big), \quad
        \mathcal{E}_{train} = \Big(\frac{\delta}{n \kappa}\Big)^2 \mathcal{E},

    ``E[v_hat_i] = L_i v_i`` and ``Var[v_hat_i] = L_i^2 E / n`` (Simon, Dickens, DeWeese 2021,
    https://arxiv.org/abs/2110.03922; the MSE agrees with Bordelon, Canatar, Pehlevan 2020,
    https://arxiv.org/abs/2002.02561), with ``kappa`` from :func:`solve_kappa`. The test MSE is measured
    against noisy targets ``y = f + noise`` with noise variance ``eps^2``; against the clean target
    subtract ``eps^2``.

    **Multiplicities.** With ``multiplicities``, ``eigenvalues[i]`` stands for ``m_i`` degenerate modes
    and ``coefficients[i]`` for the root-sum-square of the target's coefficients over those modes (its
    total power in the eigenspace is ``coefficients[i]^2``).

    **Multi-output** targets ``(r, k)``: each output is predicted separately with the same ``kappa``;
    ``learnability`` sums numerators and denominators over outputs, the MSEs are means over outputs.

    Args:
        eigenvalues: ``(r,)`` operator eigenvalues (``Spectrum.eigenvalues``), or a :class:`Spectrum`.
        coefficients: ``(r,)`` or ``(r, k)`` target coefficients ``v_i`` (``Spectrum.project(y)``).
        n: training-set size.
        ridge: ``delta >= 0`` (raw kernel units, ``K_DD + delta I``); see :func:`effective_ridge` for
            finite training time.
        noise: target-noise variance ``eps^2 >= 0`` per output.
        multiplicities: ``(r,)`` multiplicities of the eigenvalues, or ``None``.

    Returns:
        A :class:`Prediction`.

    Raises:
        NoSolutionError: see :func:`solve_kappa`.
        InputError: bad shapes or values.

    Example:
        >>> lam = torch.tensor([0.5, 0.25, 0.125, 0.0625])
        >>> p = predict(lam, torch.tensor([1.0, 0.0, 0.0, 0.0]), n=2)
        >>> 0 < p.learnability < 1 and p.test_mse > 0
        True
    """
    lam_np, m_np = _spectrum_arrays(eigenvalues, multiplicities)
    r = lam_np.shape[0]
    v, flat = _coefficients(coefficients, r)
    noise = _checks.real_number(noise, "noise")
    kappa = solve_kappa(lam_np, n, ridge=ridge, multiplicities=m_np)
    n = float(n)
    ridge = float(ridge)
    device = v.device
    lam = torch.as_tensor(lam_np, device=device)
    m = torch.as_tensor(m_np, device=device)
    L = lam / (lam + kappa)
    E0 = n / (n - float((m * L.pow(2)).sum()))
    power = v.pow(2)  # (r, k)
    numerator = float((L[:, None] * power).sum())
    denominator = float(power.sum())
    learn = numerator / denominator if denominator > 0 else math.nan
    E = E0 * (((1.0 - L)[:, None].pow(2) * power).sum(dim=0) + noise)  # (k,)
    train = (ridge / (n * kappa)) ** 2 * E
    mean = L[:, None] * v
    std = torch.sqrt(L[:, None].pow(2) * E[None, :] / n)
    return Prediction(
        kappa=kappa,
        n=n,
        ridge=ridge,
        noise=noise,
        mode_learnability=L,
        learnability=learn,
        overfitting_coefficient=E0,
        test_mse=float(E.mean()),
        train_mse=float(train.mean()),
        test_mse_per_output=E,
        coefficient_mean=mean[:, 0] if flat else mean,
        coefficient_std=std[:, 0] if flat else std,
    )


def effective_ridge(n: float, lr: float, steps: float, *, loss: Literal["half_mse", "mse"] = "half_mse") -> float:
    r"""Heuristic ridge matching ``steps`` of full-batch gradient descent: ``delta_eff = n / (lr * steps)``.

    Gradient descent for ``t`` steps at learning rate ``eta`` on the loss ``(1/2n) sum (f - y)^2``, in the
    linearized (kernel) regime, filters eigenmode ``j`` of ``K_DD`` (eigenvalue ``mu_j``) by
    ``1 - exp(-eta mu_j t / n)``; ridge regression filters it by ``mu_j / (mu_j + delta)``. The two
    filters cross over at the same ``mu_j`` when ``delta = n / (eta t)``. For the loss ``mean (f - y)^2``
    the gradient is twice as large, so the ridge is halved: ``n / (2 eta t)``.

    **This is a heuristic for plain (S)GD** (no momentum, no adaptive optimizers, no weight decay, lazy
    regime): the exponential and rational filters differ in shape, so predictions made with it are
    approximate. See Ali, Kolter, Tibshirani 2019, https://arxiv.org/abs/1810.10082, for the
    correspondence between early stopping and ridge regression.

    Args:
        n: training-set size (the ``n`` in the loss normalization).
        lr: learning rate ``eta > 0``.
        steps: number of gradient steps ``t > 0``.
        loss: ``"half_mse"`` for ``(1/2n) sum (f - y)^2``, ``"mse"`` for ``(1/n) sum (f - y)^2``
            (``torch.nn.functional.mse_loss`` with one output).

    Returns:
        The ridge ``delta_eff`` as a Python float, in raw kernel units (``K_DD + delta I``).

    Example:
        >>> effective_ridge(100, lr=0.1, steps=1000)
        1.0
        >>> effective_ridge(100, lr=0.1, steps=1000, loss="mse")
        0.5
    """
    n = _checks.real_number(n, "n", strict=True)
    lr = _checks.real_number(lr, "lr", strict=True)
    steps = _checks.real_number(steps, "steps", strict=True)
    if loss == "half_mse":
        factor = 1.0
    elif loss == "mse":
        factor = 0.5
    else:
        raise InputError(f"Expected loss to be 'half_mse' or 'mse', but got {loss!r}.")
    return factor * n / (lr * steps)


def extrapolate_tail(
    eigenvalues: torch.Tensor | Spectrum,
    num_modes: int,
    *,
    fit_range: tuple[int, int] | None = None,
    bins: int = 256,
) -> tuple[torch.Tensor, torch.Tensor, PowerLawFit]:
    r"""Extend a measured spectrum to ``num_modes`` modes with a fitted power-law tail.

    A probe of ``M`` points resolves only ``M`` operator eigenvalues, so the ridgeless eigenlearning
    equation has no solution for ``n >= M`` training points (:func:`solve_kappa`). NTK spectra on natural
    data decay like a power law (Bordelon, Canatar, Pehlevan 2020, https://arxiv.org/abs/2002.02561), so
    the tail ``i = r+1 .. num_modes`` is extrapolated as ``lambda_i = c i^-alpha`` with ``(c, alpha)`` from
    :meth:`Spectrum.power_law_fit` over ``fit_range``. The tail is compressed into at most ``bins``
    log-spaced groups of consecutive modes, each represented by the mean eigenvalue over the group,

    .. math::

        \bar\lambda_{[a, b)} = \frac{c}{b - a} \int_a^b i^{-\alpha}\, di,

    and its size as multiplicity, so that ``solve_kappa``/``predict`` stay cheap for any ``num_modes``.
    The target has no measurable power beyond the probe: give the tail zero coefficients.

    Args:
        eigenvalues: ``(r0,)`` measured operator eigenvalues, descending, or a :class:`Spectrum`.
        num_modes: total number of modes after extension (``> r``, the number of positive eigenvalues).
        fit_range: 1-based half-open mode range of the fit; default ``(max(2, r // 10), max(r // 2, 3))``:
            skips the top modes (often not yet on the power law) and the bottom half (finite-``M`` noise).
        bins: maximum number of tail groups.

    Returns:
        ``(eigenvalues, multiplicities, fit)``: float64 ``(r + b,)`` tensors, the ``r`` positive measured
        eigenvalues with multiplicity 1 followed by ``b <= bins`` tail groups, and the :class:`PowerLawFit`.

    Raises:
        InputError: fewer than 3 positive eigenvalues, a fit range without two of them, ``num_modes <= r``,
            or a fitted exponent ``alpha <= 0`` (a spectrum that does not decay cannot be extrapolated).

    Example:
        >>> lam = torch.arange(1, 101, dtype=torch.float64).pow(-1.5)
        >>> ext, mult, fit = extrapolate_tail(lam, 10_000)
        >>> round(fit.alpha, 6), int(mult.sum())
        (1.5, 10000)
        >>> kappa = solve_kappa(ext, 1000, multiplicities=mult)  # n > 100 measured modes: solvable now
    """
    lam = eigenvalues.eigenvalues if isinstance(eigenvalues, Spectrum) else _checks.float64(eigenvalues, "eigenvalues")
    lam = lam.detach().to(torch.float64).cpu()
    lam = lam[lam > 0]
    r = int(lam.numel())
    if r < 3:
        raise InputError(f"Expected at least 3 positive eigenvalues to fit a tail, but got {r}.")
    num_modes = int(num_modes)
    if num_modes <= r:
        raise InputError(f"Expected num_modes > {r} (the measured positive modes), but got {num_modes}.")
    start, stop = fit_range if fit_range is not None else (max(2, r // 10), max(r // 2, 3))
    fit = Spectrum(lam, torch.zeros(r, r, dtype=torch.float64), M=r).power_law_fit(start, stop)
    if not fit.alpha > 0:
        raise InputError(
            f"Expected a decaying spectrum to extrapolate (alpha > 0), but the fit over modes [{start}, {stop}) gave "
            f"alpha = {fit.alpha:.3g}. Use more probe points, or a ridge (ridge=... or lr=...) instead."
        )
    edges = torch.unique(
        torch.logspace(math.log10(r + 1), math.log10(num_modes + 1), bins + 1, dtype=torch.float64).round()
    )
    edges[0], edges[-1] = r + 1, num_modes + 1
    a, b = edges[:-1], edges[1:]
    if abs(fit.alpha - 1.0) < 1e-12:
        integral = torch.log(b / a)
    else:
        integral = (b.pow(1 - fit.alpha) - a.pow(1 - fit.alpha)) / (1 - fit.alpha)
    tail = fit.c * integral / (b - a)
    eigs = torch.cat([lam, tail])
    mult = torch.cat([torch.ones(r, dtype=torch.float64), b - a])
    return eigs, mult, fit


# ---------------------------------------------------------------------------------------------------- measured
def learnability(y: torch.Tensor, f_hat: torch.Tensor) -> float:
    r"""Measured learnability ``L = <y, f_hat> / <y, y>`` (means over points; multi-output sums over outputs).

    Simon, Dickens, DeWeese 2021 (https://arxiv.org/abs/2110.03922). For a network, measure it on
    **held-out** points with the output **centered at initialization**, ``f_hat = f_theta_t - f_theta_0``
    (on training points memorization drives it to 1).

    Args:
        y: ``(M,)`` or ``(M, k)`` target on the points.
        f_hat: learned function on the same points, same shape.

    Returns:
        A Python float (1 = target fully learned, 0 = orthogonal).

    Raises:
        InputError: shapes differ, or ``y`` is identically zero.

    Example:
        >>> y = torch.tensor([1.0, -1.0, 1.0, -1.0])
        >>> learnability(y, 0.5 * y)
        0.5
    """
    yt = _checks.float64(y, "y")
    if yt.ndim not in (1, 2) or yt.shape[0] == 0:
        raise InputError(f"Expected y to have shape (M,) or (M, k), but got {tuple(yt.shape)}.")
    ft = _checks.float64(f_hat, "f_hat")
    if ft.shape != yt.shape:
        raise InputError(
            f"Expected f_hat to have the shape of y {tuple(yt.shape)}, but got {tuple(ft.shape)}. Evaluate both on "
            "the same points (and outputs)."
        )
    denominator = float(yt.pow(2).sum())
    if denominator == 0:
        raise InputError("Expected a target y that is not identically zero, but got all zeros.")
    return float((yt * ft.to(yt.device)).sum()) / denominator


@dataclass(frozen=True, eq=False)
class ModeLearnability:
    """Measured per-mode learnability ``v_hat_i / v_i``, where the target has a non-negligible coefficient.

    Attributes:
        values: ``(r,)`` float64; ``v_hat_i / v_i`` (multi-output: ``sum_a v_hat_ia v_ia / sum_a v_ia^2``),
            ``nan`` where ``mask`` is False.
        mask: ``(r,)`` bool, modes whose target coefficient is not negligible.
        target_coefficients: ``(r,)`` or ``(r, k)``, the target's coefficients ``v_i``.
        learned_coefficients: like ``target_coefficients``, the learned function's ``v_hat_i``.

    Example:
        >>> spec = eigendecompose(torch.diag(torch.tensor([2.0, 1.0])))
        >>> ml = mode_learnability(spec, torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.3]))
        >>> ml.indices.tolist(), round(float(ml.values[0]), 6)
        ([0], 0.5)
    """

    values: torch.Tensor
    mask: torch.Tensor
    target_coefficients: torch.Tensor
    learned_coefficients: torch.Tensor

    @property
    def indices(self) -> torch.Tensor:
        """0-based indices of the modes with a value (where ``mask`` is True)."""
        return torch.nonzero(self.mask).flatten()


def mode_learnability(
    spectrum: Spectrum, y: torch.Tensor, f_hat: torch.Tensor, *, min_coefficient: float = 1e-2
) -> ModeLearnability:
    r"""Measured learnability per eigenmode, ``L_i = v_hat_i / v_i``.

    ``v = spectrum.project(y)``, ``v_hat = spectrum.project(f_hat)`` (Simon, Dickens, DeWeese 2021,
    https://arxiv.org/abs/2110.03922, whose prediction is ``E[v_hat_i] / v_i = L_i``). Only modes with
    ``|v_i| > min_coefficient * sqrt(sum_j v_j^2)`` (multi-output: the norm of the row ``v_i``) get a
    value; a ratio with a negligible denominator is noise. Use held-out points and ``f_hat`` centered at
    initialization (see :func:`learnability`).

    Args:
        spectrum: the kernel's spectrum on the probe points (:func:`~ntkmonitor.spectrum.eigendecompose`).
        y: ``(M,)`` or ``(M, k)`` target on the probe points.
        f_hat: learned function on the probe points, same shape.
        min_coefficient: relative threshold on ``|v_i|`` (fraction of the target's root-sum-square).

    Returns:
        A :class:`ModeLearnability` with ``values`` (``nan`` for negligible modes) and ``mask``.

    Example:
        >>> spec = eigendecompose(torch.diag(torch.tensor([3.0, 2.0, 1.0])))
        >>> y, f_hat = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.9, 0.2, 0.7])
        >>> ml = mode_learnability(spec, y, f_hat)
        >>> ml.mask.tolist()
        [True, True, False]
    """
    if not isinstance(spectrum, Spectrum):
        raise InputError(
            f"Expected spectrum to be a Spectrum (from eigendecompose(K)), but got {type(spectrum).__name__}."
        )
    min_coefficient = _checks.real_number(min_coefficient, "min_coefficient")
    yt, flat = _checks.targets(y, spectrum.M, "y")
    ft, _ = _checks.targets(f_hat, spectrum.M, "f_hat")
    if ft.shape != yt.shape:
        raise InputError(f"Expected f_hat to have the shape of y {tuple(yt.shape)}, but got {tuple(ft.shape)}.")
    v = spectrum.project(yt)
    v_hat = spectrum.project(ft)
    row_power = v.pow(2).sum(dim=1)
    total = float(row_power.sum())
    mask = row_power.sqrt() > min_coefficient * math.sqrt(total)
    if total == 0:
        mask = torch.zeros_like(mask)
    ratio = (v_hat * v).sum(dim=1) / torch.where(mask, row_power, torch.ones_like(row_power))
    values = torch.where(mask, ratio, torch.full_like(ratio, math.nan))
    return ModeLearnability(
        values=values,
        mask=mask,
        target_coefficients=v[:, 0] if flat else v,
        learned_coefficients=v_hat[:, 0] if flat else v_hat,
    )


def _solve_psd(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A^{-1} B`` for symmetric PSD float64 ``A``: Cholesky, or a pseudo-inverse (with a warning)."""
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(B, L)
    mu, U = torch.linalg.eigh(A)
    cutoff = A.shape[0] * torch.finfo(torch.float64).eps * float(mu.abs().max())
    inv = torch.where(mu > cutoff, 1.0 / mu.clamp_min(cutoff), torch.zeros_like(mu))
    warnings.warn(
        f"Expected K_train + ridge * I to be positive definite, but it is singular to float64 precision (smallest "
        f"eigenvalue {float(mu.min()):.3g}, largest {float(mu.max()):.3g}); used the pseudo-inverse (minimum-norm "
        "interpolant). Pass ridge > 0, or remove duplicate training points.",
        NTKMonitorWarning,
        stacklevel=3,
    )
    return U @ (inv[:, None] * (U.T @ B))


def kernel_regression(
    K_train: torch.Tensor, K_test_train: torch.Tensor, y_train: torch.Tensor, *, ridge: float = 0.0
) -> torch.Tensor:
    r"""Kernel (ridge) regression predictions ``f_hat = K_test_train (K_train + delta I)^{-1} y_train``.

    The function an infinitely wide network learns when trained to convergence on MSE (Jacot et al.
    2018, https://arxiv.org/abs/1806.07572; Lee et al. 2019, https://arxiv.org/abs/1902.06720). Solved in
    float64 with a Cholesky factorization; if ``K_train + delta I`` is singular to working precision a
    pseudo-inverse is used and an :class:`~ntkmonitor.NTKMonitorWarning` is emitted.

    Args:
        K_train: ``(n, n)`` kernel on the training points.
        K_test_train: ``(m, n)`` kernel between test and training points.
        y_train: ``(n,)`` or ``(n, k)`` training targets.
        ridge: ``delta >= 0``.

    Returns:
        ``(m,)`` or ``(m, k)`` float64 predictions on ``K_test_train``'s device.

    Example:
        >>> x = torch.randn(10, 3, dtype=torch.float64)
        >>> K = (x @ x.T + 1) ** 2
        >>> y = torch.sin(x[:, 0])
        >>> torch.allclose(kernel_regression(K, K, y), y)  # interpolates its training data
        True
    """
    Ktr, _ = _checks.symmetric_matrix(K_train, "K_train")
    n = Ktr.shape[0]
    Kte = _checks.float64(K_test_train, "K_test_train")
    if Kte.ndim != 2 or Kte.shape[1] != n:
        raise InputError(
            f"Expected K_test_train to have shape (m, {n}) (one column per training point), but got {tuple(Kte.shape)}."
        )
    y, flat = _checks.targets(y_train, n, "y_train", what="training point")
    ridge = _checks.real_number(ridge, "ridge")
    A = Ktr + ridge * torch.eye(n, dtype=Ktr.dtype, device=Ktr.device)
    alpha = _solve_psd(A, y.to(Ktr.device))
    out = Kte.to(Ktr.device) @ alpha
    return out[:, 0] if flat else out


@dataclass(frozen=True, eq=False)
class ConservationCheck:
    r"""The conservation law of kernel regression on a finite domain.

    Attributes:
        total: ``sum_i L^D(phi_i)`` over a complete eigenbasis of the domain.
        expected: ``n`` (ridge 0) or ``tr[K_DD (K_DD + delta I)^{-1}]`` (ridge ``delta``).
        n: training-set size.
        ridge: ``delta``.
        mode_learnability: ``(M,)`` float64, ``L^D(phi_i)`` for each eigenfunction of the domain's kernel
            (eigenvalues descending).
        eigenvalues: ``(M,)`` float64 operator eigenvalues ``eig(K) / M`` (clipped at 0).

    Example:
        >>> x = torch.randn(12, 3, dtype=torch.float64)
        >>> check = conservation_check(torch.exp(-torch.cdist(x, x)), [0, 3, 5])
        >>> round(check.total, 8), check.n
        (3.0, 3)
    """

    total: float
    expected: float
    n: int
    ridge: float
    mode_learnability: torch.Tensor
    eigenvalues: torch.Tensor

    @property
    def error(self) -> float:
        """``total - expected`` (round-off when the law holds)."""
        return self.total - self.expected


def _train_indices(train_idx: Any, M: int) -> torch.Tensor:
    """Validated unique int64 indices into ``range(M)`` (a bool mask of length ``M`` is accepted)."""
    idx = _checks.as_tensor(train_idx, "train_idx") if not isinstance(train_idx, torch.Tensor) else train_idx
    if isinstance(idx, torch.Tensor) and idx.dtype == torch.bool:
        if idx.shape != (M,):
            raise InputError(f"Expected a boolean train_idx mask of shape ({M},), but got {tuple(idx.shape)}.")
        idx = torch.nonzero(idx).flatten()
    if idx.is_floating_point() or idx.ndim != 1 or idx.numel() == 0:
        raise InputError(
            f"Expected train_idx to be a non-empty 1-D tensor of integer indices (or a bool mask), but got "
            f"dtype {idx.dtype}, shape {tuple(idx.shape)}."
        )
    idx = idx.to(torch.int64).cpu()
    if int(idx.min()) < 0 or int(idx.max()) >= M:
        raise InputError(f"Expected train_idx in [0, {M}), but got values from {int(idx.min())} to {int(idx.max())}.")
    if torch.unique(idx).numel() != idx.numel():
        raise InputError("Expected distinct train_idx (a training set drawn without replacement), but got duplicates.")
    return idx


def conservation_check(K: torch.Tensor, train_idx: Any, *, ridge: float = 0.0) -> ConservationCheck:
    r"""Check the conservation law of learnability on a finite domain.

    For a finite domain ``X`` of ``M`` points with the uniform measure, a training set ``D subset X`` of
    size ``n`` and ``g_hat = K_XD (K_DD + delta I)^{-1} g(D)``, the learnability
    ``L^D(g) = <g, g_hat> / <g, g>`` summed over any complete orthonormal basis (here the eigenfunctions
    ``phi_i`` of ``K``) is

    .. math::

        \sum_i \mathcal{L}^D(\phi_i) = \mathrm{tr}\big[K_{DD} (K_{DD} + \delta I)^{-1}\big],

    which is exactly ``n`` without a ridge (Simon, Dickens, DeWeese 2021,
    https://arxiv.org/abs/2110.03922, "no-free-lunch theorem for kernel regression").

    Args:
        K: ``(M, M)`` kernel on the whole domain.
        train_idx: ``(n,)`` distinct indices of the training points in ``0..M-1`` (or a bool mask ``(M,)``).
        ridge: ``delta >= 0``.

    Returns:
        A :class:`ConservationCheck` with ``total``, ``expected`` and the per-mode learnabilities.

    Example:
        >>> x = torch.randn(10, 2, dtype=torch.float64)
        >>> K = torch.exp(-torch.cdist(x, x) ** 2)
        >>> c = conservation_check(K, [1, 2, 7], ridge=0.1)
        >>> abs(c.total - c.expected) < 1e-10 and c.total < 3
        True
    """
    Kd, _ = _checks.symmetric_matrix(K, "K")
    M = Kd.shape[0]
    idx = _train_indices(train_idx, M).to(Kd.device)
    ridge = _checks.real_number(ridge, "ridge")
    n = int(idx.numel())
    mu, U = torch.linalg.eigh(Kd)
    mu, U = mu.flip(0), U.flip(1)
    K_DD = Kd[idx][:, idx]
    K_XD = Kd[:, idx]
    # phi_hat_i = K_XD (K_DD + delta I)^{-1} phi_i(D); in units of u_i (phi = sqrt(M) u, the scale cancels).
    A = K_DD + ridge * torch.eye(n, dtype=Kd.dtype, device=Kd.device)
    U_hat = K_XD @ _solve_psd(A, U[idx])
    per_mode = (U * U_hat).sum(dim=0)  # <u_i, u_hat_i> / <u_i, u_i> with ||u_i|| = 1
    if ridge == 0.0:
        expected = float(n)
    else:
        d = torch.linalg.eigvalsh(K_DD)
        expected = float((d / (d + ridge)).sum())
    return ConservationCheck(
        total=float(per_mode.sum()),
        expected=expected,
        n=n,
        ridge=ridge,
        mode_learnability=per_mode,
        eigenvalues=(mu / M).clamp_min(0.0),
    )


def weight_distance(K_train: torch.Tensor, residual: torch.Tensor, *, ridge: float = 0.0) -> float:
    r"""Distance gradient descent travels in the linearized network: ``||w_inf - w_0|| = sqrt(r^T K^{-1} r)``.

    For the model linearized at ``w_0``, ``f(x) = f_0(x) + J(x) (w - w_0)``, trained by gradient descent (or flow)
    from ``w_0`` on the squared loss over the training set ``D`` until it interpolates, the weights converge to
    the minimum-norm solution ``w_inf - w_0 = J^T (J J^T)^{-1} r`` with the residual ``r = y - f_0`` on ``D``, so

    .. math::

        \lVert w_\infty - w_0 \rVert = \sqrt{r^\top K_{DD}^{-1} r}, \qquad K_{DD} = J J^\top

    (Arora et al. 2019, https://arxiv.org/abs/1901.08584, and the NTK lecture notes among the project's background
    texts). Compared with the measured ``||theta_t - theta_0||`` it is a sharp test of laziness: a network in the
    kernel regime travels exactly this far. With ``ridge`` it is ``sqrt(r^T (K + delta I)^{-1} K (K + delta
    I)^{-1} r)``, the distance of ridge regression's solution. A multi-output residual ``(n, k)`` uses the
    trace-mode kernel for every output (``K_full ~ K_trace (x) I_k``, exact for one output).

    Args:
        K_train: ``(n, n)`` kernel on the training set at ``w_0`` (trace mode; the same parameters as the distance).
        residual: ``(n,)`` or ``(n, k)`` targets minus the outputs at ``w_0``.
        ridge: ``delta >= 0``.

    Returns:
        The distance, a Python float.

    Example:
        >>> phi = torch.randn(5, 8, dtype=torch.float64)  # a linear model w -> phi w: J = phi
        >>> r = torch.randn(5, dtype=torch.float64)
        >>> step = torch.linalg.pinv(phi) @ r  # the minimum-norm solution of phi (w - w0) = r
        >>> round(weight_distance(phi @ phi.T, r) / float(step.norm()), 8)
        1.0
    """
    K, _ = _checks.symmetric_matrix(K_train, "K_train")
    n = K.shape[0]
    r, _ = _checks.targets(residual, n, "residual", what="training point")
    ridge = _checks.real_number(ridge, "ridge")
    A = K + ridge * torch.eye(n, dtype=K.dtype, device=K.device)
    alpha = _solve_psd(A, r.to(K.device))  # (n, k): the dual coefficients, w - w0 = J^T alpha
    return math.sqrt(max(float((alpha * (K @ alpha)).sum()), 0.0))
