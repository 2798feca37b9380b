"""Quickstart: the empirical NTK of a small MLP, and a few facts about it.

Run:
    python examples/quickstart.py            # ~10 s on 2 CPU cores
    python examples/quickstart.py --width 2048
    python examples/quickstart.py --quick --out ntk_runs/quickstart   # seconds; facts saved as JSON

It builds a 2-hidden-layer MLP on synthetic 8-d data with 3 outputs, computes its empirical NTK on a
probe of 128 points with :func:`ntkmonitor.empirical_ntk`, checks it against a second method, and
prints: shape, symmetry, the top of the eigenvalue spectrum, how close the full kernel is to
``K_trace (x) I_k`` (which holds for wide networks), and how much the kernel moves after a few
steps of training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

import ntkmonitor


def make_mlp(width: int, d: int = 8, k: int = 3) -> nn.Module:
    """A 2-hidden-layer ReLU MLP ``d -> width -> width -> k``."""
    return nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, k))


def main(argv: list[str] | None = None) -> dict:
    """Run the quickstart and return the facts it printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--width", type=int, default=512, help="hidden width (default 512)")
    parser.add_argument("--probe-size", type=int, default=128, help="probe points M (default 128)")
    parser.add_argument("--steps", type=int, default=50, help="SGD steps before the second kernel (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder to save the facts to as quickstart.json (default: none)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (width 32, 16 points, 3 steps)")
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.probe_size, args.steps = 32, 16, 3

    torch.manual_seed(args.seed)
    model = make_mlp(args.width)
    x = torch.randn(args.probe_size, 8)
    y = torch.sin(x[:, :3] * 2)  # a smooth 3-output target
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ntkmonitor {ntkmonitor.__version__} | MLP 8-{args.width}-{args.width}-3, {n_params:,} parameters")

    t0 = time.perf_counter()
    K = ntkmonitor.empirical_ntk(model, x)  # (M, M), mean over the 3 outputs
    t_auto = time.perf_counter() - t0
    t0 = time.perf_counter()
    K_vp = ntkmonitor.empirical_ntk(model, x, method="ntk_vp")
    t_vp = time.perf_counter() - t0
    agree = float((K - K_vp).norm() / K.norm())
    print(f"trace kernel {tuple(K.shape)} in {t_auto:.2f} s (auto); ntk_vp took {t_vp:.2f} s, rel. diff {agree:.1e}")
    print(f"exactly symmetric: {torch.equal(K, K.T)}")

    M = K.shape[0]
    eig = torch.linalg.eigvalsh(K.double()).flip(0) / M  # operator eigenvalues, descending
    p = eig.clamp_min(0) / eig.clamp_min(0).sum()
    eff_rank = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    top = ", ".join(f"{v:.3g}" for v in eig[:5].tolist())
    print(f"top eigenvalues (eig(K)/M): {top}; effective rank {eff_rank:.1f} of {M}")

    full = ntkmonitor.empirical_ntk(model, x[:32], mode="full")  # (32, 32, 3, 3)
    diag_part = torch.diagonal(full, dim1=2, dim2=3)
    off = full - torch.diag_embed(diag_part)
    off_ratio = float(off.norm() / full.norm())
    print(f"full kernel: off-diagonal output blocks hold {100 * off_ratio:.1f}% of its norm (0% = K_trace (x) I)")

    K0 = K.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(args.steps):
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).sum(1).mean()
        loss.backward()
        opt.step()
    Kt = ntkmonitor.empirical_ntk(model, x)
    distance = float(1 - (K0 * Kt).sum() / (K0.norm() * Kt.norm()))
    rel_change = float((Kt - K0).norm() / K0.norm())
    print(
        f"after {args.steps} SGD steps (loss {loss.item():.3f}): kernel distance {distance:.2e}, "
        f"relative kernel change {rel_change:.2e}  (small = lazy regime; try --width 64)"
    )
    facts = {
        "kernel_seconds": t_auto,
        "method_rel_diff": agree,
        "effective_rank": eff_rank,
        "off_diagonal_ratio": off_ratio,
        "kernel_distance": distance,
    }
    if args.out is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "quickstart.json").write_text(json.dumps(facts, indent=1))
        print(f"wrote {Path(args.out) / 'quickstart.json'}")
    return facts


if __name__ == "__main__":
    main()
