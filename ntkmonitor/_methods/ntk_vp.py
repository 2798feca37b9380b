"""``method="ntk_vp"``: kernel columns as NTK-vector products, never forming a Jacobian.

For a block of ``c`` examples of ``x2`` and ``q`` of the ``k`` outputs, one ``vjp`` through the
model on that block, vectorized over the ``c q`` one-hot cotangents ``e_(j, b)``, gives the
parameter-space vectors ``J2^T e_(j, b)``; one ``jvp`` through the model on rows of ``x1``,
vectorized over those vectors, gives the kernel columns ``J1 J2^T e_(j, b) = K[:, j, :, b]``.
For ``K(x1, x1)`` the rows stop at the end of the column block (upper blocks only).
"""

from __future__ import annotations

import torch
from torch.func import jvp, vjp, vmap

from .. import _inputs
from ..options import KernelMode
from .request import KernelRequest, chunks

_EFFICIENCY_PENALTY = 2.5
"""``jvp``/``vjp`` run at a lower FLOP rate than one matrix product; ``auto`` weights them by this."""


_SLACK = 1.6
"""Measured peak / counted bytes of a block (the allocator's rounding, the finiteness masks, autograd's saved
tensors): blocks are planned with this margin so that the peak stays within the budget."""


def _block_bytes(request: KernelRequest, c: int, q: int, r: int) -> float:
    """Bytes held for one block: ``c`` examples of ``x2``, ``q`` outputs, ``r`` rows of ``x1`` per ``jvp``.

    ``c q`` vectors are live at once, each with the one-hot cotangent over the block (``c k``), the ``vjp``'s
    intermediates (``c [activations]``), the parameter-space result (``P``) and the ``jvp``'s primal and tangent
    activations over ``r`` rows (``2 r [activations]``); plus the block's forward residuals (``c [activations]``).
    """
    k, P = request.k, request.fmodel.num_params
    acts = max(request.profile.activations_per_example, float(k))
    return _SLACK * (c * q * (P + c * (k + acts) + 2 * r * acts) + c * acts) * request.itemsize


def _largest(fits, hi: int) -> int:  # noqa: ANN001 - a predicate on ints
    """The largest ``v`` in ``[1, hi]`` with ``fits(v)`` (monotone), or 0 when even 1 does not fit."""
    lo, top = 0, hi
    while lo < top:
        mid = (lo + top + 1) // 2
        lo, top = (mid, top) if fits(mid) else (lo, mid - 1)
    return lo


def _plan(request: KernelRequest) -> tuple[int, int, int]:
    """``(x2 examples per column block, outputs per basis chunk, x1 rows per jvp)`` within the memory budget.

    The block shrinks in that order (examples, then outputs, then rows); a user's ``chunk_size`` fixes the
    examples. When even one example, one output and one row exceed the budget, the block must still fit in the
    memory available, or :class:`~ntkmonitor.KernelMemoryError` says so.
    """
    k, n1, budget = request.k, request.n1, request.budget
    if request.chunk_size is not None:
        c = min(request.chunk_size, request.n2)
    else:
        c = max(1, _largest(lambda v: _block_bytes(request, v, k, n1) <= budget, request.n2))
    q = _largest(lambda v: _block_bytes(request, c, v, n1) <= budget, k)
    if q:
        return c, q, n1
    r = _largest(lambda v: _block_bytes(request, c, 1, v) <= budget, n1)
    if not r:
        r = 1
        request.check_fits(
            _block_bytes(request, c, 1, 1),
            f"the NTK-vector products of {c} example(s) x 1 output over 1 row",
            "Pass a smaller chunk_size, use method='jacobian', or select fewer parameters with params=[...].",
        )
    return c, 1, r


def _pullback(fm, xb: _inputs.Batch):  # noqa: ANN001, ANN202 - FunctionalModel, the vjp function
    return vjp(lambda p: fm(p, xb), fm.primals)[1]


