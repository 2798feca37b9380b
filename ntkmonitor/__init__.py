"""ntkmonitor: monitor neural-network training against Neural Tangent Kernel theory.

The public API:

- :func:`empirical_ntk` -- the empirical NTK of any ``nn.Module`` (``torch.func``), with
  :class:`KernelMode` and :class:`NTKMethod`;
- the error hierarchy rooted at :class:`NTKMonitorError` and the warning class
  :class:`NTKMonitorWarning`.

``import ntkmonitor`` does not import Lightning or TensorBoard.

Example:
    >>> import torch, ntkmonitor
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    >>> K = ntkmonitor.empirical_ntk(model, torch.randn(8, 4))
    >>> K.shape
    torch.Size([8, 8])
"""

from .errors import (
    InputError,
    KernelMemoryError,
    ModelCallError,
    ModelOutputError,
    NTKMonitorError,
    NTKMonitorWarning,
    ParameterSelectionError,
)
from .kernel import KernelMode, NTKMethod, empirical_ntk

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "empirical_ntk",
    "KernelMode",
    "NTKMethod",
    "NTKMonitorError",
    "InputError",
    "ParameterSelectionError",
    "ModelOutputError",
    "ModelCallError",
    "KernelMemoryError",
    "NTKMonitorWarning",
]
