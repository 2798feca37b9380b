"""Checked options: every bad option fails at construction, in the callback, the tracker and the option types."""

from __future__ import annotations

import pytest
import torch

import ntkmonitor
from ntkmonitor import AnalysisOptions, KernelOptions, NTKTracker
from ntkmonitor.options import split_options

BAD_KERNEL = [
    ({"method": "jacobain"}, "Expected method to be one of 'auto', 'jacobian'"),
    ({"mode": "diag"}, "Expected mode to be one of 'trace', 'diagonal', 'full'"),
    ({"params": 3}, "Expected params to be None or a list of parameter names"),
    ({"params": []}, "Expected params to name at least one parameter"),
    ({"chunk_size": 0}, "Expected chunk_size to be None or a positive int"),
    ({"chunk_size": 2.5}, "Expected chunk_size to be None or a positive int"),
    ({"dtype": torch.int64}, "Expected dtype to be None or a floating torch.dtype"),
    ({"dtype": "float64"}, "Expected dtype to be None or a floating torch.dtype"),
    ({"output_fn": "logits"}, "Expected output_fn to be callable"),
]
BAD_ANALYSIS = [
    ({"top_k": 0}, "Expected top_k to be a positive int"),
    ({"ridge": -1.0}, "Expected ridge to be None or a number >= 0"),
    ({"ridge": float("nan")}, "Expected ridge to be None or a number >= 0"),
    ({"lr": 0}, "Expected lr to be None or a number > 0"),
    ({"loss": "l1"}, "Expected loss to be 'half_mse', 'mse' or 'cross_entropy'"),
    ({"loss": "cross_entropy", "lr": 0.1}, "Expected lr=None with loss='cross_entropy'"),
    ({"noise": -0.5}, "Expected noise to be None or a variance >= 0"),
    ({"thresholds": {"lazy_distance": 0.1}}, "Expected thresholds to be a DriftThresholds"),
    ({"resamples": -1}, "Expected resamples to be an int >= 0"),
]


@pytest.mark.parametrize(("options", "message"), BAD_KERNEL, ids=[str(o) for o, _ in BAD_KERNEL])
def test_bad_kernel_options_fail_at_construction_everywhere(options, message):
    with pytest.raises(ntkmonitor.InputError, match=message):
        KernelOptions(**options)
    with pytest.raises(ntkmonitor.InputError, match=message):  # the callback: before any training
        ntkmonitor.NTKMonitor(**options) if "mode" not in options else KernelOptions(**options)
    with pytest.raises(ntkmonitor.InputError, match=message):
        ntkmonitor.empirical_ntk_fn(torch.nn.Linear(2, 1), **options)


@pytest.mark.parametrize(("options", "message"), BAD_ANALYSIS, ids=[str(o) for o, _ in BAD_ANALYSIS])
def test_bad_analysis_options_fail_at_construction_everywhere(options, message):
    with pytest.raises(ntkmonitor.InputError, match=message):
        AnalysisOptions(**options)
    if "resamples" not in options:
        with pytest.raises(ntkmonitor.InputError, match=message):
            ntkmonitor.NTKMonitor(**options)
    with pytest.raises(ntkmonitor.InputError, match=message):
        NTKTracker(torch.nn.Linear(2, 1), (torch.randn(4, 2), torch.randn(4)), train_size=10, **options)


def test_the_tracker_names_an_unknown_option_and_lists_the_valid_ones():
    with pytest.raises(ntkmonitor.InputError, match=r"Expected options among .*method.*but got unknown 'methd'"):
        NTKTracker(torch.nn.Linear(2, 1), (torch.randn(4, 2), torch.randn(4)), train_size=10, methd="jacobian")


def test_keywords_override_the_option_objects():
    kernel, analysis = split_options(
        {"top_k": 3, "method": "ntk_vp"}, KernelOptions(params="0"), AnalysisOptions(ridge=0.5, top_k=7)
    )
    assert (kernel.method.value, kernel.params, analysis.top_k, analysis.ridge) == ("ntk_vp", ("0",), 3, 0.5)


def test_the_tracker_and_the_callback_pass_the_same_options_objects():
    monitor = ntkmonitor.NTKMonitor(method="jacobian", top_k=4, ridge=0.1)
    assert monitor.kernel_options == KernelOptions(method="jacobian")
    assert monitor.analysis_options == AnalysisOptions(top_k=4, ridge=0.1)
    tracker = NTKTracker(
        torch.nn.Linear(2, 1),
        (torch.randn(4, 2), torch.randn(4)),
        train_size=10,
        kernel=monitor.kernel_options,
        analysis=monitor.analysis_options,
    )
    assert tracker.kernel_options.method is ntkmonitor.NTKMethod.JACOBIAN and tracker.top_k == 4
