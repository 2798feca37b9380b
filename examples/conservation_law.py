"""The conservation law of learnability: summed over a complete eigenbasis, learnabilities add up to n.

Reproduces Fig. 2 of Simon, Dickens, DeWeese, "Neural Tangent Kernel Eigenvalues Accurately Predict
Generalization" (https://arxiv.org/abs/2110.03922) with ntkmonitor's own API. On a finite domain ``X``
with the uniform measure, kernel regression from a training set ``D`` of ``n`` points learns each function
``g`` with learnability ``L^D(g) = <g, g_hat> / <g, g>``; summed over any complete orthonormal basis,

    sum_i L^D(phi_i) = n        (exactly, for ridgeless regression).

For four architectures (fully connected ReLU and tanh networks, 1 and 4 hidden layers, width 500, NTK
parameterization as in ``examples/_common.py``) on the cube ``{-1, 1}^6`` (``M = 64`` points) and one
random training set of ``n = 16`` points:

- **NTK regression** (left bar of each pair): :func:`ntkmonitor.conservation_check` on the network's
  empirical NTK at initialization on the whole domain: exact.
- **Trained networks** (right bar): one network per eigenfunction ``phi_i`` of that kernel, each from the
  same initialization, trained on ``phi_i``'s values at the ``n`` training points by full-batch gradient
  descent (MSE loss, output centered at initialization, learning rate ``1.8 n / mu_max(K_DD)``) until
  the train MSE is below ``1e-5``; its learnability ``<phi_i, f_hat> / <phi_i, phi_i>`` is measured on
  the whole domain. The sum over all ``M`` networks is approximately ``n``: a trained network is only
  approximately its kernel at initialization.

Each bar is stacked from the per-eigenfunction learnabilities, coloured by eigenvalue rank (top modes at
the bottom; negative learnabilities stack downwards); a dashed line marks ``n``.

Outputs in ``--out`` (default ``ntk_runs/conservation``): ``conservation_law.png`` and ``conservation_law.json``.

    python examples/conservation_law.py            # default: ~2 minutes on 2 CPU cores
    python examples/conservation_law.py --quick    # seconds: width 64, {-1, 1}^4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    add_training_arguments,
    gd_learning_rates,
    hypercube,
    ntk_mlp,
    stderr,
    train_full_batch,
)

import ntkmonitor  # noqa: E402

ARCHITECTURES = (("relu", 1), ("relu", 4), ("tanh", 1), ("tanh", 4))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--out", default="ntk_runs/conservation", help="output folder (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=6, help="cube dimension d; M = 2^d points (default: 6)")
    parser.add_argument("--n", type=int, default=16, help="training-set size (default: 16)")
    parser.add_argument("--width", type=int, default=500, help="hidden width (default: 500)")
    add_training_arguments(parser, max_steps=20_000)
    args = parser.parse_args(argv)
    if args.quick:
        args.dim, args.n, args.width, args.max_steps = 4, 4, 64, 2000
    if not 1 <= args.n < 2**args.dim:
        parser.error(f"--n: expected a training-set size between 1 and M - 1 = {2**args.dim - 1}, but got {args.n}")
    return args


def run_architecture(
    args: argparse.Namespace, activation: str, depth: int, X: torch.Tensor, train: torch.Tensor
) -> dict:
    """NTK regression and trained networks for one architecture; per-mode learnabilities and their sums."""
    t0 = time.perf_counter()
    model = ntk_mlp(X.shape[1], args.width, depth, activation, seed=args.seed).to(args.device)
    K = ntkmonitor.empirical_ntk(model, X, dtype=torch.float64).cpu()  # (M, M) eNTK at initialization
    exact = ntkmonitor.conservation_check(K, train)
    spectrum = ntkmonitor.eigendecompose(K)
    phi = spectrum.eigenfunctions().float()  # (M, M): column i is phi_i on the domain, mean(phi_i^2) = 1
    M = X.shape[0]
    targets = phi.T.contiguous()  # (M, M): one target per network
    train_idx = train.expand(M, -1)
    lr = gd_learning_rates(K, train[None], args.lr_factor).expand(M)
    result = train_full_batch(model, X, train_idx, targets, lr, tol=args.tol, max_steps=args.max_steps, log=stderr)
    f_hat = result["f_hat"].cpu()
    network = torch.tensor([ntkmonitor.learnability(targets[i], f_hat[i]) for i in range(M)], dtype=torch.float64)
    capped = int((result["train_mse"] >= args.tol).sum())
    stderr(
        f"  {activation} x{depth}: NTK regression sum {exact.total:.10f}, networks sum {float(network.sum()):.3f} "
        f"(n = {args.n}); {M} networks, up to {int(result['steps'].max())} steps, {time.perf_counter() - t0:.0f} s"
        + (f"; {capped} stopped at the step cap" if capped else "")
    )
    return {
        "activation": activation,
        "depth": depth,
        "ntk_regression": exact.mode_learnability.tolist(),
        "ntk_regression_sum": exact.total,
        "network": network.tolist(),
        "network_sum": float(network.sum()),
        "eigenvalues": exact.eigenvalues.tolist(),
        "steps_max": int(result["steps"].max()),
        "networks_at_step_cap": capped,
    }


def figure(runs: list[dict], n: int, M: int, title: str):
    """Pairs of stacked bars (NTK regression, trained networks) per architecture, a dashed line at n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(9, 4.6), constrained_layout=True)
    ticks, labels = [], []
    for a, run in enumerate(runs):
        for b, key in enumerate(("ntk_regression", "network")):
            x = 3 * a + b
            up = down = 0.0
            for i, value in enumerate(run[key]):
                colour = cmap(i / max(M - 1, 1))
                if value >= 0:
                    ax.bar(x, value, bottom=up, color=colour, width=0.8, linewidth=0)
                    up += value
                else:
                    ax.bar(x, value, bottom=down, color=colour, width=0.8, linewidth=0)
                    down += value
            ax.text(x, up + 0.01 * n, f"{sum(run[key]):.2f}", ha="center", va="bottom", fontsize=8)
            ticks.append(x)
            labels.append(f"{run['activation']} x{run['depth']}\n" + ("NTK regr." if b == 0 else "networks"))
    ax.axhline(n, color="k", linestyle="--", linewidth=1, label=f"n = {n}")
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_ylabel("sum of learnabilities over the eigenbasis")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), n * 1.25)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(1, M))
    fig.colorbar(mappable, ax=ax, label="eigenmode (1 = largest eigenvalue)")
    ax.legend(loc="upper right")
    ax.set_title(title, fontsize=10)
    return fig


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    X = hypercube(args.dim).to(args.device)
    M = X.shape[0]
    train = torch.randperm(M, generator=torch.Generator().manual_seed(args.seed + 1))[: args.n]
    stderr(f"conservation law: M = {M} points of {{-1,1}}^{args.dim}, n = {args.n}, width {args.width}")
    runs = [run_architecture(args, activation, depth, X, train) for activation, depth in ARCHITECTURES]
    title = (
        f"{{-1,1}}^{args.dim} (M = {M}), one training set of n = {args.n}: NTK regression (left, exact) and "
        f"width-{args.width} networks (right)"
    )
    fig = figure(runs, args.n, M, title)
    fig.savefig(out / "conservation_law.png", dpi=120)
    results = {
        "settings": vars(args),
        "train_idx": train.tolist(),
        "runs": runs,
        "max_ntk_regression_error": max(abs(r["ntk_regression_sum"] - args.n) for r in runs),
        "max_network_relative_error": max(abs(r["network_sum"] - args.n) / args.n for r in runs),
        "seconds": time.perf_counter() - t_start,
    }
    (out / "conservation_law.json").write_text(json.dumps(results, indent=1))
    print(f"Sum of learnabilities over all {M} eigenfunctions, n = {args.n}:")
    print("  architecture   NTK regression       trained networks")
    for r in runs:
        print(
            f"  {r['activation']:4s} x{r['depth']}        {r['ntk_regression_sum']:.10f}    {r['network_sum']:.3f} "
            f"({100 * (r['network_sum'] - args.n) / args.n:+.1f} %)"
        )
    print(
        f"NTK regression: max |sum - n| = {results['max_ntk_regression_error']:.1e}; networks: max relative "
        f"deviation {100 * results['max_network_relative_error']:.1f} %"
    )
    print(f"wrote {out / 'conservation_law.png'}, {out / 'conservation_law.json'} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
