"""Lazy-regime drift metrics against independent formulas (numpy / autograd) and their properties."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import ntkmonitor
from ntkmonitor.drift import (
    DriftThresholds,
    ParameterChange,
    eigenspace_overlap,
    kernel_distance,
    kernel_target_alignment,
    kernel_velocity,
    linearization_error,
    relative_kernel_change,
    relative_parameter_change,
    verdict,
)

from . import models, reference
from .tolerances import DRIFT_RTOL, LINEARIZATION_LINEAR_MODEL_ATOL

DTYPES = [torch.float32, torch.float64]


def _psd(M: int, seed: int, dtype: torch.dtype = torch.float64, rank: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(M, rank or M, generator=gen, dtype=torch.float64)
    return (x @ x.T / x.shape[1]).to(dtype)


def _snapshot(model: nn.Module, names=None) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if names is None or n in names}


# ---------------------------------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_distance_against_formula_and_properties(dtype):
    K0, Kt = _psd(20, 0, dtype), _psd(20, 1, dtype)
    a, b = K0.double().numpy(), Kt.double().numpy()
    expected = 1 - (a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))
    assert kernel_distance(K0, Kt) == pytest.approx(expected, rel=DRIFT_RTOL)
    assert kernel_distance(K0, K0) == pytest.approx(0.0, abs=1e-12)
    # scale invariance in both arguments
    assert kernel_distance(3.0 * K0, 0.5 * Kt) == pytest.approx(kernel_distance(K0, Kt), rel=1e-6)
    assert kernel_distance(K0, 7.0 * K0) == pytest.approx(0.0, abs=1e-7)
    # works for full-mode kernels (any shape) too
    assert kernel_distance(K0[:, :, None, None], Kt[:, :, None, None]) == pytest.approx(expected, rel=1e-6)


def test_kernel_distance_in_unit_interval_for_psd_kernels():
    for seed in range(20):
        K0 = _psd(15, seed, rank=1 + seed % 5)
        Kt = _psd(15, 100 + seed, rank=1 + seed % 3)
        assert 0.0 <= kernel_distance(K0, Kt) <= 1.0
    # orthogonal PSD kernels reach 1
    e1, e2 = torch.zeros(4, 1), torch.zeros(4, 1)
    e1[0], e2[1] = 1.0, 1.0
    assert kernel_distance(e1 @ e1.T, e2 @ e2.T) == pytest.approx(1.0)


def test_kernel_velocity_and_relative_change():
    K0, Kt = _psd(10, 0), _psd(10, 1)
    assert kernel_velocity(K0, Kt, 4) == pytest.approx(kernel_distance(K0, Kt) / 4, rel=1e-14)
    a, b = K0.numpy(), Kt.numpy()
    assert relative_kernel_change(K0, Kt) == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=DRIFT_RTOL)
    assert relative_kernel_change(K0, 2 * K0) == pytest.approx(1.0)  # not scale invariant (unlike the distance)
    with pytest.raises(ntkmonitor.InputError, match="steps"):
        kernel_velocity(K0, Kt, 0)


def test_kernel_input_errors():
    with pytest.raises(ntkmonitor.InputError, match="same shape"):
        kernel_distance(torch.eye(3), torch.eye(4))
    with pytest.raises(ntkmonitor.InputError, match="not identically zero"):
        kernel_distance(torch.zeros(3, 3), torch.eye(3))
    with pytest.raises(ntkmonitor.InputError, match="finite"):
        relative_kernel_change(torch.eye(2), torch.full((2, 2), float("inf")))


# ---------------------------------------------------------------------------------------------------- parameters
def test_relative_parameter_change():
    p0 = {"w": torch.tensor([3.0, 4.0]), "b": torch.zeros(3), "c": torch.ones(2)}
    pt = {"w": torch.tensor([3.0, 5.0]), "b": torch.tensor([0.0, 1.0, 0.0]), "c": torch.ones(2)}
    change = relative_parameter_change(p0, pt)
    assert isinstance(change, ParameterChange)
    assert change.total == pytest.approx(math.sqrt(2) / math.sqrt(27), rel=1e-14)
    assert change.per_parameter == {"w": pytest.approx(0.2), "b": math.inf, "c": 0.0}
    with pytest.raises(ntkmonitor.InputError, match="same parameters"):
        relative_parameter_change(p0, {"w": pt["w"]})
    with pytest.raises(ntkmonitor.InputError, match="same shape"):
        relative_parameter_change({"w": torch.ones(2)}, {"w": torch.ones(3)})
    undefined = relative_parameter_change({"w": torch.zeros(2)}, {"w": torch.ones(2)})  # zero at init: LoRA's B
    assert math.isnan(undefined.total) and undefined.per_parameter == {"w": math.inf}
    with pytest.raises(ntkmonitor.InputError, match="non-empty dict"):
        relative_parameter_change([], {})


# ---------------------------------------------------------------------------------------------------- linearization
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linearization_error_zero_for_model_linear_in_its_parameters(dtype):
    # A frozen random-features layer followed by a linear head: f is exactly linear in the head's parameters.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 3)).to(dtype)
    x = torch.randn(20, 5, dtype=dtype)
    p0 = _snapshot(model, {"2.weight", "2.bias"})
    pt = {n: p + 2.0 * torch.randn_like(p) for n, p in p0.items()}  # a large update
    err = linearization_error(model, p0, pt, x)
    assert 0.0 <= err < LINEARIZATION_LINEAR_MODEL_ATOL[dtype]


def test_linearization_error_matches_autograd_reference_for_nonlinear_model():
    model = models.mlp(seed=1).double()
    x = torch.randn(12, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p0 = _snapshot(model)
    gen = torch.Generator().manual_seed(1)
    pt = {n: p + 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in p0.items()}
    # reference: Jacobian by per-example reverse-mode autograd (tests/reference.py), f_lin = f0 + J dtheta
    J = reference.jacobian(model, x)  # (n, k, P)
    delta = torch.cat([(pt[n] - p0[n]).reshape(-1) for n in p0])
    f0 = model(x).detach()
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            p.copy_(pt[n])
    ft = moved(x).detach()
    f_lin = f0 + torch.einsum("nkp,p->nk", J, delta)
    expected = float(torch.linalg.vector_norm(ft - f_lin) / torch.linalg.vector_norm(ft - f0))
    err = linearization_error(model, p0, pt, x)
    assert err == pytest.approx(expected, rel=1e-8)
    assert err > 0.05  # large update of a nonlinear model: clearly not linear
    # with f0 supplied (e.g. recorded at init) the result is the same
    assert linearization_error(model, p0, pt, x, f0=f0) == pytest.approx(err, rel=1e-12)
    # the error shrinks with the update size (second-order remainder)
    small = {n: p0[n] + 1e-3 * (pt[n] - p0[n]) for n in p0}
    assert linearization_error(model, p0, small, x) < 0.01 * err


def test_linearization_error_nan_when_nothing_moved():
    model = models.mlp()
    p0 = _snapshot(model)
    assert math.isnan(linearization_error(model, p0, p0, torch.randn(4, 6)))


def test_linearization_error_has_no_side_effects():
    model = models.cnn()  # BatchNorm with running statistics, dropout, in train mode
    model.train()
    x = torch.randn(6, 2, 5, 5)
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    rng = torch.random.get_rng_state()
    p0 = _snapshot(model, {"head.weight", "head.bias", "conv.weight"})
    pt = {n: p + 0.1 for n, p in p0.items()}
    with torch.inference_mode():  # as in a Lightning validation hook
        err = linearization_error(model, p0, pt, x, params=["head", "conv.weight"])
    assert math.isfinite(err) and err >= 0
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(rng, torch.random.get_rng_state())
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_linearization_error_input_errors():
    model = models.mlp()
    p0 = _snapshot(model)
    x = torch.randn(4, 6)
    with pytest.raises(ntkmonitor.InputError, match="exactly the selected parameters"):
        linearization_error(model, p0, p0, x, params=["0"])
    with pytest.raises(ntkmonitor.ParameterSelectionError):
        linearization_error(model, {"nope": torch.ones(1)}, {"nope": torch.ones(1)}, x)
    with pytest.raises(ntkmonitor.InputError, match="f0"):
        linearization_error(model, p0, p0, x, f0=torch.zeros(3, 3))


# ---------------------------------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_target_alignment(dtype):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(30, generator=gen).to(dtype)
    assert kernel_target_alignment(torch.outer(y, y), y) == pytest.approx(1.0, abs=1e-6)
    labels = torch.randint(0, 4, (30,), generator=gen)
    Y = nn.functional.one_hot(labels, 4).to(dtype)
    assert kernel_target_alignment(Y @ Y.T, Y) == pytest.approx(1.0, abs=1e-6)
    # against the formula with explicit centering matrices (numpy)
    K = _psd(30, 3, dtype)
    H = np.eye(30) - np.ones((30, 30)) / 30
    Kc = H @ K.double().numpy() @ H
    Yc = H @ Y.double().numpy()
    T = Yc @ Yc.T
    expected = (Kc * T).sum() / (np.linalg.norm(Kc) * np.linalg.norm(T))
    assert kernel_target_alignment(K, Y) == pytest.approx(expected, rel=DRIFT_RTOL)
    # centered: a constant shift of the target changes nothing
    assert kernel_target_alignment(K, y + 5) == pytest.approx(kernel_target_alignment(K, y), rel=1e-6)
    assert math.isnan(kernel_target_alignment(K, torch.ones(30)))  # a constant target: undefined, not an error
    assert math.isnan(kernel_target_alignment(torch.ones(1, 1), torch.ones(1)))  # a one-point probe
    with pytest.raises(ntkmonitor.InputError, match=r"shape \(30,\) or \(30, k\)"):
        kernel_target_alignment(K, torch.ones(29))


# ---------------------------------------------------------------------------------------------------- eigenspaces
def _with_eigenvectors(U: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return (U * lam) @ U.T


def test_eigenspace_overlap_known_principal_angle():
    M = 8
    I = torch.eye(M, dtype=torch.float64)
    lam = torch.tensor([5.0, 4.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5], dtype=torch.float64)
    K0 = _with_eigenvectors(I, lam)
    for theta in [0.0, 0.3, 1.0, math.pi / 2]:
        R = I.clone()  # rotate e1 towards e3 by theta: top-2 space {cos e1 + sin e3, e2}
        R[0, 0], R[2, 0], R[0, 2], R[2, 2] = math.cos(theta), math.sin(theta), -math.sin(theta), math.cos(theta)
        Kt = _with_eigenvectors(R, lam)
        expected = (math.cos(theta) ** 2 + 1.0) / 2
        assert eigenspace_overlap(K0, Kt, 2) == pytest.approx(expected, abs=1e-12)
    assert eigenspace_overlap(K0, K0, 3) == pytest.approx(1.0, abs=1e-12)
    assert eigenspace_overlap(K0, 2 * K0, M) == pytest.approx(1.0, abs=1e-12)  # full space: always 1


def test_eigenspace_overlap_small_for_unrelated_kernels():
    M, k = 200, 5
    lam = torch.logspace(0, -3, M, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    overlaps = []
    for _ in range(3):
        Q0 = torch.linalg.qr(torch.randn(M, M, generator=gen, dtype=torch.float64)).Q
        Qt = torch.linalg.qr(torch.randn(M, M, generator=gen, dtype=torch.float64)).Q
        overlaps.append(eigenspace_overlap(_with_eigenvectors(Q0, lam), _with_eigenvectors(Qt, lam), k))
    # random k-dim subspaces of R^M: E[overlap] = k / M = 0.025
    assert np.mean(overlaps) < 4 * k / M
    with pytest.raises(ntkmonitor.InputError, match="k <= M"):
        eigenspace_overlap(torch.eye(3), torch.eye(3), 4)


# ---------------------------------------------------------------------------------------------------- verdict
@pytest.mark.parametrize(
    "distance,lin_err,expected",
    [
        (0.0, 0.0, "lazy"),
        (0.04, 0.09, "lazy"),
        (0.04, None, "lazy"),
        (0.01, float("nan"), "lazy"),  # nothing moved: the linearization error is undefined
        (0.06, 0.05, "drifting"),
        (0.01, 0.2, "drifting"),
        (0.25, 0.5, "drifting"),
        (0.26, 0.0, "feature-learning"),
        (0.0, 0.51, "feature-learning"),
        (None, 0.7, "feature-learning"),
        (float("nan"), 0.05, "lazy"),
    ],
)
def test_verdict_default_thresholds(distance, lin_err, expected):
    assert verdict(distance, lin_err) == expected


def test_verdict_custom_thresholds_and_errors():
    strict = DriftThresholds(lazy_distance=0.01, lazy_linearization=0.02, feature_distance=0.1)
    assert verdict(0.03, 0.01, strict) == "drifting"
    assert verdict(0.2, 0.01, strict) == "feature-learning"
    assert verdict(torch.tensor(0.005), 0.01, strict) == "lazy"
    with pytest.raises(ntkmonitor.InputError, match="lazy thresholds <= feature-learning"):
        DriftThresholds(lazy_distance=0.5, feature_distance=0.1)
    with pytest.raises(ntkmonitor.InputError, match="at least one"):
        verdict(None, float("nan"))
    with pytest.raises(ntkmonitor.InputError, match="DriftThresholds"):
        verdict(0.1, 0.1, {"lazy_distance": 0.1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        strict.lazy_distance = 0.3
