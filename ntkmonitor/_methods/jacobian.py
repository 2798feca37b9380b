"""``method="jacobian"``: per-example Jacobians by ``vmap(jacrev)``, contracted per parameter tensor.

Blocks: a block is a chunk of ``c`` examples and ``q`` outputs; its Jacobian holds ``c q P``
scalars, at most half the memory budget, so that a row block and a column block fit together.
Column blocks are cached when all of them fit in the other half (then every Jacobian is computed
once); otherwise they are recomputed for each row block. For ``K(x1, x1)`` only pairs of blocks
``(row, column)`` with ``row <= column`` are contracted and each is written to both halves.
"""

from __future__ import annotations

import math

import torch
from torch.func import jacrev, vmap

from .. import _inputs
from ..options import KernelMode
from . import attention
from .request import BlockPairs, KernelRequest, chunks, clamp_count

Jacobian = dict[str, torch.Tensor]  # name -> (c, q, p)

_CONV_COST = 3.5
"""Weight of convolution FLOPs in ``vmap(jacrev)``: per-example weight gradients of a convolution run as
convolutions grouped by example, which reach a fraction of a plain convolution's speed (depthwise ones
even less). Calibrated on 2 CPU cores with ``benchmarks/bench_entk.py`` (1 thread) against
``"structured"``: measured time ratios jacobian / structured were 1.4x (the small ResNet), 1.6x (the
MobileNet-style CNN) and 0.7x (the Transformer, no convolutions); at 3.5 the cost ratios are 1.3x, 1.2x
and 0.98x, so ``auto`` picks the faster method on each."""

_WRITE_COST = 500.0
"""FLOP-equivalents per Jacobian entry materialized: per-example gradients are written (and read back)
at memory bandwidth, not at matrix-product speed. Calibrated on 2 CPU cores against ``ntk_vp``."""


def _plan(request: KernelRequest) -> tuple[int, int]:
    """``(examples per block, outputs per block)``."""
    k, P, size = request.k, request.fmodel.num_params, request.itemsize
    half = request.budget / 2
    n = max(request.n1, request.n2)
    if request.chunk_size is not None:
        c = min(request.chunk_size, n)
        request.check_fits(
            2 * c * k * P * size,
            f"two Jacobian blocks of chunk_size={request.chunk_size} examples x {k} outputs x {P} parameters",
            "Pass a smaller chunk_size, or chunk_size=None to size blocks automatically.",
        )
        return c, k
    per_example = k * P * size
    if per_example <= half:
        return clamp_count(half / per_example, n), k
    # Even one example's Jacobian is over budget: chunk the outputs too.
    q = clamp_count(half / (P * size), k)
    request.check_fits(
        2 * q * P * size,
        f"a one-example, one-output Jacobian ({P} parameters)",
        "Restrict the kernel to fewer parameters with params=[...], or use method='ntk_vp'.",
    )
    return 1, q


def _jacobian(request: KernelRequest, x: _inputs.Batch, ex: slice, out: slice, vectorized: bool = True) -> Jacobian:
    fm = request.fmodel

    def f(primals: dict, xi: _inputs.Batch) -> torch.Tensor:
        return fm.single(primals, xi)[out]

    block = _inputs.take(x, ex)
    if vectorized:
        with attention.PlainAttention():
            jac = vmap(jacrev(f), in_dims=(None, 0))(fm.primals, block)
    else:  # no vmap anywhere: one example at a time, one output row at a time (chunk_size=1 loops)
        count = _inputs.validate_batch(block, "x")
        rows = [jacrev(f, chunk_size=1)(fm.primals, _inputs.tree_map(lambda t, i=i: t[i], block)) for i in range(count)]
        jac = {name: torch.stack([r[name] for r in rows]) for name in rows[0]}
    return {name: j.reshape(j.shape[0], j.shape[1], -1) for name, j in jac.items()}


