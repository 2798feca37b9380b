"""Argument checks shared by the analysis modules (spectrum, theory, drift).

Every check raises :class:`~ntkmonitor.errors.InputError` with the project's message pattern:
what was expected, what was received, and how to fix it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from .errors import InputError


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` as a real tensor (tensors pass through; arrays and sequences are converted)."""
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple, numbers.Real)) and not isinstance(x, bool):
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise InputError(f"Expected {name} to be a tensor of numbers, but got {type(x).__name__}: {err}.") from err
    else:
        raise InputError(
            f"Expected {name} to be a torch.Tensor (or an array of numbers), but got {type(x).__name__}. "
            "Convert it with torch.as_tensor(...)."
        )
    if t.is_complex():
        raise InputError(f"Expected real-valued {name}, but got dtype {t.dtype}.")
    if t.dtype == torch.bool:
        raise InputError(f"Expected {name} to hold numbers, but got a boolean tensor. Convert it with .float().")
    return t.detach()


def float64(x: Any, name: str, *, finite: bool = True) -> torch.Tensor:
    """``x`` as a float64 tensor on its device, optionally checked to be finite."""
    t = as_tensor(x, name).to(torch.float64)
    if finite and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise InputError(
            f"Expected {name} to be finite, but got {bad} NaN/inf entries. Check the computation that produced it "
            "(a diverged model, or a kernel computed in too low a precision)."
        )
    return t


def float_dtype(x: torch.Tensor) -> torch.dtype:
    """The floating dtype whose round-off ``x`` carries (float32 for integer tensors)."""
    return x.dtype if x.is_floating_point() else torch.float32


def square_matrix(x: Any, name: str) -> torch.Tensor:
    """A 2-D square matrix as a float64 tensor (checked finite)."""
    t = as_tensor(x, name)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise InputError(
            f"Expected {name} to be a square matrix (M, M), but got shape {tuple(t.shape)}. Pass a kernel of the "
            "probe with itself in trace mode: empirical_ntk(model, x, mode='trace')."
        )
    if t.shape[0] == 0:
        raise InputError(f"Expected {name} to have at least one point, but got shape {tuple(t.shape)}.")
    return float64(t, name)


def symmetric_matrix(x: Any, name: str) -> tuple[torch.Tensor, torch.dtype]:
    """A symmetric square matrix in float64 (symmetrized), and the float dtype it came in.

    The relative asymmetry ``||K - K^T||_F / ||K||_F`` may be up to ``sqrt(eps)`` of the input dtype
    (round-off of a kernel computed block by block); larger asymmetry is an error.
    """
    t = as_tensor(x, name)
    dtype = float_dtype(t)
    K = square_matrix(t, name)
    norm = float(torch.linalg.matrix_norm(K))
    asym = float(torch.linalg.matrix_norm(K - K.T))
    tol = math.sqrt(torch.finfo(dtype).eps)
    if asym > tol * norm:
        raise InputError(
            f"Expected {name} to be symmetric, but got relative asymmetry ||K - K^T|| / ||K|| = {asym / norm:.3g} "
            f"(allowed: {tol:.3g} for {dtype}). Pass the kernel of the probe with itself, K(x, x), in trace mode."
        )
    return 0.5 * (K + K.T), dtype


def targets(y: Any, num_points: int, name: str, *, what: str = "probe points") -> tuple[torch.Tensor, bool]:
    """Values of a function on ``num_points`` points as float64 ``(M, k)``, and whether it was 1-D."""
    t = float64(y, name)
    if t.ndim not in (1, 2) or t.shape[0] != num_points:
        raise InputError(
            f"Expected {name} to have shape ({num_points},) or ({num_points}, k) (one row per {what}), but got "
            f"shape {tuple(t.shape)}."
        )
    if t.ndim == 1:
        return t[:, None], True
    return t, False


def real_number(x: Any, name: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite Python float ``>= minimum`` (``> minimum`` when ``strict``)."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise InputError(f"Expected {name} to be a real number, but got {type(x).__name__}.")
    value = float(x)
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        relation = ">" if strict else ">="
        raise InputError(f"Expected {name} to be a finite number {relation} {minimum:g}, but got {x!r}.")
    return value


def positive_int(x: Any, name: str) -> int:
    """A Python int ``>= 1``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or int(x) < 1:
        raise InputError(f"Expected {name} to be a positive int, but got {x!r}.")
    return int(x)


def finite_data(t: torch.Tensor, name: str) -> None:
    """Raise unless every entry of a data tensor ``(n, ...)`` is finite, naming the first bad row and column.

    Integer tensors (token ids, labels) pass. The message points at the data, not at a kernel computed from it.
    """
    if t.is_complex():
        raise InputError(f"Expected real numbers in {name}, but got dtype {t.dtype}. Pass the real part or features.")
    where = non_finite(t)
    if where:
        raise InputError(f"Expected {name} to be finite, but it has {where}. Remove or impute those examples.")


def non_finite(t: torch.Tensor) -> str:
    """Where a data tensor ``(n, ...)`` is not finite, in words (``""`` when it is, or holds integers).

    Example:
        >>> non_finite(torch.tensor([[1.0, 2.0], [3.0, float("nan")]]))
        '1 NaN/inf value(s), the first in row 1, column 1 (nan)'
    """
    if not t.is_floating_point():
        return ""
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return ""
    where = tuple(int(i) for i in bad.nonzero()[0])
    column = f", column {where[1] if len(where) == 2 else where[1:]}" if len(where) > 1 else ""
    return f"{int(bad.sum())} NaN/inf value(s), the first in row {where[0]}{column} ({float(t[where]):g})"
