"""ntkmonitor: monitor neural-network training against Neural Tangent Kernel theory.

The public API, by layer (each module is importable on its own too):

- kernel (:mod:`ntkmonitor.kernel`): :func:`empirical_ntk`, :class:`KernelMode`, :class:`NTKMethod`;
- spectrum (:mod:`ntkmonitor.spectrum`): :func:`eigendecompose` -> :class:`Spectrum`, :class:`PowerLawFit`;
- theory (:mod:`ntkmonitor.theory`): eigenlearning predictions (:func:`solve_kappa`, :func:`predict`,
  :func:`effective_ridge`) and the matching measurements (:func:`learnability`,
  :func:`mode_learnability`, :func:`kernel_regression`, :func:`conservation_check`);
- predictions at the real training-set size from a finite probe (:mod:`ntkmonitor.estimator`):
  :class:`ProbeEstimator` -> :class:`ProbePrediction` (with intervals), :class:`SelfCheck`;
- drift (:mod:`ntkmonitor.drift`): lazy-regime metrics (:func:`kernel_distance`,
  :func:`linearization_error`, ...) and the :func:`verdict`;
- monitoring (:mod:`ntkmonitor.tracker`): :class:`NTKTracker` -> :class:`Snapshot`, framework-free;
- the Lightning callback :class:`NTKMonitor` (:mod:`ntkmonitor.callback`, imported on first use);
- errors: :class:`NTKMonitorError` and its subclasses, :class:`NTKMonitorWarning`.

``import ntkmonitor`` does not import Lightning, TensorBoard or matplotlib: ``ntkmonitor.NTKMonitor``
imports Lightning when first accessed.

Example:
    >>> import torch, ntkmonitor
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    >>> K = ntkmonitor.empirical_ntk(model, torch.randn(8, 4))
    >>> K.shape
    torch.Size([8, 8])
    >>> spectrum = ntkmonitor.eigendecompose(K)
    >>> bool(spectrum.eigenvalues[0] >= spectrum.eigenvalues[-1])
    True
"""

from typing import TYPE_CHECKING

_EXPORTS = {
    "drift": (
        "DriftThresholds",
        "ParameterChange",
        "Verdict",
        "eigenspace_overlap",
        "kernel_distance",
        "kernel_target_alignment",
        "kernel_velocity",
        "linearization_error",
        "relative_kernel_change",
        "relative_parameter_change",
        "verdict",
    ),
    "errors": (
        "InputError",
        "KernelMemoryError",
        "ModelCallError",
        "ModelOutputError",
        "NoSolutionError",
        "NTKMonitorError",
        "NTKMonitorWarning",
        "ParameterSelectionError",
    ),
    "estimator": ("ProbeEstimator", "ProbePrediction", "SelfCheck", "predict_from_probe"),
    "kernel": ("empirical_ntk", "empirical_ntk_fn", "NTKFunction"),
    "options": ("KernelMode", "NTKMethod", "KernelOptions", "AnalysisOptions"),
    "record": ("Snapshot", "Reference"),
    "spectrum": ("PowerLawFit", "Spectrum", "eigendecompose"),
    "theory": (
        "ConservationCheck",
        "ModeLearnability",
        "Prediction",
        "conservation_check",
        "effective_ridge",
        "extrapolate_tail",
        "kernel_regression",
        "learnability",
        "mode_learnability",
        "predict",
        "solve_kappa",
        "weight_distance",
    ),
    "tracker": ("NTKTracker",),
    "callback": ("NTKMonitor",),
}
"""Public name -> module. Names are imported on first use (PEP 562), so ``import ntkmonitor.plots`` or
``ntkmonitor.report`` loads neither the kernel engine nor Lightning."""

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:  # for type checkers and IDEs: the names as if imported eagerly
    from .callback import NTKMonitor
    from .drift import (
        DriftThresholds,
        ParameterChange,
        Verdict,
        eigenspace_overlap,
        kernel_distance,
        kernel_target_alignment,
        kernel_velocity,
        linearization_error,
        relative_kernel_change,
        relative_parameter_change,
        verdict,
    )
    from .errors import (
        InputError,
        KernelMemoryError,
        ModelCallError,
        ModelOutputError,
        NoSolutionError,
        NTKMonitorError,
        NTKMonitorWarning,
        ParameterSelectionError,
    )
    from .estimator import ProbeEstimator, ProbePrediction, SelfCheck, predict_from_probe
    from .kernel import KernelMode, NTKFunction, NTKMethod, empirical_ntk, empirical_ntk_fn
    from .options import AnalysisOptions, KernelOptions
    from .record import Reference
    from .spectrum import PowerLawFit, Spectrum, eigendecompose
    from .theory import (
        ConservationCheck,
        ModeLearnability,
        Prediction,
        conservation_check,
        effective_ridge,
        extrapolate_tail,
        kernel_regression,
        learnability,
        mode_learnability,
        predict,
        solve_kappa,
        weight_distance,
    )
    from .tracker import NTKTracker, Snapshot

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # kernel
    "empirical_ntk",
    "empirical_ntk_fn",
    "NTKFunction",
    "KernelMode",
    "NTKMethod",
    # options
    "KernelOptions",
    "AnalysisOptions",
    # spectrum
    "eigendecompose",
    "Spectrum",
    "PowerLawFit",
    # theory
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
    # predictions from a finite probe
    "ProbeEstimator",
    "ProbePrediction",
    "SelfCheck",
    "predict_from_probe",
    # drift
    "kernel_distance",
    "kernel_velocity",
    "relative_kernel_change",
    "relative_parameter_change",
    "ParameterChange",
    "linearization_error",
    "kernel_target_alignment",
    "eigenspace_overlap",
    "DriftThresholds",
    "Verdict",
    "verdict",
    # monitoring
    "NTKTracker",
    "Snapshot",
    "Reference",
    "NTKMonitor",
    # errors
    "NTKMonitorError",
    "InputError",
    "NoSolutionError",
    "ParameterSelectionError",
    "ModelOutputError",
    "ModelCallError",
    "KernelMemoryError",
    "NTKMonitorWarning",
]


def __getattr__(name: str):  # PEP 562: each public name is imported when first asked for
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'ntkmonitor' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
