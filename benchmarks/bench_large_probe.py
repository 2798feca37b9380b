"""A large probe: the trace kernel of the MLP 784-512-512-10 on 16,384 points on the CPU, and its top-k spectrum.

Prediction work wants probes far larger than the few hundred points a live monitor uses. This computes
``empirical_ntk(model, x, mode="trace")`` (``method="auto"``, the default memory budget) on ``--n`` points and the
leading ``--top-k`` eigenpairs with :func:`ntkmonitor.spectrum.eigh_top`, and reports for each step the wall time and
the process's peak resident memory (``VmHWM``, which includes the interpreter and torch, ~0.3 GiB).

Checks, independent of the code being timed:

- a ``--check`` x ``--check`` block of the kernel at random rows and columns against a float64 kernel of those
  points computed by per-example Jacobians (``method="jacobian_loop"``);
- every eigenpair's residual ``||K u - mu u|| / mu`` on the float64 kernel.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_large_probe.py                 # n = 16384, top 10
    python benchmarks/bench_large_probe.py --n 2048 --check 16               # smoke test
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _peak_rss import proc_status_kib
from torch import nn

import ntkmonitor
from ntkmonitor.spectrum import eigh_top


def _gib(kib: int) -> float:
    return kib / 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16384, help="probe points (default 16384)")
    parser.add_argument("--top-k", type=int, default=10, help="leading eigenpairs (default 10)")
    parser.add_argument("--check", type=int, default=48, help="side of the checked block (default 48)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    x = torch.randn(args.n, 784, generator=torch.Generator().manual_seed(1))
    ntkmonitor.empirical_ntk(model, x[:4])  # one-time set-up (lazy imports, torch.func), not timed
    base = proc_status_kib("VmRSS")

    start = time.perf_counter()
    K = ntkmonitor.empirical_ntk(model, x, mode="trace")
    kernel_s = time.perf_counter() - start
    kernel_peak = proc_status_kib("VmHWM")

    start = time.perf_counter()
    Kd = K.double()
    mu, U, how = eigh_top(Kd, args.top_k)
    spectrum_s = time.perf_counter() - start
    peak = proc_status_kib("VmHWM")

    # checks (after the measurements: the float64 reference Jacobians are large)
    residual = float(((Kd @ U - U * mu).norm(dim=0) / mu.abs()).max())
    del Kd
    gen = torch.Generator().manual_seed(2)
    rows = torch.randperm(args.n, generator=gen)[: args.check]
    cols = torch.randperm(args.n, generator=gen)[: args.check]
    reference = ntkmonitor.empirical_ntk(
        model, x[rows], x[cols], mode="trace", method="jacobian_loop", dtype=torch.float64
    )
    block_err = float((K[rows][:, cols].double() - reference).norm() / reference.norm())

    result = {
        "n": args.n,
        "threads": torch.get_num_threads(),
        "kernel_s": kernel_s,
        "spectrum_s": spectrum_s,
        "spectrum_method": how,
        "top_eigenvalues": [float(v) for v in mu[:5]],
        "block_rel_err": block_err,
        "max_eigen_residual": residual,
        "base_rss_gib": _gib(base),
        "peak_rss_after_kernel_gib": _gib(kernel_peak),
        "peak_rss_gib": _gib(peak),
    }
    print(
        f"n = {args.n}, {result['threads']} thread(s): kernel {kernel_s:.1f} s (peak RSS {_gib(kernel_peak):.2f} GiB), "
        f"top {args.top_k} eigenpairs by {how} {spectrum_s:.1f} s (peak RSS {_gib(peak):.2f} GiB); "
        f"{args.check}x{args.check} block vs float64 per-example Jacobians: rel. err {block_err:.1e}; "
        f"max eigenpair residual {residual:.1e}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
