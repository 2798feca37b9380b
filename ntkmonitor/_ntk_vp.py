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

from . import _inputs
from ._problem import KernelMode, KernelProblem, chunks, clamp_count

_EFFICIENCY_PENALTY = 2.5
"""``jvp``/``vjp`` run at a lower FLOP rate than one matrix product; ``auto`` weights them by this."""


def _plan(problem: KernelProblem) -> tuple[int, int, int]:
    """``(x2 examples per column block, outputs per basis chunk, x1 rows per jvp)``."""
    k, P, size = problem.k, problem.fmodel.num_params, problem.itemsize
    acts = max(problem.profile.activations_per_example, float(k))
    n1 = problem.n1
    if problem.chunk_size is not None:
        c = min(problem.chunk_size, problem.n2)
        problem.check_fits(
            c * k * (P + 2 * n1 * acts) * size,
            f"the NTK-vector products of chunk_size={problem.chunk_size} examples x {k} outputs over {n1} rows",
            "Pass a smaller chunk_size, or chunk_size=None to size blocks automatically.",
        )
        return c, k, n1
    per_vector = (P + 2 * n1 * acts) * size
    vectors = problem.budget / per_vector
    if vectors >= k:
        return clamp_count(vectors / k, problem.n2), k, n1
    if vectors >= 1:
        return 1, int(vectors), n1
    rows = clamp_count((problem.budget / size - P) / (2 * acts), n1)
    return 1, 1, rows


class NTKVPMethod:
    """NTK-vector products; see :class:`ntkmonitor.NTKMethod` for when to pick it."""

    def cost(self, problem: KernelProblem) -> float:
        """``3 [FP] n1 n2 k`` for the jvps plus ``2 [FP] n2 c k`` for the vjps, times a penalty."""
        fp = max(problem.profile.flops_per_example, 2.0 * problem.fmodel.num_params)
        c, _, _ = _plan(problem)
        sym = 0.5 if problem.symmetric else 1.0
        jvps = 3 * fp * problem.n1 * problem.n2 * problem.k * sym
        vjps = 2 * fp * problem.n2 * c * problem.k
        return _EFFICIENCY_PENALTY * (jvps + vjps)

    def compute(self, problem: KernelProblem) -> torch.Tensor:
        """The kernel (upper blocks only when symmetric)."""
        fm, mode, k = problem.fmodel, problem.mode, problem.k
        c, q, r = _plan(problem)
        result = problem.new_result()
        for sj in chunks(problem.n2, c):
            xb = _inputs.take(problem.xb, sj)
            cj = sj.stop - sj.start
            _, vjp_fn = vjp(lambda p, xb=xb: fm(p, xb), fm.primals)
            for sb in chunks(k, q):
                qb = sb.stop - sb.start
                basis = torch.zeros(cj, qb, cj, k, dtype=fm.dtype, device=fm.device)
                jj, bb = torch.meshgrid(torch.arange(cj), torch.arange(qb), indexing="ij")
                basis[jj, bb, jj, bb + sb.start] = 1
                (grads,) = vmap(vjp_fn)(basis.reshape(cj * qb, cj, k))
                stop = sj.stop if problem.symmetric else problem.n1
                for si in chunks(stop, r):
                    xa = _inputs.take(problem.x1, si)

                    def push(g: dict, xa: _inputs.Batch = xa) -> torch.Tensor:
                        return jvp(lambda p: fm(p, xa), (fm.primals,), (g,))[1]

                    cols = vmap(push)(grads).reshape(cj, qb, si.stop - si.start, k)
                    if mode is KernelMode.FULL:
                        result[si, sj, :, sb] = cols.permute(2, 0, 3, 1)
                        continue
                    diag = torch.diagonal(cols[..., sb], dim1=1, dim2=3).transpose(0, 1)  # (ci, cj, qb)
                    if mode is KernelMode.TRACE:
                        result[si, sj] += diag.sum(-1)
                    else:
                        result[si, sj, sb] = diag
        if mode is KernelMode.TRACE:
            result /= k
        return result