def contract(j1: Jacobian, j2: Jacobian, mode: KernelMode) -> torch.Tensor:
    """Contract two Jacobian blocks ``{name: (c, q, p)}`` over parameters.

    Args:
        j1: the row block's Jacobians.
        j2: the column block's Jacobians (same names).
        mode: the kernel mode.

    Returns:
        trace ``(c1, c2)`` (summed over outputs, not divided by ``k``), diagonal ``(c1, c2, q)``, full
        ``(c1, c2, q1, q2)``.

    Example:
        >>> j = {"w": torch.ones(2, 1, 3)}
        >>> contract(j, j, KernelMode.TRACE).tolist()
        [[3.0, 3.0], [3.0, 3.0]]
    """
    total = None
    for name, a in j1.items():
        b = j2[name]
        c1, q1, p = a.shape
        c2, q2, _ = b.shape
        if mode is KernelMode.TRACE:
            blk = a.reshape(c1, q1 * p) @ b.reshape(c2, q2 * p).T
        elif mode is KernelMode.DIAGONAL:
            blk = torch.bmm(a.transpose(0, 1), b.permute(1, 2, 0)).permute(1, 2, 0)
        else:
            blk = (a.reshape(c1 * q1, p) @ b.reshape(c2 * q2, p).T).reshape(c1, q1, c2, q2).permute(0, 2, 1, 3)
        total = blk if total is None else total.add_(blk)
    return total


_LOOP_COST = 8.0
"""``jacobian_loop`` is priced at this many times ``jacobian`` (a Python loop over examples and output rows), so
that ``auto`` picks it only when the vectorized methods cannot run the model."""


class JacobianMethod:
    """Jacobian contraction; see :class:`ntkmonitor.NTKMethod` for when to pick it.

    Args:
        vectorized: ``vmap`` over the examples of a block (``"jacobian"``), or a loop without ``vmap``
            (``"jacobian_loop"``).
    """

    def __init__(self, vectorized: bool = True) -> None:
        self.vectorized = vectorized

    def cost(self, request: KernelRequest) -> float:
        """``(3 [FP] + W P) k`` per example's Jacobian built, plus ``2 n1 n2 k P`` (``k^2`` in full mode).

        ``W`` (:data:`_WRITE_COST`) prices writing one Jacobian entry to memory in FLOP-equivalents; in
        ``[FP]``, the forward FLOPs per example, convolutions count :data:`_CONV_COST` times.
        """
        k, P = request.k, request.fmodel.num_params
        fp = max(request.profile.flops_per_example, 2.0 * P)
        fp += (_CONV_COST - 1.0) * request.profile.conv_flops_per_example
        c, _ = _plan(request)
        cached = request.n2 * k * P * request.itemsize <= request.budget / 2
        row_blocks = math.ceil(request.n1 / c)
        if request.symmetric:
            built = request.n1 if cached else request.n1 * (row_blocks + 1) / 2
        else:
            built = request.n1 + request.n2 * (1 if cached else row_blocks)
        sym = 0.5 if request.symmetric else 1.0
        kk = k * k if request.mode is KernelMode.FULL else k
        cost = (3 * fp + _WRITE_COST * P) * k * built + 2 * request.n1 * request.n2 * kk * P * sym
        return cost if self.vectorized else _LOOP_COST * cost

    def compute(self, request: KernelRequest) -> torch.Tensor:
        """The kernel, summed over outputs in trace mode (both halves, also when symmetric)."""
        c, q = _plan(request)
        mode, k = request.mode, request.k
        out_chunks = chunks(k, q)
        rows = [(ex, out) for out in out_chunks for ex in chunks(request.n1, c)]
        cols = None if request.symmetric else [(ex, out) for out in out_chunks for ex in chunks(request.n2, c)]
        col_bytes = request.n2 * k * request.fmodel.num_params * request.itemsize

        def build(x: _inputs.Batch, block: tuple[slice, slice]) -> Jacobian:
            return _jacobian(request, x, block[0], block[1], self.vectorized)

        result = request.new_result()
        pairs = BlockPairs(request, rows, cols, build, cache_columns=col_bytes <= request.budget / 2)
        for (ex1, out1), (ex2, out2), j1, j2, mirror in pairs:
            if mode is not KernelMode.FULL and out2 != out1:
                continue
            blk = contract(j1, j2, mode)
            if mode is KernelMode.TRACE:
                result[ex1, ex2] += blk
                if mirror:
                    result[ex2, ex1] += blk.T
            elif mode is KernelMode.DIAGONAL:
                result[ex1, ex2, out1] = blk
                if mirror:
                    result[ex2, ex1, out1] = blk.transpose(0, 1)
            else:
                result[ex1, ex2, out1, out2] = blk
                if mirror:
                    result[ex2, ex1, out2, out1] = blk.permute(1, 0, 3, 2)
        return result
