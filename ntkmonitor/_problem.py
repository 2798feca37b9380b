"""The kernel request shared by every method, and the method protocol.

A method (``"jacobian"``, ``"ntk_vp"``, ``"structured"``) is an object with two functions:
``cost(problem)``, an estimate of its work in FLOP-equivalents used by ``method="auto"``, and
``compute(problem)``, which returns the kernel. New methods plug into ``kernel._METHODS`` without
touching the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import torch

from . import _inputs
from ._functional import FunctionalModel, ModelProfile
from ._memory import available_bytes, format_bytes
from .errors import InputError, KernelMemoryError


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
      (``groups=1``), ``nn.Embedding`` and the affine parameters of ``LayerNorm``, ``GroupNorm`` and
      eval-mode ``BatchNorm`` are structured (per layer, factored or explicit, whichever is cheaper);
      every other parameter (e.g. ``nn.MultiheadAttention``'s projections) falls back to per-example
      Jacobians for its own entries. **Pick it** for MLPs, CNNs and Transformers whose parameters
      sit mostly in such layers -- on the MLP 784-512-512-10 it is orders of magnitude faster than
      the other two; its cost is ``math.inf`` (never picked) when no selected parameter is structured.
    - ``JACOBIAN_LOOP`` (``"jacobian_loop"``): the ``JACOBIAN`` method without ``vmap``: each example's
      Jacobian is built row by row (``jacrev(..., chunk_size=1)``) in a Python loop. The slowest, but
      it runs where ``vmap`` cannot batch the model: data-dependent control flow (Hugging Face attention
      masks), ``nn.RNN``/``nn.GRU``/``nn.LSTM``. **Pick it** only when the others fail; ``AUTO`` does.
    - ``AUTO`` (``"auto"``, default): estimates every method's cost with the formulas above (FLOPs of
      one forward pass are counted on one example with ``torch.utils.flop_counter``) and picks the
      cheapest. Two calibration constants turn FLOPs into time: ``NTK_VP``'s FLOPs are weighted by
      2.5 (many small ``jvp``/``vjp`` kernels run slower than one matrix product), and every Jacobian
      entry written costs 500 FLOP-equivalents (memory bandwidth), so ``JACOBIAN`` loses when its
      blocks do not fit the budget and must be recomputed. The estimate is within about 2x of the
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


def parse_enum(enum: type[Enum], value: object, name: str) -> Enum:
    """``value`` (a member or its string) as a member of ``enum``, or a clear :class:`InputError`."""
    try:
        return enum(value.value if isinstance(value, Enum) else value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in enum)
        raise InputError(f"Expected {name} to be one of {valid}, but got {value!r}.") from None


@dataclass
class KernelProblem:
    """One kernel request, validated, with inputs already on the computation device and dtype.

    Attributes:
        fmodel: the model as a function of its selected parameters.
        x1: first batch (``n1`` examples).
        x2: second batch (``n2`` examples), or ``None`` when the kernel is ``K(x1, x1)``.
        mode: which output block to return.
        profile: ``k``, ``P``, FLOPs and activations per example.
        chunk_size: the user's chunk size, or ``None`` for the method's default.
        budget: byte bound for intermediate blocks.
    """

    fmodel: FunctionalModel
    x1: _inputs.Batch
    x2: _inputs.Batch | None
    n1: int
    n2: int
    mode: KernelMode
    profile: ModelProfile
    chunk_size: int | None
    budget: int

    @property
    def symmetric(self) -> bool:
        """Whether the kernel is ``K(x1, x1)`` (only upper blocks are computed)."""
        return self.x2 is None

    @property
    def xb(self) -> _inputs.Batch:
        """The second batch (``x1`` when symmetric)."""
        return self.x1 if self.x2 is None else self.x2

    @property
    def k(self) -> int:
        """Outputs per example."""
        return self.profile.num_outputs

    @property
    def itemsize(self) -> int:
        """Bytes per scalar of the computation dtype."""
        return torch.empty((), dtype=self.fmodel.dtype).element_size()

    def result_shape(self) -> tuple[int, ...]:
        """``(n1, n2)``, ``(n1, n2, k)`` or ``(n1, n2, k, k)`` by mode."""
        base = (self.n1, self.n2)
        if self.mode is KernelMode.TRACE:
            return base
        if self.mode is KernelMode.DIAGONAL:
            return (*base, self.k)
        return (*base, self.k, self.k)

    def new_result(self) -> torch.Tensor:
        """A zero tensor of the result's shape on the computation device and dtype."""
        return torch.zeros(self.result_shape(), dtype=self.fmodel.dtype, device=self.fmodel.device)

    def check_fits(self, nbytes: float, what: str, fix: str) -> None:
        """Raise :class:`KernelMemoryError` if ``nbytes`` exceeds the memory available."""
        free = available_bytes(self.fmodel.device)
        if nbytes > free:
            raise KernelMemoryError(
                f"Expected {what} to fit in the {format_bytes(free)} available on {self.fmodel.device}, but it "
                f"needs {format_bytes(nbytes)}. {fix}"
            )


class KernelMethodImpl(Protocol):
    """What a kernel method provides (see the module docstring)."""

    def cost(self, problem: KernelProblem) -> float:
        """Estimated work in FLOP-equivalents (``math.inf`` if the method cannot run)."""
        ...

    def compute(self, problem: KernelProblem) -> torch.Tensor:
        """The kernel, of shape ``problem.result_shape()``; for symmetric problems at least the
        blocks on and above the diagonal must be filled (the dispatcher mirrors them)."""
        ...


def chunks(n: int, size: int) -> list[slice]:
    """``[slice(0, size), slice(size, 2 size), ...]`` covering ``range(n)``."""
    size = max(1, int(size))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def clamp_count(value: float, cap: int) -> int:
    """``value`` floored, clipped to ``[1, cap]``."""
    if not math.isfinite(value):
        return cap
    return max(1, min(cap, int(value)))
