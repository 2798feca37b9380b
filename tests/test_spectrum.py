"""``eigendecompose`` / ``Spectrum`` against independent references (numpy, closed-form spectra)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ntkmonitor
from ntkmonitor.spectrum import PARTIAL_MAX_FRACTION, PARTIAL_MIN_POINTS, PowerLawFit, Spectrum, eigendecompose

from . import hypercube
from .tolerances import PARTIAL_EIGVEC_ATOL, POWER_LAW_RTOL, SPECTRUM_RTOL

DTYPES = [torch.float32, torch.float64]


def _gram(M: int, features: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A PSD random-features kernel ``phi phi^T / features`` with ``phi = tanh(x W + b)``, computed in ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(M, 3, generator=gen, dtype=torch.float64)
    W = torch.randn(3, features, generator=gen, dtype=torch.float64)
    b = torch.randn(features, generator=gen, dtype=torch.float64)
    phi = torch.tanh(x @ W + b).to(dtype)
    return phi @ phi.T / features


def _rbf(M: int, d: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(M, d, generator=gen, dtype=torch.float64)
    return torch.exp(-(torch.cdist(x, x) ** 2) / (2 * d))


def _from_eigenvalues(lam: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A kernel ``Q diag(M lam) Q^T`` with a random orthogonal ``Q`` (float64), and ``Q``."""
    M = lam.shape[0]
    gen = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(M, M, generator=gen, dtype=torch.float64)).Q
    return (Q * (M * lam)) @ Q.T, Q


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_eigenvalues_match_numpy_and_are_float64(dtype):
    K = _gram(60, 8, dtype)
    spec = eigendecompose(K)
    # reference: numpy's eigvalsh of the same (exactly upcast) matrix; float32 eigh would be off by ~1e-7
    ref = np.sort(np.linalg.eigvalsh(K.double().numpy()))[::-1] / 60
    assert spec.eigenvalues.dtype == torch.float64 and spec.eigenvectors.dtype == torch.float64
    assert spec.M == 60 and spec.rank == 60 and spec.complete and spec.method == "eigh"
    err = np.abs(spec.eigenvalues.numpy() - np.clip(ref, 0, None)).max() / ref[0]
    assert err <= SPECTRUM_RTOL
    assert bool((spec.eigenvalues[:-1] >= spec.eigenvalues[1:]).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_eigenpairs_reconstruct_kernel(dtype):
    K = _gram(50, 80, dtype)
    spec = eigendecompose(K)
    U, lam = spec.eigenvectors, spec.eigenvalues
    rebuilt = (U * (spec.M * lam)) @ U.T
    Kd = K.double()
    assert float(torch.linalg.matrix_norm(rebuilt - Kd) / torch.linalg.matrix_norm(Kd)) <= SPECTRUM_RTOL
    assert float((U.T @ U - torch.eye(50, dtype=torch.float64)).abs().max()) <= SPECTRUM_RTOL


def test_hypercube_spectrum_matches_closed_form():
    x = hypercube.domain()
    spec = eigendecompose(hypercube.kernel(x))
    expected = torch.repeat_interleave(hypercube.level_eigenvalues(), hypercube.multiplicities().long())
    expected = expected.sort(descending=True).values
    assert float((spec.eigenvalues - expected).abs().max() / expected[0]) <= SPECTRUM_RTOL
    # a degree-2 parity lives entirely in the degree-2 eigenspace (28 modes after the 1 + 8 above it)
    v = spec.project(hypercube.parity(x, (0, 3)))
    assert float(v[9:37].pow(2).sum()) == pytest.approx(1.0, abs=1e-10)
    assert float(v[:9].abs().max()) < 1e-10 and float(v[37:].abs().max()) < 1e-10


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("outputs", [None, 3])
def test_parseval_and_reconstruction(dtype, outputs):
    K = _gram(40, 5, dtype)
    gen = torch.Generator().manual_seed(1)
    shape = (40,) if outputs is None else (40, outputs)
    g = torch.randn(*shape, generator=gen).to(dtype)
    spec = eigendecompose(K)
    v = spec.project(g)
    assert v.shape == ((40,) if outputs is None else (40, outputs))
    # Parseval per output: sum_i v_i^2 = mean_j g(x_j)^2
    torch.testing.assert_close(v.pow(2).sum(dim=0), g.double().pow(2).mean(dim=0), rtol=1e-12, atol=0)
    torch.testing.assert_close(spec.reconstruct(v), g.double(), rtol=0, atol=1e-12)
    # the definition v_i = u_i^T g / sqrt(M), written out
    torch.testing.assert_close(v, spec.eigenvectors.T @ g.double() / math.sqrt(40))


def test_eigenfunctions_normalized_under_uniform_measure():
    spec = eigendecompose(_gram(30, 4, torch.float64))
    phi = spec.eigenfunctions()
    torch.testing.assert_close(phi.T @ phi / 30, torch.eye(30, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [3, 10])
def test_partial_top_k_matches_full(d):
    M, k = PARTIAL_MIN_POINTS, 12
    assert k <= PARTIAL_MAX_FRACTION * M
    K = _rbf(M, d)
    full = eigendecompose(K)
    part = eigendecompose(K, top_k=k)
    assert part.method == "krylov" and part.rank == k and not part.complete
    ref = np.sort(np.linalg.eigvalsh(K.numpy()))[::-1][:k] / M
    assert np.abs(part.eigenvalues.numpy() - ref).max() / ref[0] <= SPECTRUM_RTOL
    gaps = (full.eigenvalues[: k - 1] - full.eigenvalues[1:k]) / full.eigenvalues[0]
    separated = torch.ones(k, dtype=torch.bool)  # compare vectors only where eigenvalues are well separated
    separated[: k - 1] &= gaps > 1e-4
    separated[1:] &= gaps > 1e-4
    cosines = (part.eigenvectors * full.eigenvectors[:, :k]).sum(dim=0).abs()
    assert int(separated.sum()) >= 3
    assert float((1 - cosines[separated]).max()) <= PARTIAL_EIGVEC_ATOL
    U = part.eigenvectors
    assert float((U.T @ U - torch.eye(k, dtype=torch.float64)).abs().max()) <= 1e-12


def test_partial_top_k_on_low_rank_kernel():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(PARTIAL_MIN_POINTS, 4, generator=gen, dtype=torch.float64)
    part = eigendecompose(x @ x.T, top_k=10)  # rank 4 < top_k: the Krylov space is exhausted
    ref = np.sort(np.linalg.eigvalsh((x @ x.T).numpy()))[::-1][:10] / PARTIAL_MIN_POINTS
    assert np.abs(part.eigenvalues.numpy() - np.clip(ref, 0, None)).max() / ref[0] <= SPECTRUM_RTOL
    U = part.eigenvectors
    assert float((U.T @ U - torch.eye(10, dtype=torch.float64)).abs().max()) <= 1e-12


def test_partial_falls_back_on_a_flat_spectrum_and_small_probes():
    M = PARTIAL_MIN_POINTS
    lam = 1.0 + 1e-3 * torch.rand(M, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    K, _ = _from_eigenvalues(lam)
    spec = eigendecompose(K, top_k=5)  # nearly degenerate: Krylov cannot converge -> eigh
    assert spec.method == "eigh"
    torch.testing.assert_close(spec.eigenvalues, lam.sort(descending=True).values[:5], rtol=1e-12, atol=0)
    small = eigendecompose(_gram(100, 5, torch.float64), top_k=3)
    assert small.method == "eigh" and small.rank == 3


def test_top_k_does_not_consume_global_rng():
    K = _rbf(PARTIAL_MIN_POINTS, 5)
    state = torch.random.get_rng_state()
    eigendecompose(K, top_k=5)
    assert torch.equal(state, torch.random.get_rng_state())


def test_power_law_fit_recovers_exponent():
    i = torch.arange(1, 201, dtype=torch.float64)
    lam = 3.0 * i.pow(-1.7)
    K, _ = _from_eigenvalues(lam)
    spec = eigendecompose(K)
    fit = spec.power_law_fit(1, 101)
    assert isinstance(fit, PowerLawFit) and fit.num_modes == 100
    assert fit.c == pytest.approx(3.0, rel=1e-8) and fit.alpha == pytest.approx(1.7, rel=1e-8)
    assert fit.r2 == pytest.approx(1.0, abs=1e-10)
    # exact spectrum (no decomposition round-off) and a noisy one
    exact = Spectrum(lam, torch.eye(200, dtype=torch.float64), M=200)
    fit = exact.power_law_fit(10, 201)
    assert fit.c == pytest.approx(3.0, rel=POWER_LAW_RTOL) and fit.alpha == pytest.approx(1.7, rel=POWER_LAW_RTOL)
    torch.testing.assert_close(fit(i), lam)
    noise = torch.exp(0.3 * torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    noisy = Spectrum((lam * noise).sort(descending=True).values, torch.eye(200, dtype=torch.float64), M=200)
    fit = noisy.power_law_fit(5, 150)
    assert fit.alpha == pytest.approx(1.7, rel=0.05) and 0.9 < fit.r2 < 1.0
    assert set(fit.to_dict()) == {"c", "alpha", "r2", "start", "stop", "num_modes"}


def test_power_law_fit_skips_zero_eigenvalues_and_validates_range():
    lam = torch.tensor([1.0, 0.25, 1 / 9, 0.0, 0.0], dtype=torch.float64)
    spec = Spectrum(lam, torch.eye(5, dtype=torch.float64), M=5)
    fit = spec.power_law_fit()
    assert fit.num_modes == 3 and fit.alpha == pytest.approx(2.0, rel=1e-12)
    for start, stop in [(0, 3), (3, 3), (1, 7)]:
        with pytest.raises(ntkmonitor.InputError, match="Expected"):
            spec.power_law_fit(start, stop)
    with pytest.raises(ntkmonitor.InputError, match="two positive eigenvalues"):
        spec.power_law_fit(3, 6)


def test_spectrum_shape_metrics_against_formulas():
    lam = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    spec = Spectrum(lam, torch.eye(5, dtype=torch.float64), M=5)
    p = np.array([4, 2, 1, 1]) / 8
    assert spec.effective_rank() == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert spec.participation_ratio() == pytest.approx(64 / 22, rel=1e-12)
    assert spec.condition_number(3) == 4.0 and spec.condition_number() == math.inf
    flat = Spectrum(torch.ones(7, dtype=torch.float64), torch.eye(7, dtype=torch.float64), M=7)
    assert flat.effective_rank() == pytest.approx(7.0) and flat.participation_ratio() == pytest.approx(7.0)
    zero = Spectrum(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), M=3)
    assert zero.effective_rank() == 0.0 and zero.participation_ratio() == 0.0
    assert math.isnan(zero.condition_number())
    with pytest.raises(ntkmonitor.InputError, match="Expected r <= 5"):
        spec.condition_number(6)


def test_warns_on_significantly_negative_eigenvalue_and_clips():
    lam = torch.tensor([1.0, 0.5, 0.2, -0.05], dtype=torch.float64)
    K, _ = _from_eigenvalues(lam)
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="positive semi-definite"):
        spec = eigendecompose(K)
    assert float(spec.eigenvalues.min()) == 0.0
    torch.testing.assert_close(spec.eigenvalues[:3], lam[:3], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_warning_on_round_off(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=gen).to(dtype)
    K = x @ x.T  # rank 10: 190 eigenvalues are round-off, some negative
    assert float(torch.linalg.eigvalsh(K.double()).min()) < 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = eigendecompose(K)
    assert float(spec.eigenvalues.min()) >= 0


def test_input_errors():
    with pytest.raises(ntkmonitor.InputError, match=r"square matrix \(M, M\)"):
        eigendecompose(torch.ones(3, 4))
    with pytest.raises(ntkmonitor.InputError, match="square matrix"):
        eigendecompose(torch.ones(3, 3, 2, 2))
    with pytest.raises(ntkmonitor.InputError, match="symmetric"):
        eigendecompose(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ntkmonitor.InputError, match="finite"):
        eigendecompose(torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]))
    with pytest.raises(ntkmonitor.InputError, match="top_k <= M"):
        eigendecompose(torch.eye(3), top_k=4)
    with pytest.raises(ntkmonitor.InputError, match="positive int"):
        eigendecompose(torch.eye(3), top_k=0)
    with pytest.raises(ntkmonitor.InputError, match="torch.Tensor"):
        eigendecompose("K")
    spec = eigendecompose(torch.eye(3))
    with pytest.raises(ntkmonitor.InputError, match=r"shape \(3,\) or \(3, k\)"):
        spec.project(torch.ones(4))
    with pytest.raises(ntkmonitor.InputError, match=r"shape \(3,\) or \(3, k\)"):
        spec.reconstruct(torch.ones(2))
