r"""Lazy-regime drift: how far a network has moved from its linearization at initialization.

In the lazy (kernel) regime the NTK stays at its initial value, the weights barely move relative to
their scale, and the network's function is its first-order Taylor expansion around the initial
parameters (Lee et al. 2019, https://arxiv.org/abs/1902.06720; Chizat, Oyallon, Bach 2019,
https://arxiv.org/abs/1812.07956). Feature learning shows up as a kernel that rotates (Fort et al.
2020, https://arxiv.org/abs/2010.15110), a function that departs from the linear model, and a kernel
that aligns with the target (Cortes, Mohri, Rostamizadeh 2012, https://jmlr.org/papers/v13/cortes12a.html).

This module holds the metrics as pure functions and a :func:`verdict` from documented thresholds
(:class:`DriftThresholds`). Metrics are computed in float64 and returned as Python floats.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import _checks, _inputs
from ._functional import FunctionalModel, OutputFn, unwrap_compiled
from .errors import InputError
from .record import DriftThresholds, Verdict
from .spectrum import eigh_top

__all__ = [
    "kernel_distance",
    "kernel_velocity",
    "relative_kernel_change",
    "relative_parameter_change",
    "ParameterChange",
    "linearization_error",
    "linearization_gap",
    "kernel_target_alignment",
    "eigenspace_overlap",
    "subspace_overlap",
    "DriftThresholds",
    "Verdict",
    "verdict",
]


def _kernel_pair(K0: Any, Kt: Any, names: tuple[str, str] = ("K0", "Kt")) -> tuple[torch.Tensor, torch.Tensor]:
    """Two kernels of one shape as float64 tensors on one device."""
    a = _checks.float64(K0, names[0])
    b = _checks.float64(Kt, names[1])
    if a.shape != b.shape:
        raise InputError(
            f"Expected {names[0]} and {names[1]} to have the same shape (kernels on the same probe points, same "
            f"mode), but got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if a.numel() == 0:
        raise InputError(f"Expected non-empty kernels, but got shape {tuple(a.shape)}.")
    return a, b.to(a.device)


def _nonzero_norm(K: torch.Tensor, name: str) -> float:
    norm = float(torch.linalg.vector_norm(K))
    if norm == 0:
        raise InputError(
            f"Expected a kernel {name} that is not identically zero, but got all zeros. A zero NTK usually means it "
            "was computed under torch.inference_mode() or with frozen parameters."
        )
    return norm


def kernel_distance(K0: torch.Tensor, Kt: torch.Tensor) -> float:
    r"""Kernel distance ``S = 1 - <K0, Kt>_F / (||K0||_F ||Kt||_F)`` (Fort et al. 2020).

    One minus the cosine similarity of the two kernels as vectors: 0 when ``Kt`` is a positive multiple of
    ``K0`` (scale invariant), in ``[0, 1]`` for positive semi-definite kernels (whose Frobenius inner
    product is ``>= 0``). Fort et al. 2020, "Deep learning versus kernel learning",
    https://arxiv.org/abs/2010.15110.

    Args:
        K0: reference kernel, any shape (``(M, M)`` in trace mode, ``(M, M, k, k)`` in full mode).
        Kt: current kernel on the same points, same shape.

    Returns:
        A Python float in ``[0, 2]`` (round-off below 0 is clamped to 0).

    Raises:
        InputError: shapes differ, or a kernel is all zeros or not finite.

    Example:
        >>> K = torch.eye(3)
        >>> kernel_distance(K, 5 * K)
        0.0
        >>> round(kernel_distance(torch.eye(2), torch.ones(2, 2)), 4)
        0.2929
    """
    a, b = _kernel_pair(K0, Kt)
    cosine = float((a * b).sum()) / (_nonzero_norm(a, "K0") * _nonzero_norm(b, "Kt"))
    return max(0.0, 1.0 - cosine)


def kernel_velocity(K_prev: torch.Tensor, K_t: torch.Tensor, steps: float) -> float:
    r"""Kernel velocity ``S(K_prev, K_t) / steps``: kernel distance per optimizer step (Fort et al. 2020).

    Fort et al. 2020, https://arxiv.org/abs/2010.15110: the kernel moves fast early in training and
    slows down as it settles.

    Args:
        K_prev: kernel at the previous measurement.
        K_t: kernel now, same shape.
        steps: optimizer steps between the two measurements, ``> 0``.

    Returns:
        A Python float ``>= 0``.

    Example:
        >>> round(kernel_velocity(torch.eye(2), torch.ones(2, 2), steps=10), 5)
        0.02929
    """
    steps = _checks.real_number(steps, "steps", strict=True)
    return kernel_distance(K_prev, K_t) / steps


def relative_kernel_change(K0: torch.Tensor, Kt: torch.Tensor) -> float:
    r"""Relative kernel change ``||Kt - K0||_F / ||K0||_F``.

    Not scale invariant (a kernel that only grows counts as a change); see :func:`kernel_distance` for
    the rotation alone. Lee et al. 2019 (https://arxiv.org/abs/1902.06720) show it vanishes like
    ``1/sqrt(width)`` in the NTK parameterization.

    Args:
        K0: reference kernel.
        Kt: current kernel, same shape.

    Returns:
        A Python float ``>= 0``.

    Example:
        >>> relative_kernel_change(torch.eye(2), 1.5 * torch.eye(2))
        0.5
    """
    a, b = _kernel_pair(K0, Kt)
    return float(torch.linalg.vector_norm(b - a)) / _nonzero_norm(a, "K0")


@dataclass(frozen=True)
class ParameterChange:
    """Relative parameter change, global and per parameter tensor.

    Attributes:
        total: ``||theta_t - theta_0|| / ||theta_0||`` over all tensors together.
        per_parameter: ``{name: ||theta_t[name] - theta_0[name]|| / ||theta_0[name]||}``; ``inf`` for a
            tensor that was zero at initialization and moved, ``0.0`` if it stayed zero.

    Example:
        >>> ParameterChange(total=0.1, per_parameter={"w": 0.1}).total
        0.1
    """

    total: float
    per_parameter: dict[str, float]


def _param_dicts(
    params0: Mapping[str, torch.Tensor], params_t: Mapping[str, torch.Tensor]
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    for name, value in (("params0", params0), ("params_t", params_t)):
        if not isinstance(value, Mapping) or not value:
            raise InputError(
                f"Expected {name} to be a non-empty dict {{name: tensor}} (e.g. {{n: p.detach().clone() for n, p in "
                f"model.named_parameters()}}), but got {type(value).__name__}."
            )
    if set(params0) != set(params_t):
        missing = sorted(set(params0) - set(params_t))
        extra = sorted(set(params_t) - set(params0))
        raise InputError(
            f"Expected params0 and params_t to name the same parameters, but params_t lacks {missing} and has extra "
            f"{extra}. Snapshot the same parameters at both times."
        )
    out = []
    for name in params0:
        a = _checks.float64(params0[name], f"params0[{name!r}]")
        b = _checks.float64(params_t[name], f"params_t[{name!r}]")
        if a.shape != b.shape:
            raise InputError(
                f"Expected params0[{name!r}] and params_t[{name!r}] to have the same shape, but got "
                f"{tuple(a.shape)} and {tuple(b.shape)}."
            )
        out.append((name, a, b.to(a.device)))
    return out


def relative_parameter_change(
    params0: Mapping[str, torch.Tensor], params_t: Mapping[str, torch.Tensor]
) -> ParameterChange:
    r"""Relative parameter change ``||theta_t - theta_0|| / ||theta_0||``, global and per tensor.

    Small in the lazy regime: it vanishes like ``1/sqrt(width)`` for NTK-parameterized nets (Lee et al.
    2019, https://arxiv.org/abs/1902.06720) and is controlled by the output scale (Chizat, Oyallon, Bach
    2019, https://arxiv.org/abs/1812.07956).

    Args:
        params0: ``{name: tensor}`` at initialization.
        params_t: ``{name: tensor}`` now, same names and shapes.

    Returns:
        A :class:`ParameterChange` (Python floats).

    Raises:
        InputError: names or shapes differ.

    The total is ``nan`` (undefined, not an error) when every parameter was zero at initialization, e.g. a
    LoRA adapter's ``B``; a zero tensor's own entry is ``inf`` once it moves, 0 while it does not.

    Example:
        >>> p0 = {"w": torch.ones(4), "b": torch.zeros(2)}
        >>> pt = {"w": torch.full((4,), 1.5), "b": torch.zeros(2)}
        >>> change = relative_parameter_change(p0, pt)
        >>> change.total, change.per_parameter
        (0.5, {'w': 0.5, 'b': 0.0})
    """
    per: dict[str, float] = {}
    num, den = 0.0, 0.0
    for name, a, b in _param_dicts(params0, params_t):
        d = float(torch.linalg.vector_norm(b - a)) if a.numel() else 0.0
        s = float(torch.linalg.vector_norm(a)) if a.numel() else 0.0
        num += d * d
        den += s * s
        per[name] = d / s if s > 0 else (math.inf if d > 0 else 0.0)
    # all zero at initialization (a LoRA B, a zero-initialized head): the relative change is undefined
    total = math.sqrt(num / den) if den > 0 else math.nan
    return ParameterChange(total=total, per_parameter=per)


def linearization_error(
    model: nn.Module,
    params0: Mapping[str, torch.Tensor],
    params_t: Mapping[str, torch.Tensor],
    x: _inputs.Batch,
    *,
    f0: torch.Tensor | None = None,
    output_fn: OutputFn | None = None,
    params: Sequence[str] | str | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    r"""Relative distance of the network from its linearization at ``theta_0``.

    .. math::

        \frac{\| f_t(X) - f^{lin}_t(X) \|}{\| f_t(X) - f_0(X) \|}, \qquad
        f^{lin}_t = f_0 + J_0 (\theta_t - \theta_0)

    (Lee et al. 2019, https://arxiv.org/abs/1902.06720). ``J_0 (theta_t - theta_0)`` is one
    ``torch.func.jvp`` at ``theta_0`` with tangent ``theta_t - theta_0``; the Jacobian is never formed.
    ~0 in the lazy regime; of order 1 when the function moved by feature learning. Norms are Frobenius
    over points and outputs.

    The model is evaluated through ``torch.func.functional_call`` with eval-mode semantics (dropout off,
    BatchNorm on running statistics); it is **not modified** (parameters, buffers, ``.training`` flags,
    gradients and the global RNG are left as they were). Parameters not in ``params0`` and the buffers
    are held at their current values.

    Args:
        model: the network.
        params0: ``{name: tensor}`` of the selected parameters at initialization.
        params_t: ``{name: tensor}`` of the same parameters now.
        x: inputs ``(n, ...)`` (or a tuple / dict batch, see :func:`~ntkmonitor.empirical_ntk`).
        f0: ``(n, k)`` (or ``(n,)``) outputs at ``theta_0`` on ``x``, e.g. recorded at initialization;
            ``None`` to recompute them (with the current buffers).
        output_fn: selects the output tensor from a tuple/dict output.
        params: parameter selection (names / module prefixes); ``None`` for the names in ``params0``.
        dtype: computation dtype; ``None`` for the parameters' dtype (at least float32).

    Returns:
        A Python float; ``nan`` when ``f_t(X) == f_0(X)`` exactly (the ratio is undefined: nothing moved).

    Raises:
        InputError: parameter dicts that do not match the selection, or a bad ``f0`` shape.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        >>> pt = {n: p + 0.01 * torch.randn_like(p) for n, p in p0.items()}
        >>> err = linearization_error(model, p0, pt, torch.randn(16, 3))
        >>> 0 <= err < 0.1
        True
    """
    inner, names0 = unwrap_compiled(model, list(params0))
    if inner is not model:  # torch.compile(model): the measured module's names lack the "_orig_mod." prefix
        params0 = dict(zip(names0, params0.values(), strict=True))
        params_t = dict(zip(unwrap_compiled(model, list(params_t))[1], params_t.values(), strict=True))
    pairs = _param_dicts(params0, params_t)
    if params is None:
        params = [name for name, _, _ in pairs]
    fm = FunctionalModel(model, params, dtype, output_fn)
    if set(fm.names) != set(params0):
        raise InputError(
            f"Expected params0/params_t to hold exactly the selected parameters {fm.names}, but got "
            f"{sorted(params0)}. Pass params= matching the dicts, or snapshot the selected parameters."
        )
    return linearization_gap(fm, params0, params_t, x, f0=f0)


def linearization_gap(
    fmodel: FunctionalModel,
    params0: Mapping[str, torch.Tensor],
    params_t: Mapping[str, torch.Tensor],
    x: _inputs.Batch,
    *,
    f0: torch.Tensor | None = None,
    f_t: torch.Tensor | None = None,
) -> float:
    r""":func:`linearization_error` on a model already in functional form, reusing outputs already computed.

    The tracker measures the outputs ``f_t`` and holds ``f0``; passing them saves two forward passes.

    Args:
        fmodel: the model as a function of its selected parameters (``ntkmonitor.NTKFunction.functional_model()``).
        params0: ``{name: tensor}`` of ``fmodel.names`` at initialization.
        params_t: the same parameters now.
        x: inputs ``(n, ...)``.
        f0: ``(n, k)`` outputs at ``theta_0``, or ``None`` to compute them.
        f_t: ``(n, k)`` outputs at ``theta_t``, or ``None`` to compute them.

    Returns:
        ``||f_t - f_lin|| / ||f_t - f_0||``; ``nan`` when ``f_t == f_0`` exactly.

    Example:
        >>> from ntkmonitor import empirical_ntk_fn
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> fm = empirical_ntk_fn(model).functional_model()
        >>> p0 = dict(fm.primals)
        >>> pt = {n: p + 0.01 for n, p in p0.items()}
        >>> 0 <= linearization_gap(fm, p0, pt, torch.randn(16, 3)) < 0.1
        True
    """
    fm = fmodel
    n = _inputs.validate_batch(x, "x")
    with fm.measuring():
        xp = _inputs.prepare(x, fm.device, fm.dtype)
        p0 = {name: params0[name].detach().to(device=fm.device, dtype=fm.dtype) for name in fm.names}
        pt = {name: params_t[name].detach().to(device=fm.device, dtype=fm.dtype) for name in fm.names}
        tangent = {name: pt[name] - p0[name] for name in fm.names}
        f0_here, jvp_out = torch.func.jvp(lambda p: fm(p, xp), (p0,), (tangent,))
        if f_t is None:
            with torch.no_grad():
                f_t = fm(pt, xp)
    if f0 is None:
        f0_ref = f0_here
    else:
        f0_ref = _checks.float64(f0, "f0").to(fm.device)
        if f0_ref.numel() != f0_here.numel() or f0_ref.shape[0] != n:
            raise InputError(
                f"Expected f0 to hold the model's outputs on x, shape {tuple(f0_here.shape)}, but got "
                f"{tuple(f0_ref.shape)}."
            )
        f0_ref = f0_ref.reshape(f0_here.shape)
    f0_ref = f0_ref.detach().double()
    f_t = f_t.detach().double().to(f0_ref.device).reshape(f0_here.shape)
    f_lin = f0_ref + jvp_out.detach().double()
    denominator = float(torch.linalg.vector_norm(f_t - f0_ref))
    if denominator == 0:
        return math.nan
    return float(torch.linalg.vector_norm(f_t - f_lin)) / denominator


def kernel_target_alignment(K: torch.Tensor, y: torch.Tensor) -> float:
    r"""Centered kernel-target alignment ``<Kc, Yc Yc^T>_F / (||Kc||_F ||Yc Yc^T||_F)``.

    ``Kc = H K H`` and ``Yc = H Y`` with the centering matrix ``H = I - 1 1^T / M`` (Cortes, Mohri,
    Rostamizadeh 2012, "Algorithms for learning kernels based on centered alignment",
    https://jmlr.org/papers/v13/cortes12a.html). Rises during training when the network learns features
    adapted to the target (e.g. Baratin et al. 2021, https://arxiv.org/abs/2008.00938).

    Args:
        K: ``(M, M)`` kernel on the probe.
        y: ``(M,)`` or ``(M, k)`` targets on the probe (e.g. one-hot labels).

    Returns:
        A Python float in ``[-1, 1]`` (``[0, 1]`` for a PSD kernel); 1 for ``K = y y^T``; ``nan`` (undefined)
        when ``Kc`` or ``Yc`` is zero: a constant target or kernel, or a one-point probe.

    Raises:
        InputError: shapes do not match.

    Example:
        >>> y = torch.tensor([1.0, -1.0, 2.0, 0.5])
        >>> round(kernel_target_alignment(torch.outer(y, y), y), 12)
        1.0
    """
    Kd = _checks.square_matrix(K, "K")
    M = Kd.shape[0]
    Y, _ = _checks.targets(y, M, "y")
    Y = Y.to(Kd.device)
    Kc = Kd - Kd.mean(dim=0, keepdim=True)
    Kc = Kc - Kc.mean(dim=1, keepdim=True)
    Yc = Y - Y.mean(dim=0, keepdim=True)
    k_norm = float(torch.linalg.matrix_norm(Kc))
    y_norm = float(torch.linalg.matrix_norm(Yc.T @ Yc))  # ||Yc Yc^T||_F = ||Yc^T Yc||_F
    if k_norm == 0 or y_norm == 0:  # a constant target (or kernel), a one-point probe: undefined, not an error
        return math.nan
    inner = float((Yc * (Kc @ Yc)).sum())  # <Kc, Yc Yc^T>_F = tr(Yc^T Kc Yc)
    return inner / (k_norm * y_norm)


def eigenspace_overlap(K0: torch.Tensor, Kt: torch.Tensor, k: int) -> float:
    r"""Overlap of the top-``k`` eigenspaces: mean squared cosine of their principal angles.

    .. math::

        \frac{1}{k} \| U_0^T U_t \|_F^2 = \frac{1}{k} \sum_{j=1}^k \cos^2 \theta_j

    with ``U_0``, ``U_t`` the ``(M, k)`` orthonormal top-``k`` eigenvectors (float64). 1 when the
    eigenspaces coincide, 0 when orthogonal, about ``k / M`` for unrelated random subspaces. Used to
    track the rotation of the kernel's top eigenspace during training (Fort et al. 2020,
    https://arxiv.org/abs/2010.15110). The subspace is ill-defined when ``lambda_k == lambda_{k+1}``.

    Args:
        K0: ``(M, M)`` symmetric reference kernel.
        Kt: ``(M, M)`` symmetric current kernel.
        k: subspace dimension, ``1 <= k <= M``.

    Returns:
        A Python float in ``[0, 1]``.

    Example:
        >>> K = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
        >>> eigenspace_overlap(K, K, 2)
        1.0
        >>> eigenspace_overlap(K, torch.diag(torch.tensor([1.0, 2.0, 3.0])), 1)
        0.0
    """
    a, _ = _checks.symmetric_matrix(K0, "K0")
    b, _ = _checks.symmetric_matrix(Kt, "Kt")
    if a.shape != b.shape:
        raise InputError(
            f"Expected K0 and Kt on the same probe points, but got shapes {tuple(a.shape)} and {tuple(b.shape)}."
        )
    k = _checks.positive_int(k, "k")
    if k > a.shape[0]:
        raise InputError(f"Expected k <= M = {a.shape[0]}, but got k={k}.")
    _, U0, _ = eigh_top(a, k)
    _, Ut, _ = eigh_top(b.to(a.device), k)
    return subspace_overlap(U0, Ut)


def subspace_overlap(U0: torch.Tensor, Ut: torch.Tensor) -> float:
    """``||U0^T Ut||_F^2 / k`` for ``(M, k)`` orthonormal columns, clipped to ``[0, 1]``.

    The core of :func:`eigenspace_overlap`, for eigenvectors already at hand.

    Args:
        U0: ``(M, k)`` orthonormal columns.
        Ut: ``(M, k)`` orthonormal columns.

    Returns:
        A float in ``[0, 1]``.

    Example:
        >>> subspace_overlap(torch.eye(3)[:, :2], torch.eye(3)[:, 1:])
        0.5
    """
    value = float((U0.T @ Ut.to(U0)).pow(2).sum()) / U0.shape[1]
    return min(1.0, max(0.0, value))


def _metric(value: Any, name: str) -> float | None:
    """A metric as a float, or ``None`` when missing (``None`` or ``nan``)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"Expected {name} to be a float or None, but got {type(value).__name__}.")
    value = float(value)
    return None if math.isnan(value) else value


def verdict(
    kernel_distance: float | None,
    linearization_error: float | None,
    thresholds: DriftThresholds = DriftThresholds(),  # noqa: B008 - frozen, immutable default
) -> Verdict:
    """Classify a measurement as ``"lazy"``, ``"drifting"`` or ``"feature-learning"``.

    Rules, with ``d`` the kernel distance and ``e`` the linearization error (see :class:`DriftThresholds`):

    - ``"feature-learning"`` if ``d > feature_distance`` or ``e > feature_linearization``;
    - ``"lazy"`` if ``d < lazy_distance`` and ``e < lazy_linearization``;
    - ``"drifting"`` otherwise.

    A metric that is ``None`` or ``nan`` (not measured; the linearization error is undefined when the
    function has not moved) is left out of the rules; at least one must be available.

    Args:
        kernel_distance: :func:`kernel_distance` to the initial kernel.
        linearization_error: :func:`linearization_error`.
        thresholds: the thresholds.

    Returns:
        A :class:`Verdict` (equal to ``"lazy"``, ``"drifting"`` or ``"feature-learning"``).

    Raises:
        InputError: both metrics are missing, or a threshold object of the wrong type.

    Example:
        >>> [str(verdict(*m)) for m in [(0.01, 0.02), (0.1, 0.2), (0.4, 0.05), (0.0, float("nan"))]]
        ['lazy', 'drifting', 'feature-learning', 'lazy']
    """
    if not isinstance(thresholds, DriftThresholds):
        raise InputError(f"Expected thresholds to be a DriftThresholds, but got {type(thresholds).__name__}.")
    d = _metric(kernel_distance, "kernel_distance")
    e = _metric(linearization_error, "linearization_error")
    if d is None and e is None:
        raise InputError(
            "Expected at least one of kernel_distance and linearization_error to be a number, but both are "
            "None/nan. Measure the kernel distance (it is always defined for non-zero kernels)."
        )
    if (d is not None and d > thresholds.feature_distance) or (e is not None and e > thresholds.feature_linearization):
        return Verdict.FEATURE_LEARNING
    if (d is None or d < thresholds.lazy_distance) and (e is None or e < thresholds.lazy_linearization):
        return Verdict.LAZY
    return Verdict.DRIFTING
