"""A kernel on the boolean cube {-1, 1}^d whose eigensystem is known in closed form.

The product kernel ``K(x, x') = exp(c <x, x'>) = prod_i (cosh c + x_i x'_i sinh c)`` is a function of the
dot product. Under the uniform measure on the cube its eigenfunctions are the parities (Walsh functions)
``chi_S(x) = prod_{i in S} x_i``, orthonormal (``mean_x chi_S chi_T = [S == T]``), with operator eigenvalue

    lambda_S = cosh(c)^(d - |S|) * sinh(c)^|S|,

because each factor ``cosh c + x_i x'_i sinh c`` has eigenvalue ``cosh c`` on the constant and ``sinh c`` on
``x_i``. The eigenvalue of degree ``k`` has multiplicity ``C(d, k)``. This is the independent reference the
spectrum and theory tests compare against (no numerical eigendecomposition involved).
"""

from __future__ import annotations

import itertools
import math

import torch

D = 8
"""Dimension of the cube: M = 2^8 = 256 points."""

C = 0.5
"""Kernel scale: eigenvalues decay by tanh(0.5) = 0.46 per degree."""


def domain(d: int = D) -> torch.Tensor:
    """All ``2^d`` points of the cube, ``(2^d, d)`` float64."""
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)


def kernel(x: torch.Tensor, c: float = C) -> torch.Tensor:
    """``exp(c <x, x'>)`` on the points ``x``, ``(M, M)`` float64."""
    return torch.exp(c * (x @ x.T))


def level_eigenvalues(d: int = D, c: float = C) -> torch.Tensor:
    """Closed-form operator eigenvalue of the degree-``k`` parities, ``k = 0..d``, ``(d + 1,)`` float64."""
    return torch.tensor([math.cosh(c) ** (d - k) * math.sinh(c) ** k for k in range(d + 1)], dtype=torch.float64)


def multiplicities(d: int = D) -> torch.Tensor:
    """``C(d, k)`` for ``k = 0..d``, float64."""
    return torch.tensor([math.comb(d, k) for k in range(d + 1)], dtype=torch.float64)


def parity(x: torch.Tensor, subset: tuple[int, ...]) -> torch.Tensor:
    """``chi_S(x) = prod_{i in S} x_i`` on the points, ``(M,)``."""
    out = torch.ones(x.shape[0], dtype=x.dtype)
    for i in subset:
        out = out * x[:, i]
    return out
