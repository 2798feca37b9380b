"""ProbeEstimator against answers it does not compute itself.

The reference model is linear regression on Gaussian features: ``x ~ N(0, diag(sigma))`` in ``d`` dimensions,
kernel ``K(x, x') = x . x'``. Its operator eigenvalues are exactly ``sigma_i`` (eigenfunctions
``x_i / sqrt(sigma_i)``) and a target ``y = x . beta + noise`` has exact coefficients ``v_i = beta_i sqrt(sigma_i)``,
so :func:`ntkmonitor.predict` on the *population* spectrum gives the theory in closed form, and kernel regression
on fresh samples (solved here with ``torch.linalg.solve``) gives the Monte-Carlo truth. The estimator only ever
sees a probe of ``M`` samples. The benchmark ``benchmarks/bench_prediction.py`` does the same on real networks'
kernels (``tests/test_benchmarks.py`` smoke-tests it).
"""

from __future__ import annotations

import math

import pytest
import torch

import ntkmonitor
from ntkmonitor import InputError, ProbeEstimator, predict
from ntkmonitor.spectrum import eigendecompose
from ntkmonitor.tracker import predict_from_spectrum

from .tolerances import (
    ESTIMATOR_COMPLEXITY_RTOL,
    ESTIMATOR_COVERAGE_MIN,
    ESTIMATOR_FINITE_RANK_RTOL,
    ESTIMATOR_LEARNABILITY_ATOL,
    ESTIMATOR_MSE_RTOL,
    ESTIMATOR_SELF_CHECK_GAP,
)

D = 4000  # features: more than any training set below, so the ridgeless theory has a solution
NOISE = 0.1
SIGMA = torch.arange(1, D + 1, dtype=torch.float64).pow(-1.3)
BETA = torch.arange(1, D + 1, dtype=torch.float64).pow(-0.6) * torch.where(torch.arange(D) % 2 == 0, 1.0, -1.0)
COEFFICIENTS = BETA * SIGMA.sqrt()
POWER = float(COEFFICIENTS.pow(2).sum())


def _draw(m: int, generator: torch.Generator, d: int = D, noise: float = NOISE) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.randn(m, d, generator=generator, dtype=torch.float64) * SIGMA[:d].sqrt()
    y = X @ BETA[:d] + math.sqrt(noise) * torch.randn(m, generator=generator, dtype=torch.float64)
    return X, y


def _theory(n: int) -> tuple[float, float]:
    """Closed-form theory: test MSE against noisy labels, and learnability of the noisy labels ``<y, f>/<y, y>``."""
    p = predict(SIGMA, COEFFICIENTS, n, noise=NOISE)
    return p.test_mse, p.learnability * POWER / (POWER + NOISE)