def _grads(fm, vjp_fn, cj: int, sb: slice, k: int) -> dict:  # noqa: ANN001
    """``J2^T e_(j, b)`` for the block's ``cj`` examples and outputs ``sb``: ``{name: (cj qb, ...)}``, j-major."""
    qb = sb.stop - sb.start
    basis = torch.zeros(cj, qb, cj, k, dtype=fm.dtype, device=fm.device)
    jj, bb = torch.meshgrid(torch.arange(cj), torch.arange(qb), indexing="ij")
    basis[jj, bb, jj, bb + sb.start] = 1
    (grads,) = vmap(vjp_fn)(basis.reshape(cj * qb, cj, k))
    return grads


def _block_grads(fm, xb: _inputs.Batch, vjp_fn, cj: int, sb: slice, k: int) -> dict:  # noqa: ANN001
    """:func:`_grads`, with one example's non-finite derivatives kept to that example's columns.

    The ``vjp`` of a block multiplies every example's intermediates by its cotangent, and ``0 * nan = nan``: one
    example with a non-finite output or derivative would poison every column of its block. Such a block is
    recomputed one example at a time, so the kernel is ``nan`` in that example's row and column only, as with
    the Jacobian-based methods.
    """
    grads = _grads(fm, vjp_fn, cj, sb, k)
    if cj == 1 or all(bool(torch.isfinite(g).all()) for g in grads.values()):
        return grads
    alone = [_grads(fm, _pullback(fm, _inputs.take(xb, slice(j, j + 1))), 1, sb, k) for j in range(cj)]
    return {name: torch.cat([a[name] for a in alone]) for name in grads}


class NTKVPMethod:
    """NTK-vector products; see :class:`ntkmonitor.NTKMethod` for when to pick it."""

    def cost(self, request: KernelRequest) -> float:
        """``3 [FP] n1 n2 k`` for the jvps plus ``2 [FP] n2 c k`` for the vjps, times a penalty."""
        fp = max(request.profile.flops_per_example, 2.0 * request.fmodel.num_params)
        c, _, _ = _plan(request)
        sym = 0.5 if request.symmetric else 1.0
        jvps = 3 * fp * request.n1 * request.n2 * request.k * sym
        vjps = 2 * fp * request.n2 * c * request.k
        return _EFFICIENCY_PENALTY * (jvps + vjps)

    def compute(self, request: KernelRequest) -> torch.Tensor:
        """The kernel, summed over outputs in trace mode (upper blocks only when symmetric)."""
        fm, mode, k = request.fmodel, request.mode, request.k
        c, q, r = _plan(request)
        result = request.new_result()
        for sj in chunks(request.n2, c):
            xb = _inputs.take(request.xb, sj)
            cj = sj.stop - sj.start
            vjp_fn = _pullback(fm, xb)
            for sb in chunks(k, q):
                qb = sb.stop - sb.start
                grads = _block_grads(fm, xb, vjp_fn, cj, sb, k)
                stop = sj.stop if request.symmetric else request.n1
                for si in chunks(stop, r):
                    xa = _inputs.take(request.x1, si)

                    def push(g: dict, xa: _inputs.Batch = xa) -> torch.Tensor:
                        return jvp(lambda p: fm(p, xa), (fm.primals,), (g,))[1]

                    with fm.reverse_mode_tangents():
                        cols = vmap(push)(grads).reshape(cj, qb, si.stop - si.start, k)
                    if mode is KernelMode.FULL:
                        result[si, sj, :, sb] = cols.permute(2, 0, 3, 1)
                        continue
                    diag = torch.diagonal(cols[..., sb], dim1=1, dim2=3).transpose(0, 1)  # (ci, cj, qb)
                    if mode is KernelMode.TRACE:
                        result[si, sj] += diag.sum(-1)
                    else:
                        result[si, sj, sb] = diag
        return result
