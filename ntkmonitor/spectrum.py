r"""The spectrum of a kernel on M probe points: :func:`eigendecompose` -> :class:`Spectrum`.

The probe points ``x_1 .. x_M`` are treated as samples of the data distribution, so the kernel matrix
``K`` (trace mode, ``(M, M)``) stands for the integral operator ``(T g)(x) = E_x'[K(x, x') g(x')]``:

.. math::

    K u_i = (M \lambda_i) u_i, \qquad \phi_i(x_j) = \sqrt{M}\, u_{i,j}, \qquad
    \frac{1}{M} \sum_j \phi_i(x_j)^2 = 1 .

``lambda_i`` are the *operator* eigenvalues (``eig(K) / M``, sorted descending, clipped at 0) and
``phi_i`` the eigenfunctions sampled on the probe, orthonormal under the uniform measure on the probe.
The coefficients of a function ``g`` sampled on the probe are ``v_i = <phi_i, g> = u_i^T g / sqrt(M)``;
with a complete basis Parseval holds: ``sum_i v_i^2 = mean_j g(x_j)^2``.

This is the normalization of the eigenlearning theory (Simon, Dickens, DeWeese,
https://arxiv.org/abs/2110.03922), see :mod:`ntkmonitor.theory`.

The eigendecomposition always runs in float64 (``torch.linalg.eigh`` on float32 loses the small
eigenvalues the theory needs), whatever the kernel's dtype.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from . import _checks
from .errors import InputError, NTKMonitorWarning

__all__ = [
    "Spectrum",
    "PowerLawFit",
    "eigendecompose",
    "eigh_top",
    "PARTIAL_MIN_POINTS",
    "PARTIAL_MAX_FRACTION",
]

PARTIAL_MIN_POINTS = 1024
"""Below this many probe points ``top_k`` always uses the full ``eigh`` (it is cheap there)."""

PARTIAL_MAX_FRACTION = 0.05
"""``top_k <= PARTIAL_MAX_FRACTION * M`` (and ``M >= PARTIAL_MIN_POINTS``) selects the partial method."""

_PARTIAL_TOL = 1e-11
"""Residual ``||K v - mu v|| <= tol * |mu_max|`` at which the partial (Krylov) method stops (float64)."""


@dataclass(frozen=True)
class PowerLawFit:
    r"""A least-squares fit ``lambda_i ~ c * i^(-alpha)`` in log-log space (1-based mode index ``i``).

    Attributes:
        c: the prefactor ``c`` (the fitted ``lambda_1``).
        alpha: the decay exponent ``alpha``.
        r2: coefficient of determination of the fit of ``log lambda`` on ``log i`` (1 = perfect).
        start: first fitted mode index (1-based, inclusive).
        stop: end of the fitted range (1-based, exclusive).
        num_modes: how many modes entered the fit (zero eigenvalues are left out).

    Example:
        >>> fit = PowerLawFit(c=2.0, alpha=1.5, r2=1.0, start=1, stop=10, num_modes=9)
        >>> float(fit(torch.tensor([1.0, 4.0]))[1])
        0.25
    """

    c: float
    alpha: float
    r2: float
    start: int
    stop: int
    num_modes: int

    def __call__(self, index: torch.Tensor | float) -> torch.Tensor:
        """The fitted eigenvalues ``c * i^(-alpha)`` at 1-based mode indices ``index`` (e.g. to extrapolate a tail).

        Args:
            index: 1-based mode indices, any shape.

        Returns:
            float64 tensor of the same shape.
        """
        i = torch.as_tensor(index, dtype=torch.float64)
        return self.c * i.pow(-self.alpha)

    def to_dict(self) -> dict[str, float | int]:
        """The fit as a JSON-friendly dict."""
        return {
            "c": self.c,
            "alpha": self.alpha,
            "r2": self.r2,
            "start": self.start,
            "stop": self.stop,
            "num_modes": self.num_modes,
        }


@dataclass(frozen=True, eq=False)
class Spectrum:
    r"""Operator eigenvalues and eigenvectors of a kernel on ``M`` probe points.

    ``K u_i = (M lambda_i) u_i``; eigenfunctions on the probe ``phi_i = sqrt(M) u_i``; coefficients of
    a function ``g`` on the probe ``v_i = u_i^T g / sqrt(M)`` (Simon et al. 2021,
    https://arxiv.org/abs/2110.03922). Create it with :func:`eigendecompose`.

    Attributes:
        eigenvalues: ``(r,)`` float64, operator eigenvalues ``lambda_i = eig(K) / M``, descending, ``>= 0``.
        eigenvectors: ``(M, r)`` float64, orthonormal columns ``u_i``.
        M: number of probe points.
        method: ``"eigh"`` (full decomposition, possibly truncated to ``top_k``) or ``"krylov"`` (partial,
            top ``r`` only; see :func:`eigendecompose`).

    Example:
        >>> x = torch.randn(50, 3)
        >>> spec = eigendecompose(x @ x.T)
        >>> spec.eigenvalues.shape, spec.eigenvectors.shape
        (torch.Size([50]), torch.Size([50, 50]))
        >>> v = spec.project(x[:, 0])  # coefficients of the first feature
        >>> bool(torch.isclose(v.pow(2).sum(), x[:, 0].double().pow(2).mean()))  # Parseval
        True
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    M: int
    method: str = "eigh"

    def __post_init__(self) -> None:
        lam, U = self.eigenvalues, self.eigenvectors
        if not isinstance(lam, torch.Tensor) or not isinstance(U, torch.Tensor) or lam.ndim != 1:
            raise InputError(
                "Expected eigenvalues (r,) and eigenvectors (M, r) tensors, but got other types or shapes. Build a "
                "Spectrum with eigendecompose(K)."
            )
        if U.shape != (self.M, lam.shape[0]):
            raise InputError(
                f"Expected eigenvectors of shape (M, r) = ({self.M}, {lam.shape[0]}), but got {tuple(U.shape)}."
            )

    @property
    def rank(self) -> int:
        """``r``, the number of eigenpairs held (``M`` for a full decomposition)."""
        return int(self.eigenvalues.shape[0])

    @property
    def complete(self) -> bool:
        """Whether the eigenvectors span the whole probe space (``r == M``), so that Parseval holds."""
        return self.rank == self.M

    # ------------------------------------------------------------------ functions on the probe
    def eigenfunctions(self) -> torch.Tensor:
        """The eigenfunctions sampled on the probe, ``phi = sqrt(M) u``.

        Returns:
            ``(M, r)`` float64; column ``i`` is ``phi_i(x_j)``, with ``mean_j phi_i(x_j)^2 = 1``.

        Example:
            >>> spec = eigendecompose(torch.eye(4))
            >>> spec.eigenfunctions().pow(2).mean(dim=0)
            tensor([1., 1., 1., 1.], dtype=torch.float64)
        """
        return self.eigenvectors * math.sqrt(self.M)

    def project(self, g: torch.Tensor) -> torch.Tensor:
        """Coefficients ``v_i = <phi_i, g> = u_i^T g / sqrt(M)`` of a function sampled on the probe.

        Args:
            g: ``(M,)`` or ``(M, k)`` values on the probe points (multi-output: one column per output).

        Returns:
            ``(r,)`` or ``(r, k)`` float64 coefficients. With a complete basis
            ``sum_i v_i^2 = mean_j g(x_j)^2`` (Parseval, per output).

        Raises:
            InputError: ``g`` does not have ``M`` rows.

        Example:
            >>> spec = eigendecompose(torch.diag(torch.tensor([3.0, 2.0, 1.0])))
            >>> spec.project(torch.tensor([1.0, 0.0, 0.0])).abs()
            tensor([0.5774, 0.0000, 0.0000], dtype=torch.float64)
        """
        values, flat = _checks.targets(g, self.M, "g")
        coeffs = self.eigenvectors.T @ values.to(self.eigenvectors.device) / math.sqrt(self.M)
        return coeffs[:, 0] if flat else coeffs

    def reconstruct(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The function on the probe with the given coefficients, ``g = sum_i v_i phi_i = sqrt(M) U v``.

        Args:
            coefficients: ``(r,)`` or ``(r, k)``.

        Returns:
            ``(M,)`` or ``(M, k)`` float64. ``reconstruct(project(g)) == g`` for a complete basis; for a
            partial one it is the projection of ``g`` onto the top-``r`` eigenspace.

        Example:
            >>> spec = eigendecompose(torch.tensor([[2.0, 1.0], [1.0, 2.0]]))
            >>> g = torch.tensor([1.0, -3.0])
            >>> torch.allclose(spec.reconstruct(spec.project(g)), g.double())
            True
        """
        values, flat = _checks.targets(coefficients, self.rank, "coefficients", what="eigenmode")
        g = self.eigenvectors @ values.to(self.eigenvectors.device) * math.sqrt(self.M)
        return g[:, 0] if flat else g

    # ------------------------------------------------------------------ shape of the spectrum
    def effective_rank(self) -> float:
        """Entropy effective rank ``exp(-sum_i p_i log p_i)`` with ``p_i = lambda_i / sum_j lambda_j``.

        Roy and Vetterli 2007, https://infoscience.epfl.ch/record/110188. Between 1 (one mode) and
        ``r`` (flat spectrum); 0.0 for an all-zero spectrum.

        Returns:
            A Python float.

        Example:
            >>> round(eigendecompose(torch.eye(8)).effective_rank(), 6)
            8.0
        """
        total = float(self.eigenvalues.sum())
        if total <= 0:
            return 0.0
        p = self.eigenvalues / total
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))

    def participation_ratio(self) -> float:
        """Participation ratio ``(sum_i lambda_i)^2 / sum_i lambda_i^2`` (0.0 for an all-zero spectrum).

        A second effective dimension, more sensitive to the top modes than :meth:`effective_rank`
        (e.g. Gao et al. 2017, https://doi.org/10.1101/214262).

        Returns:
            A Python float between 1 and ``r`` (or 0.0).

        Example:
            >>> eigendecompose(torch.diag(torch.tensor([1.0, 1.0, 0.0]))).participation_ratio()
            2.0
        """
        sq = float(self.eigenvalues.pow(2).sum())
        if sq <= 0:
            return 0.0
        return float(self.eigenvalues.sum()) ** 2 / sq

    def condition_number(self, r: int | None = None) -> float:
        """Condition number ``lambda_1 / lambda_r`` of the top-``r`` block.

        Args:
            r: block size, ``1 <= r <= rank``; ``None`` for all eigenpairs held.

        Returns:
            A Python float; ``inf`` when ``lambda_r == 0``, ``nan`` when ``lambda_1 == 0``.

        Example:
            >>> eigendecompose(torch.diag(torch.tensor([4.0, 2.0, 1.0]))).condition_number(2)
            2.0
        """
        r = self.rank if r is None else _checks.positive_int(r, "r")
        if r > self.rank:
            raise InputError(
                f"Expected r <= {self.rank} (the number of eigenpairs held), but got r={r}. Decompose with a "
                "larger top_k."
            )
        top, last = float(self.eigenvalues[0]), float(self.eigenvalues[r - 1])
        if top <= 0:
            return math.nan
        return math.inf if last <= 0 else top / last

    def power_law_fit(self, start: int = 1, stop: int | None = None) -> PowerLawFit:
        """Least-squares fit of ``log lambda_i = log c - alpha log i`` over modes ``start <= i < stop``.

        Mode indices are 1-based (``i = 1`` is the largest eigenvalue); the range is half-open like
        ``range(start, stop)``. Zero eigenvalues in the range are left out. A power-law tail
        ``lambda_i ~ c i^-alpha`` is typical of NTK spectra on natural data (e.g. Bordelon, Canatar,
        Pehlevan 2020, https://arxiv.org/abs/2002.02561) and can extrapolate the spectrum beyond the probe.

        Args:
            start: first mode index (1-based, inclusive).
            stop: end of the range (1-based, exclusive); ``None`` for ``rank + 1`` (up to the last mode).

        Returns:
            A :class:`PowerLawFit` with ``c``, ``alpha`` and ``r2``.

        Raises:
            InputError: the range is invalid or holds fewer than two positive eigenvalues.

        Example:
            >>> lam = torch.arange(1, 101, dtype=torch.float64).pow(-2.0)
            >>> spec = Spectrum(lam, torch.eye(100, dtype=torch.float64), M=100)
            >>> fit = spec.power_law_fit(2, 50)
            >>> round(fit.c, 6), round(fit.alpha, 6), round(fit.r2, 6)
            (1.0, 2.0, 1.0)
        """
        start = _checks.positive_int(start, "start")
        stop = self.rank + 1 if stop is None else _checks.positive_int(stop, "stop")
        if not start < stop <= self.rank + 1:
            raise InputError(
                f"Expected 1 <= start < stop <= {self.rank + 1} (1-based mode indices, stop exclusive), but got "
                f"start={start}, stop={stop}."
            )
        lam = self.eigenvalues[start - 1 : stop - 1].cpu()
        idx = torch.arange(start, stop, dtype=torch.float64)
        keep = lam > 0
        if int(keep.sum()) < 2:
            raise InputError(
                f"Expected at least two positive eigenvalues in modes {start}..{stop - 1}, but got "
                f"{int(keep.sum())}. Fit a range of nonzero modes."
            )
        xs, ys = idx[keep].log(), lam[keep].log()
        xm, ym = xs.mean(), ys.mean()
        slope = float(((xs - xm) * (ys - ym)).sum() / (xs - xm).pow(2).sum())
        intercept = float(ym) - slope * float(xm)
        residual = float((ys - (intercept + slope * xs)).pow(2).sum())
        total = float((ys - ym).pow(2).sum())
        r2 = 1.0 - residual / total if total > 0 else 1.0
        return PowerLawFit(
            c=math.exp(intercept), alpha=-slope, r2=r2, start=start, stop=stop, num_modes=int(keep.sum())
        )


def eigendecompose(K: torch.Tensor, *, top_k: int | None = None) -> Spectrum:
    r"""Operator eigenvalues and eigenvectors of a kernel matrix on ``M`` probe points.

    .. math::

        K u_i = (M \lambda_i) u_i, \qquad \lambda_1 \ge \lambda_2 \ge \dots \ge 0

    (the normalization of Simon, Dickens, DeWeese 2021, https://arxiv.org/abs/2110.03922). The
    decomposition always runs in float64 (``torch.linalg.eigh``), whatever ``K``'s dtype.

    **Negative eigenvalues** are clipped to 0. A kernel (Gram) matrix is positive semi-definite, so a
    negative eigenvalue is round-off unless it is larger in magnitude than
    ``M * eps(K.dtype) * max_i |lambda_i|`` (``eps`` of ``K``'s own float dtype: a float32 kernel carries
    float32 round-off in every entry, and the spectral norm of an ``M x M`` perturbation of entrywise
    size ``e`` can reach ``M e``). Beyond that an :class:`~ntkmonitor.NTKMonitorWarning` is emitted.

    **Partial decomposition.** With ``top_k`` set, ``M >= PARTIAL_MIN_POINTS`` (1024) and
    ``top_k <= PARTIAL_MAX_FRACTION * M`` (5 %), the top ``top_k`` eigenpairs are computed by a restarted
    block Krylov method (block ``top_k + 10``, Krylov depth up to 8, Rayleigh-Ritz on the Krylov space,
    a private fixed-seed random start that leaves the global RNG alone), which costs ``O(M^2 top_k)``
    instead of the ``O(M^3)`` of ``eigh``. It stops when every wanted residual satisfies
    ``||K v - mu v|| <= 1e-11 max|mu|`` and falls back to ``eigh`` when that has not happened within a
    budget comparable to a full decomposition (e.g. for a nearly flat spectrum). The method finds the
    eigenvalues largest in magnitude, which for a positive semi-definite kernel are the largest. Otherwise
    ``eigh`` runs and the result is truncated. The negative-eigenvalue check sees only the eigenvalues
    computed. :attr:`Spectrum.method` tells which path ran.

    Args:
        K: ``(M, M)`` symmetric kernel of the probe with itself (``empirical_ntk(model, x, mode="trace")``),
            any float dtype, any device.
        top_k: keep only the ``top_k`` largest eigenpairs; ``None`` for all ``M``.

    Returns:
        A :class:`Spectrum` with float64 ``eigenvalues (r,)`` and ``eigenvectors (M, r)`` on ``K``'s
        device, ``r = top_k or M``.

    Raises:
        InputError: ``K`` is not a finite symmetric square matrix, or ``top_k`` is not in ``1..M``.

    Example:
        >>> x = torch.randn(20, 5)
        >>> spec = eigendecompose(x @ x.T)
        >>> spec.eigenvalues.dtype, int((spec.eigenvalues > 1e-6 * spec.eigenvalues[0]).sum())
        (torch.float64, 5)
        >>> eigendecompose(x @ x.T, top_k=3).eigenvalues.shape
        torch.Size([3])
    """
    Kd, dtype = _checks.symmetric_matrix(K, "K")
    M = Kd.shape[0]
    if top_k is not None:
        top_k = _checks.positive_int(top_k, "top_k")
        if top_k > M:
            raise InputError(f"Expected top_k <= M = {M} (the number of probe points), but got top_k={top_k}.")
    mu, U, method = eigh_top(Kd, top_k)
    lam = mu / M
    scale = float(lam.abs().max()) if lam.numel() else 0.0
    roundoff = M * torch.finfo(dtype).eps * scale
    smallest = float(lam.min())
    if smallest < -roundoff:
        warnings.warn(
            f"Expected a positive semi-definite kernel, but its smallest eigenvalue is {smallest:.3g} (largest "
            f"{float(lam.max()):.3g}), beyond round-off ({roundoff:.3g} = M * eps * max|lambda| for {dtype}). "
            "Negative eigenvalues were clipped to 0. Check that K is the kernel of the probe with itself, computed "
            "in enough precision (empirical_ntk(..., dtype=torch.float64)).",
            NTKMonitorWarning,
            stacklevel=2,
        )
    return Spectrum(eigenvalues=lam.clamp_min(0.0), eigenvectors=U, M=M, method=method)


def eigh_top(Kd: torch.Tensor, top_k: int | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Eigenvalues of a symmetric float64 matrix ``Kd`` (descending) and eigenvectors, top ``top_k`` or all.

    For ``M >= PARTIAL_MIN_POINTS`` and ``top_k <= PARTIAL_MAX_FRACTION * M`` a block Krylov method finds the top
    ``top_k`` pairs; otherwise (or when it does not converge) the full ``torch.linalg.eigh``.

    Args:
        Kd: ``(M, M)`` symmetric float64 matrix.
        top_k: how many leading pairs, or ``None`` for all.

    Returns:
        ``(eigenvalues (t,), eigenvectors (M, t), method)`` with ``method`` ``"krylov"`` or ``"eigh"``.

    Example:
        >>> mu, U, how = eigh_top(torch.diag(torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)), 2)
        >>> mu.tolist(), how
        ([3.0, 2.0], 'eigh')
    """
    M = Kd.shape[0]
    if top_k is not None and M >= PARTIAL_MIN_POINTS and top_k <= PARTIAL_MAX_FRACTION * M:
        found = _block_krylov(Kd, top_k)
        if found is not None:
            return found[0], found[1], "krylov"
    mu, U = torch.linalg.eigh(Kd)
    mu, U = mu.flip(0), U.flip(1)
    if top_k is not None:
        mu, U = mu[:top_k], U[:, :top_k]
    return mu, U, "eigh"


def _orthonormalize(W: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    """Orthonormal columns orthogonal to ``basis`` extending the span of ``W`` (block Gram-Schmidt, twice).

    Normalizing between the two passes keeps the result orthogonal to ``basis`` even when ``W`` is
    (numerically) inside it, e.g. for a low-rank kernel whose Krylov space is exhausted.
    """
    for _ in range(2):
        for B in basis:
            W = W - B @ (B.T @ W)
        W = torch.linalg.qr(W).Q
    return W


def _block_krylov(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Top-``k`` (largest magnitude) eigenpairs of symmetric float64 ``A`` by restarted block Krylov iterations.

    Each cycle builds the block Krylov space ``[V, A V, ..., A^depth V]`` (orthonormalized), solves the
    Rayleigh-Ritz problem on it, and restarts from the best Ritz vectors. Returns ``None`` when it has
    not converged within a budget comparable to a full ``eigh``.
    """
    M = A.shape[0]
    block = min(M, k + 10)
    depth = max(1, min(8, M // (4 * block) - 1))  # Krylov space of at most ~M/4 columns
    gen = torch.Generator(device=A.device).manual_seed(0x5EED)
    V = torch.linalg.qr(torch.randn(M, block, generator=gen, dtype=A.dtype, device=A.device)).Q
    # Budget: about the cost of a full eigh (~M / block products of A with a block on CPU).
    cycles = max(3, M // (4 * block * (depth + 1)))
    for _ in range(cycles):
        basis, images = [V], []
        for _ in range(depth):
            W = A @ basis[-1]
            images.append(W)
            if sum(b.shape[1] for b in basis) + block > M:
                break
            basis.append(_orthonormalize(W, basis))
        if len(images) < len(basis):
            images.append(A @ basis[-1])
        Q, AQ = torch.cat(basis, dim=1), torch.cat(images, dim=1)
        H = Q.T @ AQ
        theta, S = torch.linalg.eigh(0.5 * (H + H.T))
        order = torch.argsort(theta.abs(), descending=True)
        theta, S = theta[order], S[:, order]
        Y, AY = Q @ S[:, :k], AQ @ S[:, :k]
        scale = float(theta.abs().max())
        residual = torch.linalg.vector_norm(AY - Y * theta[:k], dim=0)
        if scale == 0.0 or float(residual.max()) <= _PARTIAL_TOL * scale:
            top = torch.argsort(theta[:k], descending=True)
            return theta[:k][top], Y[:, top]
        V = torch.linalg.qr(Q @ S[:, :block]).Q
    return None
