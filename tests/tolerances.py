"""Every numerical tolerance of the test suite, in one place.

Relative errors are Frobenius: ``||K - K_ref||_F / ||K_ref||_F``.
"""

import torch

KERNEL_RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}
"""Kernel vs the float64 per-example autograd reference (issue 3: <= 1e-10 in float64, <= 1e-4 in float32)."""

METHOD_AGREEMENT_RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}
"""Two methods (or two chunkings) of the same kernel against each other."""

PSD_EIG_ATOL = 1e-10
"""Smallest eigenvalue of a float64 Gram kernel, relative to the largest, may dip to -this."""


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frobenius relative error of ``a`` against the reference ``b`` (computed in float64 on the CPU)."""
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))
