"""Checked option types and the enums they hold: the one place where a user's options are validated.

:class:`KernelOptions` says how the kernel is computed (method, parameters, chunk size, dtype, output selection),
:class:`AnalysisOptions` how a measurement is analysed (reported modes, ridge, learning rate, loss, noise,
drift thresholds, resamples). Both are frozen dataclasses that check themselves in ``__post_init__``: a typo fails
at construction with an "Expected X, but got Y" message, and a new option touches one class. The callback, the
tracker and the command line build them once and pass them on.

Example:
    >>> KernelOptions(method="ntk_vp").method
    <NTKMethod.NTK_VP: 'ntk_vp'>
    >>> try:
    ...     KernelOptions(method="jacobain")
    ... except InputError as err:
    ...     print(str(err)[:48])
    Expected method to be one of 'auto', 'jacobian',
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, TypeVar

import torch

from . import _checks
from .errors import InputError
from .record import DriftThresholds

__all__ = [
    "KernelMode",
    "NTKMethod",
    "KernelOptions",
    "AnalysisOptions",
    "LOSSES",
    "RESAMPLES",
    "parse_enum",
    "split_options",
]

E = TypeVar("E", bound=Enum)

LOSSES = ("half_mse", "mse", "cross_entropy")
"""The training losses the analysis knows; the theory is for the squared losses."""

RESAMPLES = 8
"""Default number of sub-probes behind the prediction intervals (:class:`~ntkmonitor.ProbeEstimator`)."""


class KernelMode(str, Enum):
    """Which part of the ``k x k`` output block of the kernel to return.

    For inputs ``x1`` (``n1`` examples), ``x2`` (``n2`` examples) and a model with ``k`` outputs,
    with ``J_a(x) = d f_a(x) / d theta``:

    - ``TRACE`` (``"trace"``): shape ``(n1, n2)``,
      ``K[i, j] = (1/k) sum_a <J_a(x1_i), J_a(x2_j)>`` -- the **mean** over outputs of the diagonal
      (neural-tangents' ``trace_axes=(-1,)``). For a wide network ``K_full ~ K_trace (x) I_k``, so this
      is the default: ``k`` times cheaper to contract and ``k^2`` times smaller than ``FULL``.
    - ``DIAGONAL`` (``"diagonal"``): shape ``(n1, n2, k)``, ``K[i, j, a] = <J_a(x1_i), J_a(x2_j)>``.
    - ``FULL`` (``"full"``): shape ``(n1, n2, k, k)``, ``K[i, j, a, b] = <J_a(x1_i), J_b(x2_j)>``.

    Example:
        >>> ntkmonitor.KernelMode("trace") is ntkmonitor.KernelMode.TRACE
        True
    """

    TRACE = "trace"
    DIAGONAL = "diagonal"
    FULL = "full"


class NTKMethod(str, Enum):
    """How the empirical NTK is computed. All methods return the same kernel up to round-off.

    Costs for ``n`` examples, ``k`` outputs, ``P`` parameters and ``[FP]`` the FLOPs of one forward
    pass on one example (Novak, Sohl-Dickstein, Schoenholz 2022, "Fast Finite Width Neural Tangent
    Kernel", https://arxiv.org/abs/2206.08720):

    - ``JACOBIAN`` (``"jacobian"``): per-example Jacobians by ``vmap(jacrev)``, contracted parameter
      tensor by parameter tensor, in blocks of examples (and outputs) that fit the memory budget.
      Time ``~ 3 n k [FP] + n^2 k P`` (trace, diagonal) or ``n^2 k^2 P`` (full); memory ``chunk k P``.
      **Pick it** when ``P`` is not much larger than ``[FP]`` (MLPs, Transformers with short
      sequences) or in trace/diagonal mode generally: the contraction is one big matrix product.
    - ``NTK_VP`` (``"ntk_vp"``): kernel columns as NTK-vector products ``J1 (J2^T e)``, a ``vjp``
      followed by a ``jvp`` vectorized over the basis vectors ``e``. Time ``~ n^2 k [FP]``; memory
      ``chunk k (P + n [activations])``; never forms a Jacobian. **Pick it** in full mode when ``k``
      is large and ``k P >> [FP]``, or when even a one-example Jacobian ``k P`` does not fit.
    - ``STRUCTURED`` (``"structured"``): layer-wise factors. For a linear layer ``y = W a + b`` the
      weight block is ``sum_{s,t} (a_is . a_jt) (g_ias . g_jbt)`` with ``g = d f / d y``: one forward
      pass and one backward pass vectorized over the ``k`` outputs per block of examples, then
      time ``~ n^2 S^2 (d_in + k d_out)`` per layer (``S`` positions per example) instead of
      ``n^2 k d_in d_out``; no Jacobian is formed. ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d``
      (grouped and depthwise too), ``nn.Embedding``, ``nn.MultiheadAttention``'s projections (both
      layouts, with masks) and the affine parameters of ``LayerNorm``, ``RMSNorm``, ``GroupNorm`` and
      eval-mode ``BatchNorm`` are structured (per layer, factored or explicit, whichever is cheaper);
      ``F.scaled_dot_product_attention`` runs as plain operations so its backward batches; every other
      parameter (one used directly in ``forward``) falls back to per-example Jacobians for its own
      entries. **Pick it** for MLPs, CNNs (ResNets, MobileNets) and Transformers whose parameters sit
      in such layers -- on the MLP 784-512-512-10 it is orders of magnitude faster than the other two,
      on a small ResNet and a MobileNet-style CNN 1.4x and 1.6x faster than ``JACOBIAN``; its cost is
      ``math.inf`` (never picked) when no selected parameter is structured.
    - ``JACOBIAN_LOOP`` (``"jacobian_loop"``): the ``JACOBIAN`` method without ``vmap``: each example's
      Jacobian is built row by row (``jacrev(..., chunk_size=1)``) in a Python loop. The slowest, but
      it runs where ``vmap`` cannot batch the model: data-dependent control flow (Hugging Face attention
      masks), ``nn.RNN``/``nn.GRU``/``nn.LSTM``. **Pick it** only when the others fail; ``AUTO`` does.
    - ``AUTO`` (``"auto"``, default): estimates every method's cost with the formulas above (FLOPs of
      one forward pass are counted on one example with ``torch.utils.flop_counter``) and picks the
      cheapest. Calibration constants turn FLOPs into time: ``NTK_VP``'s and ``STRUCTURED``'s FLOPs are
      weighted by 2.5 (many small kernels run slower than one matrix product), convolution FLOPs under
      ``JACOBIAN``'s ``vmap`` by 3.5 (per-example weight gradients run as grouped convolutions), and
      every Jacobian entry written costs 500 FLOP-equivalents (memory bandwidth), so ``JACOBIAN`` loses
      when its blocks do not fit the budget and must be recomputed. The estimate is within about 2x of the
      faster method on the models measured (MLPs, small CNNs, Transformers on 2 CPU cores). Before its
      first use on a model, each method in cost order **proves it can run the model** on two examples;
      one that fails is skipped, with its reason kept (``ntkmonitor.kernel.method_report``) and a warning
      that names the method used, and the next is tried (``JACOBIAN_LOOP``, priced at 8x ``JACOBIAN``, comes
      late). A method that passes the trial but fails the whole request is excluded and the next one runs. When every
      method fails, one :class:`~ntkmonitor.NTKMonitorError` gives each method's reason.

    Example:
        >>> ntkmonitor.NTKMethod("ntk_vp")
        <NTKMethod.NTK_VP: 'ntk_vp'>
    """

    AUTO = "auto"
    JACOBIAN = "jacobian"
    NTK_VP = "ntk_vp"
    STRUCTURED = "structured"
    JACOBIAN_LOOP = "jacobian_loop"


def parse_enum(enum: type[E], value: object, name: str) -> E:
    """``value`` (a member or its string) as a member of ``enum``, or a clear :class:`InputError`.

    Example:
        >>> parse_enum(KernelMode, "full", "mode")
        <KernelMode.FULL: 'full'>
    """
    try:
        return enum(value.value if isinstance(value, Enum) else value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in enum)
        raise InputError(f"Expected {name} to be one of {valid}, but got {value!r}.") from None


def _params(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        if not value:
            raise InputError("Expected params to name at least one parameter, but got an empty list.")
        return tuple(value)
    raise InputError(f"Expected params to be None or a list of parameter names / module prefixes, but got {value!r}.")


@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """How the empirical NTK is computed; see :func:`~ntkmonitor.empirical_ntk` for each option's meaning.

    Attributes:
        method: a :class:`NTKMethod` (strings are parsed): ``"auto"`` (default), ``"jacobian"``, ``"ntk_vp"``,
            ``"structured"`` or ``"jacobian_loop"``.
        mode: a :class:`KernelMode` (strings are parsed); the tracker always uses ``"trace"``.
        params: ``None`` for every parameter with ``requires_grad``, or parameter names / module prefixes
            (a string or a sequence, kept as a tuple).
        chunk_size: examples per block, or ``None`` to size blocks to the memory budget.
        dtype: computation dtype (a floating ``torch.dtype``), or ``None`` for the parameters' (at least float32).
        output_fn: selects the output tensor from a tuple/dict/dataclass output, or ``None``.
        distributed: share the kernel's rows among the ranks of the default ``torch.distributed`` process group
            (when one is initialized) and assemble the whole kernel on every rank; every rank must call.

    Example:
        >>> KernelOptions(params="head", dtype=torch.float64).params
        ('head',)
    """

    method: NTKMethod | str = "auto"
    mode: KernelMode | str = "trace"
    params: Sequence[str] | str | None = None
    chunk_size: int | None = None
    dtype: torch.dtype | None = None
    output_fn: Callable[[Any], torch.Tensor] | None = None
    distributed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse_enum(NTKMethod, self.method, "method"))
        if not isinstance(self.distributed, bool):
            raise InputError(f"Expected distributed to be True or False, but got {self.distributed!r}.")
        object.__setattr__(self, "mode", parse_enum(KernelMode, self.mode, "mode"))
        object.__setattr__(self, "params", _params(self.params))
        size = self.chunk_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1):
            raise InputError(f"Expected chunk_size to be None or a positive int, but got {size!r}.")
        if self.dtype is not None and not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise InputError(
                f"Expected dtype to be None or a floating torch.dtype such as torch.float64, but got {self.dtype!r}."
            )
        if self.output_fn is not None and not callable(self.output_fn):
            raise InputError(f"Expected output_fn to be callable (or None), but got {type(self.output_fn).__name__}.")


def _number(value: Any, name: str, minimum: float, *, strict: bool, what: str) -> None:
    if value is None:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if not ok or (value <= minimum if strict else value < minimum):
        raise InputError(f"Expected {name} to be None or {what}, but got {value!r}.")


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """How each measurement is analysed; see :class:`~ntkmonitor.NTKTracker` for each option's meaning.

    Attributes:
        top_k: modes reported per measurement (and the eigenspace-overlap size), a positive int.
        ridge: fixed ridge of the predictions (``>= 0``), or ``None`` to use ``lr`` or 0.
        lr: learning rate of the finite-time ridge (``> 0``), or ``None``; not with ``loss="cross_entropy"``.
        loss: one of :data:`LOSSES`.
        noise: target-noise variance (``>= 0``) of the predicted test MSE.
        thresholds: the :class:`~ntkmonitor.DriftThresholds` of the verdict (defaults when ``None``).
        resamples: sub-probes of the prediction intervals (an int ``>= 0``).

    Example:
        >>> AnalysisOptions(top_k=5, ridge=0.1).thresholds.lazy_distance
        0.05
        >>> AnalysisOptions(loss="l1")
        Traceback (most recent call last):
        ...
        ntkmonitor.errors.InputError: Expected loss to be 'half_mse', 'mse' or 'cross_entropy', but got 'l1'.
    """

    top_k: int = 10
    ridge: float | None = None
    lr: float | None = None
    loss: str = "half_mse"
    noise: float = 0.0
    thresholds: DriftThresholds | None = None
    resamples: int = RESAMPLES

    def __post_init__(self) -> None:
        _checks.positive_int(self.top_k, "top_k")
        _number(self.ridge, "ridge", 0.0, strict=False, what="a number >= 0")
        _number(self.lr, "lr", 0.0, strict=True, what="a number > 0")
        if self.loss not in LOSSES:
            raise InputError(f"Expected loss to be 'half_mse', 'mse' or 'cross_entropy', but got {self.loss!r}.")
        if self.loss == "cross_entropy" and self.lr is not None:
            raise InputError(
                "Expected lr=None with loss='cross_entropy', but got a learning rate: the finite-time ridge is a "
                "heuristic for squared losses only. Drop lr (the MSE theory then predicts the converged network)."
            )
        if self.noise is None:
            raise InputError("Expected noise to be a variance >= 0, but got None.")
        _number(self.noise, "noise", 0.0, strict=False, what="a variance >= 0")
        if self.thresholds is None:
            object.__setattr__(self, "thresholds", DriftThresholds())
        elif not isinstance(self.thresholds, DriftThresholds):
            raise InputError(f"Expected thresholds to be a DriftThresholds, but got {type(self.thresholds).__name__}.")
        r = self.resamples
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise InputError(f"Expected resamples to be an int >= 0 (sub-probes of the intervals), but got {r!r}.")
        for name in ("ridge", "lr", "noise"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))


_KERNEL_FIELDS = {f.name for f in dataclasses.fields(KernelOptions)}
_ANALYSIS_FIELDS = {f.name for f in dataclasses.fields(AnalysisOptions)}


def split_options(
    options: dict[str, Any],
    kernel: KernelOptions | None = None,
    analysis: AnalysisOptions | None = None,
) -> tuple[KernelOptions, AnalysisOptions]:
    """Keyword options (``method=..., top_k=...``) as checked :class:`KernelOptions` and :class:`AnalysisOptions`.

    Keywords override the fields of ``kernel`` / ``analysis`` when those are given too.

    Args:
        options: keyword options, each a field of one of the two classes.
        kernel: base kernel options.
        analysis: base analysis options.

    Returns:
        ``(kernel_options, analysis_options)``.

    Raises:
        InputError: an unknown keyword (the message lists the valid ones), or an invalid value.

    Example:
        >>> k, a = split_options({"method": "jacobian", "top_k": 3})
        >>> k.method.value, a.top_k
        ('jacobian', 3)
    """
    unknown = sorted(set(options) - _KERNEL_FIELDS - _ANALYSIS_FIELDS)
    if unknown:
        valid = ", ".join(sorted(_KERNEL_FIELDS | _ANALYSIS_FIELDS))
        raise InputError(f"Expected options among {valid}, but got unknown {', '.join(map(repr, unknown))}.")
    kernel = kernel if kernel is not None else KernelOptions()
    analysis = analysis if analysis is not None else AnalysisOptions()
    if not isinstance(kernel, KernelOptions):
        raise InputError(f"Expected kernel to be a KernelOptions, but got {type(kernel).__name__}.")
    if not isinstance(analysis, AnalysisOptions):
        raise InputError(f"Expected analysis to be an AnalysisOptions, but got {type(analysis).__name__}.")
    kernel = dataclasses.replace(kernel, **{k: v for k, v in options.items() if k in _KERNEL_FIELDS})
    analysis = dataclasses.replace(analysis, **{k: v for k, v in options.items() if k in _ANALYSIS_FIELDS})
    return kernel, analysis
