"""The kernel request shared by every method, the method protocol, and the block-pair loop.

A method (``"jacobian"``, ``"ntk_vp"``, ``"structured"``) is an object with two functions:
``cost(request)``, an estimate of its work in FLOP-equivalents used by ``method="auto"``, and
``compute(request)``, which returns the kernel **summed** over outputs in trace mode and, for ``K(x1, x1)``,
at least the blocks on and above the diagonal: the engine (:mod:`ntkmonitor.kernel`) divides by ``k`` and
mirrors. New methods plug into ``ntkmonitor.kernel.METHODS`` without touching the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import torch

from .. import _inputs
from .._functional import FunctionalModel, ModelProfile
from .._memory import available_bytes, format_bytes
from ..errors import KernelMemoryError
from ..options import KernelMode


@dataclass
class KernelRequest:
    """One kernel request, validated, with inputs already on the computation device and dtype.

    Attributes:
        fmodel: the model as a function of its selected parameters.
        x1: first batch (``n1`` examples).
        x2: second batch (``n2`` examples), or ``None`` when the kernel is ``K(x1, x1)``.
        mode: which output block to return.
        profile: ``k``, ``P``, FLOPs and activations per example.
        chunk_size: the user's chunk size, or ``None`` for the method's default.
        budget: byte bound for intermediate blocks.
        cache: what a method learned about this model and input layout that does not depend on the values
            (the structured method's analysis of the layers), kept by :class:`~ntkmonitor.kernel.NTKFunction`
            across calls.
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
    cache: dict = field(default_factory=dict)

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

    def cost(self, request: KernelRequest) -> float:
        """Estimated work in FLOP-equivalents (``math.inf`` if the method cannot run)."""
        ...

    def compute(self, request: KernelRequest) -> torch.Tensor:
        """The kernel, of shape ``request.result_shape()``, summed (not averaged) over outputs in trace mode; for
        symmetric requests at least the blocks on and above the diagonal must be filled (the engine mirrors
        them and divides by ``k``)."""
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


Block = TypeVar("Block")
Data = TypeVar("Data")


class BlockPairs(Generic[Block, Data]):
    """The loop over pairs of blocks that the Jacobian-based methods share.

    Rows are blocks of ``x1``, columns blocks of ``x2`` (the rows themselves for ``K(x1, x1)``, where only pairs
    with ``column >= row`` are visited). ``build(x, block)`` computes a block's data (its Jacobian, its layer
    factors); column data is kept for reuse when ``cache_columns`` says it fits, else rebuilt per row.

    Args:
        request: the kernel request.
        rows: the blocks of ``x1`` (anything ``build`` understands, e.g. slices of examples).
        columns: the blocks of ``x2``; ``None`` for the rows (required when the request is symmetric).
        build: ``(batch, block) -> data``.
        cache_columns: keep every column's data after its first use.

    Example:
        >>> pairs = BlockPairs(request, rows, None, build, cache_columns=True)  # doctest: +SKIP
        >>> for row, column, a, b, mirror in pairs: ...  # doctest: +SKIP
    """

    def __init__(
        self,
        request: KernelRequest,
        rows: list[Block],
        columns: list[Block] | None,
        build: Callable[[_inputs.Batch, Block], Data],
        *,
        cache_columns: bool,
    ) -> None:
        self.request, self.rows, self.build, self.cache_columns = request, rows, build, cache_columns
        self.columns = rows if request.symmetric or columns is None else columns
        self._cache: dict[int, Data] = {}

    def _column(self, index: int) -> Data:
        if index in self._cache:
            return self._cache[index]
        data = self.build(self.request.xb, self.columns[index])
        if self.cache_columns:
            self._cache[index] = data
        return data

    def __iter__(self) -> Iterator[tuple[Block, Block, Data, Data, bool]]:
        """``(row, column, row data, column data, mirror)``; ``mirror``: an off-diagonal pair of ``K(x1, x1)``."""
        symmetric = self.request.symmetric
        for ri, row in enumerate(self.rows):
            first = self._column(ri) if symmetric else self.build(self.request.x1, row)
            for ci, column in enumerate(self.columns):
                if symmetric and ci < ri:
                    continue
                second = first if (symmetric and ci == ri) else self._column(ci)
                yield row, column, first, second, symmetric and ci != ri
