"""The errors and the warning class that ntkmonitor raises.

Every error ntkmonitor raises on purpose derives from :class:`NTKMonitorError` (itself a
``RuntimeError``), so ``except ntkmonitor.NTKMonitorError`` catches all of them. Errors about bad
arguments additionally derive from ``ValueError`` or ``TypeError``, so generic handlers work too.

Messages follow one pattern: what was expected, what was received, and how to fix it, e.g.
``"Expected x2 to have per-example shape (10,) like x1, but got (7,). Pass inputs with the same
feature shape."``

Survivable problems are reported with :class:`NTKMonitorWarning` (a ``UserWarning``), which users can
filter: ``warnings.filterwarnings("ignore", category=ntkmonitor.NTKMonitorWarning)``.

Example:
    >>> import ntkmonitor
    >>> try:
    ...     raise ntkmonitor.InputError("Expected a tensor, but got 3.")
    ... except ntkmonitor.NTKMonitorError as err:
    ...     print(type(err).__name__, "-", err)
    InputError - Expected a tensor, but got 3.
"""

from __future__ import annotations

__all__ = [
    "NTKMonitorError",
    "InputError",
    "NoSolutionError",
    "ParameterSelectionError",
    "UsageError",
    "ModelOutputError",
    "ModelCallError",
    "KernelMemoryError",
    "NTKMonitorWarning",
]


class NTKMonitorError(RuntimeError):
    """Base class of every error ntkmonitor raises on purpose.

    Example:
        >>> issubclass(ntkmonitor.InputError, ntkmonitor.NTKMonitorError)
        True
    """


class InputError(NTKMonitorError, ValueError):
    """An argument has the wrong type, shape, dtype or value.

    Example:
        >>> isinstance(ntkmonitor.InputError("bad"), ValueError)
        True
    """


class UsageError(InputError):
    """Bad command-line input (``ntkmonitor audit`` / ``predict``): one line that names the flag and the fix;
    the command prints it and exits with status 2.

    Example:
        >>> str(UsageError("--data: file 'x.pt' does not exist. Pass an existing .pt or .npz file."))
        "--data: file 'x.pt' does not exist. Pass an existing .pt or .npz file."
    """


class NoSolutionError(InputError):
    """The eigenlearning equation for ``kappa`` has no solution for the given inputs.

    With ``ridge = 0`` the equation ``sum_i m_i lambda_i / (lambda_i + kappa) = n`` has a positive
    root only while ``n`` is smaller than the number of nonzero modes (counting multiplicities).
    The message names the fixes: more probe points, a ``ridge > 0``, or extrapolating the
    spectrum's tail.

    Example:
        >>> issubclass(ntkmonitor.errors.NoSolutionError, ntkmonitor.InputError)
        True
    """


class ParameterSelectionError(InputError, KeyError):
    """``params=`` named parameters that do not exist, or selected no parameter at all.

    The message lists the valid parameter names.

    Example:
        >>> issubclass(ntkmonitor.ParameterSelectionError, ntkmonitor.InputError)
        True
    """

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ModelOutputError(InputError):
    """The model returned something the kernel cannot be computed from.

    For example a tuple or dict without ``output_fn``, an integer tensor, or a tensor whose first
    dimension is not the batch.

    Example:
        >>> issubclass(ntkmonitor.ModelOutputError, ValueError)
        True
    """


class ModelCallError(NTKMonitorError):
    """Calling the model on the given inputs failed; the original exception is chained.

    Example:
        >>> issubclass(ntkmonitor.ModelCallError, RuntimeError)
        True
    """


class KernelMemoryError(NTKMonitorError, MemoryError):
    """A requested computation would not fit in memory; raised before allocating.

    The message names the knob to turn (``chunk_size``, the probe size, or ``mode``).

    Example:
        >>> issubclass(ntkmonitor.KernelMemoryError, MemoryError)
        True
    """


class NTKMonitorWarning(UserWarning):
    """Warning category for survivable problems (a skipped measurement, a suspicious input).

    Example:
        >>> import warnings
        >>> warnings.filterwarnings("ignore", category=ntkmonitor.NTKMonitorWarning)
    """