def _probe(M: int = 256, seed: int = 0, dtype: torch.dtype = torch.float64) -> ProbeEstimator:
    X, y = _draw(M, torch.Generator().manual_seed(seed))
    return ProbeEstimator((X @ X.T).to(dtype), y.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n", [64, 128, 256])
def test_matches_the_closed_form_theory_within_the_probes_reach(dtype, n):
    est = _probe(dtype=dtype)
    p = est.predict(n)
    mse, learn = _theory(n)
    assert p.regime == "resolved" and n <= est.reach
    assert p.test_mse == pytest.approx(mse, rel=ESTIMATOR_MSE_RTOL)
    assert p.learnability == pytest.approx(learn, abs=ESTIMATOR_LEARNABILITY_ATOL)


def test_matches_monte_carlo_kernel_regression_and_the_complexity():
    """Truth by simulation: ridgeless regression on fresh training sets, tested on fresh points."""
    est, n, g = _probe(), 128, torch.Generator().manual_seed(5)
    mse, learn, complexity = [], [], []
    for _ in range(10):
        Xtr, ytr = _draw(n, g)
        Xte, yte = _draw(2000, g)
        alpha = torch.linalg.solve(Xtr @ Xtr.T, ytr)
        f = Xte @ Xtr.T @ alpha
        mse.append(float((f - yte).pow(2).mean()))
        learn.append(float((f * yte).sum() / yte.pow(2).sum()))
        complexity.append(math.sqrt(2 * float(ytr @ alpha) / n))  # sqrt(2 y^T K^-1 y / n), Arora et al. 2019
    p = est.predict(n)
    assert p.test_mse == pytest.approx(sum(mse) / 10, rel=ESTIMATOR_MSE_RTOL)
    assert p.learnability == pytest.approx(sum(learn) / 10, abs=ESTIMATOR_LEARNABILITY_ATOL)
    assert p.complexity == pytest.approx(sum(complexity) / 10, rel=ESTIMATOR_COMPLEXITY_RTOL)


def test_negative_sample_ridges_reach_beyond_the_probe():
    est = _probe()
    assert 1.3 * est.M < est.reach < 3 * est.M
    assert est.predict(est.reach * 0.95).regime == "resolved"
    assert est.predict(est.reach * 1.5).regime == "extrapolated"


def test_interval_covers_the_closed_form_theory_across_probes_and_sizes():
    hits = []
    for seed in range(10):
        est = _probe(M=128, seed=seed)
        for n in (32, 128, 256, 512, 1024):
            p = est.predict(n)
            mse, learn = _theory(n)
            lo, hi = p.learnability_interval
            mlo, mhi = p.test_mse_interval
            assert lo <= p.learnability <= hi and mlo <= p.test_mse <= mhi
            hits.append(lo <= learn <= hi and mlo <= mse <= mhi)
    assert sum(hits) / len(hits) >= ESTIMATOR_COVERAGE_MIN


def test_interval_widens_with_extrapolation_and_names_a_probe_size():
    est = _probe(M=64)
    near, far = est.predict(32), est.predict(100 * 64)
    assert far.regime == "extrapolated" and far.wide
    width = lambda p: p.learnability_interval[1] - p.learnability_interval[0]  # noqa: E731
    assert width(far) > width(near)
    assert far.suggested_probe_size > 64 and f"{far.suggested_probe_size} points" in far.note
    assert "beyond what the 64-point probe resolves" in far.note


def test_self_check_agrees_where_the_theory_is_exact():
    check = _probe(M=256).self_check(splits=6)
    assert check.sizes.tolist() == [16, 32, 64, 128]
    assert check.learnability_gap < ESTIMATOR_SELF_CHECK_GAP
    assert 1 / (1 + ESTIMATOR_MSE_RTOL) < check.mse_ratio < 1 + ESTIMATOR_MSE_RTOL
    assert check.coverage >= 0.75


def test_finite_rank_kernel_is_least_squares_beyond_its_rank():
    """Ridgeless regression on ``r`` Gaussian features, ``n > r``: E = noise * (n - 1) / (n - r - 1) (OLS, exact)."""
    d, M, n, noise = 20, 200, 80, 0.25
    g = torch.Generator().manual_seed(3)
    X, y = _draw(M, g, d=d, noise=noise)
    est = ProbeEstimator(X @ X.T, y)
    p = est.predict(n)
    assert est.rank == d and p.regime == "finite-rank" and p.kappa == 0.0
    # all signal is in the span: the unexplained power is the noise; RSS/(M - r) estimates it without bias
    assert p.test_mse == pytest.approx(noise * (n - 1) / (n - d - 1), rel=ESTIMATOR_FINITE_RANK_RTOL)
    assert p.learnability == pytest.approx(1 - noise / float(y.pow(2).mean()), abs=ESTIMATOR_LEARNABILITY_ATOL)
    assert est.predict(d - 5).regime == "resolved"


def test_multi_output_sums_power_and_averages_mse():
    g = torch.Generator().manual_seed(4)
    X, y = _draw(128, g)
    K = X @ X.T
    Y = torch.stack([y, -2 * y], dim=1)
    single, double = ProbeEstimator(K, y, resamples=0).predict(64), ProbeEstimator(K, Y, resamples=0).predict(64)
    assert double.learnability == pytest.approx(single.learnability, rel=1e-10)  # same shape of target
    assert double.test_mse_per_output.tolist() == pytest.approx([single.test_mse, 4 * single.test_mse], rel=1e-10)
    assert double.test_mse == pytest.approx(2.5 * single.test_mse, rel=1e-10)


def test_ridge_and_extra_noise():
    est = _probe()
    plain, ridged, noisy = est.predict(128), est.predict(128, ridge=10.0), est.predict(128, noise=0.5)
    assert ridged.kappa > plain.kappa and ridged.learnability < plain.learnability and ridged.train_mse > 0
    assert plain.train_mse == 0.0
    assert noisy.learnability == plain.learnability
    assert noisy.test_mse == pytest.approx(plain.test_mse + plain.overfitting_coefficient * 0.5, rel=1e-9)


def test_does_not_consume_the_global_rng_and_is_deterministic():
    X, y = _draw(64, torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a = ProbeEstimator(X @ X.T, y).predict(500)
    b = ProbeEstimator(X @ X.T, y).predict(500)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"K": torch.ones(3, 4)}, "square matrix"),
        ({"K": torch.eye(2)}, "at least 3 points"),
        ({"y": torch.ones(5)}, "shape"),
        ({"resamples": -1}, "resamples"),
        ({"confidence": 1.0}, "confidence"),
        ({"edges": (1.2,)}, "edges"),
        ({"spectrum": "no"}, "complete Spectrum"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    X, y = _draw(8, torch.Generator().manual_seed(0))
    args = {"K": X @ X.T, "y": y, **kwargs}
    with pytest.raises(InputError, match=match):
        ProbeEstimator(args.pop("K"), args.pop("y"), **args)


def test_predict_rejects_bad_sizes():
    est = _probe(M=32)
    with pytest.raises(InputError, match="n"):
        est.predict(0)
    with pytest.raises(InputError, match="self-check sizes"):
        est.self_check([31])


def test_predict_from_spectrum_accepts_a_1d_target():
    """Regression: ``predict_from_spectrum(spec, spec.project(y), n)`` with a 1-D ``y`` raised IndexError."""
    X, y = _draw(40, torch.Generator().manual_seed(0))
    spec = eigendecompose(X @ X.T)
    flat, _ = predict_from_spectrum(spec, spec.project(y), 100)
    column, _ = predict_from_spectrum(spec, spec.project(y[:, None]), 100)
    assert flat.learnability == pytest.approx(column.learnability, rel=1e-12)


def test_one_shot_function_equals_the_estimator():
    X, y = _draw(48, torch.Generator().manual_seed(2))
    one = ntkmonitor.predict_from_probe(X @ X.T, y, 100)
    assert one.to_dict() == ProbeEstimator(X @ X.T, y).predict(100).to_dict()


def test_a_few_round_off_eigenvalues_are_precision_not_features():
    """Two eigenvalues at float32 round-off (two fewer features than points) must not switch to least squares
    with a 2-degree-of-freedom noise estimate: they get a floor ridge, and predictions stay finite."""
    M, g = 100, torch.Generator().manual_seed(6)
    X = torch.randn(M, M - 2, generator=g, dtype=torch.float64)  # isotropic: no legitimately tiny eigenvalue
    y = X[:, 0] + 0.3 * torch.randn(M, generator=g, dtype=torch.float64)
    est = ProbeEstimator((X @ X.T).float(), y.float())
    assert est.rank == M - 2
    for n in (50, 500):
        p = est.predict(n)
        assert p.regime != "finite-rank" and math.isfinite(p.test_mse) and math.isfinite(p.test_mse_interval[1])


def test_degenerate_inputs_give_nan_or_a_clear_error_never_a_warning(recwarn):
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    K = torch.exp(-torch.cdist(x, x))
    zero_target = ProbeEstimator(K, torch.zeros(20))
    assert math.isnan(zero_target.predict(10).learnability) and zero_target.predict(10).test_mse == 0.0
    assert math.isnan(zero_target.self_check(splits=2).learnability_gap)
    with pytest.raises(InputError, match="K is zero"):
        ProbeEstimator(torch.zeros(20, 20), x[:, 0])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_smooth_float32_kernel_is_not_mistaken_for_a_finite_rank_one():
    """Regression (review): eigenvalues decaying smoothly through float32 round-off are precision, not a rank: no
    least-squares regime, and the intervals still cover the closed-form theory (operator eigenvalues i^-2)."""
    g = torch.Generator().manual_seed(1)
    decay = torch.arange(1, 20_001, dtype=torch.float64).pow(-2.0)  # through float32 round-off by i ~ 100
    coefficients = decay.sqrt() / decay.sqrt().norm()  # target power proportional to the eigenvalues
    Z = torch.randn(200, 20_000, generator=g, dtype=torch.float64)
    K, y = (Z * decay) @ Z.T, Z @ coefficients  # features Z_i sqrt(lambda_i): K = X X^T, v_i = coefficients_i
    est32, est64 = ProbeEstimator(K.float(), y.float()), ProbeEstimator(K, y)
    assert est32.rank < 150  # many eigenvalues below float32 round-off ...
    for n in (50, 100, 300, 1000):
        p32, theory = est32.predict(n), predict(decay, coefficients, n)
        assert p32.regime != "finite-rank"  # ... yet no clear gap: not a finite-rank model
        assert p32.learnability == pytest.approx(est64.predict(n).learnability, abs=ESTIMATOR_LEARNABILITY_ATOL)
        assert p32.test_mse_interval[0] <= theory.test_mse <= p32.test_mse_interval[1]


def test_degenerate_sub_probes_and_huge_n_never_raise():
    """Regression (review): a kernel alive on one point (sub-probes with a zero kernel) raised ZeroDivisionError;
    n = 1e9 on a smooth kernel overflowed the suggested probe size."""
    K = torch.zeros(10, 10, dtype=torch.float64)
    K[0, 0] = 1.0
    est = ProbeEstimator(K, torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    for n, ridge in ((2, 0.0), (5, 0.1), (50, 0.0)):
        est.predict(n, ridge=ridge)
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    smooth = ProbeEstimator(torch.exp(-(torch.cdist(x, x) ** 2) / 5), torch.sin(x[:, 0]))
    p = smooth.predict(1e9)
    assert p.regime == "extrapolated" and p.wide and p.suggested_probe_size <= 1_000_000
    assert "more than 1000000 points" in p.note
    assert 0 <= p.test_mse_interval[0] <= p.test_mse <= p.test_mse_interval[1]


def test_calibration_widens_the_interval_where_the_theory_fails():
    """A smooth low-dimensional kernel, where eigenlearning underestimates kernel regression's error: the
    calibrating self-check measures the gap, widens the tolerance, and says so in the note."""
    g = torch.Generator().manual_seed(0)
    kernel = lambda a, b: torch.exp(-(torch.cdist(a, b) ** 2) / 3)  # noqa: E731
    x = torch.randn(256, 3, generator=g, dtype=torch.float64)
    est = ProbeEstimator(kernel(x, x), torch.sin(x[:, 0]))
    plain = ProbeEstimator(kernel(x, x), torch.sin(x[:, 0]), calibrate=False)
    assert est.calibration is not None and plain.calibration is None
    assert est.tolerance[1] > 10 * plain.tolerance[1]
    n, mse = 64, []
    for _ in range(10):  # Monte-Carlo truth: ridgeless regression on fresh points
        xs, xt = (
            torch.randn(n, 3, generator=g, dtype=torch.float64),
            torch.randn(500, 3, generator=g, dtype=torch.float64),
        )
        alpha = torch.linalg.lstsq(kernel(xs, xs), torch.sin(xs[:, 0])[:, None], driver="gelsd").solution[:, 0]
        mse.append(float((kernel(xt, xs) @ alpha - torch.sin(xt[:, 0])).pow(2).mean()))
    truth = sum(mse) / len(mse)
    assert not plain.predict(n).test_mse_interval[0] <= truth <= plain.predict(n).test_mse_interval[1]
    p = est.predict(n)
    assert p.test_mse_interval[0] <= truth <= p.test_mse_interval[1]
    assert "departs from the theory" in p.note
