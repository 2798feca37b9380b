"""Eigenlearning on the boolean hypercube: predicted vs measured learnability and test MSE versus n.

Reproduces Fig. 1 of Simon, Dickens, DeWeese, "Neural Tangent Kernel Eigenvalues Accurately Predict
Generalization" (https://arxiv.org/abs/2110.03922) with ntkmonitor's own API.

- **Domain**: all ``M = 256`` points of ``{-1, 1}^8``, uniform measure.
- **Targets**: the parity of the first ``k`` bits, ``k in {0, 1, 3, 8}`` (``k = 0`` is the constant
  function); every parity has unit norm.
- **Network**: 4 hidden layers of width 500, ReLU, in the NTK parameterization
  (``y = (sigma_w / sqrt(fan_in)) W x + sigma_b b``, ``W, b ~ N(0, 1)``, ``sigma_w = sqrt(2)``,
  ``sigma_b = 0.1``; see ``examples/_common.py``). That parameterization keeps a wide network close to
  its kernel with one learning rate for all layers, which is the regime the theory describes.
- **Training**: MSE loss ``(1/2n) sum (f_hat - y)^2`` on ``n`` points drawn without replacement, output
  centered at initialization (``f_hat = f_theta - f_theta0``), full-batch gradient descent from the same
  initialization until the train MSE is below ``1e-5`` (step cap ``--max-steps``).
  **Learning rate** ``eta = 1.8 n / mu_max(K_DD)``, with ``mu_max(K_DD)`` the largest eigenvalue of the
  network's empirical NTK at initialization on the training set: in the linearized network eigenmode
  ``j`` of ``K_DD`` then shrinks by ``|1 - 1.8 mu_j / mu_max|`` per step, so the top mode is stable
  (factor 0.8 < 1) and the slowest mode converges nearly twice as fast as at ``eta = n / mu_max``.
  Gradient descent to (near) zero train loss is what makes the network comparable to ridgeless kernel
  regression.
- **Theory**: :func:`ntkmonitor.predict` with the spectrum of the network's **empirical NTK at
  initialization on the whole domain** (:func:`ntkmonitor.empirical_ntk` then
  :func:`ntkmonitor.eigendecompose`), the target's coefficients ``Spectrum.project(y)``, ``n``, ridge 0.
  At ``n = M = 256`` ridgeless theory has no solution (the network interpolates the whole domain): only
  the measured point is plotted there.
- **Measured**: learnability ``<y, f_hat> / <y, y>`` and MSE ``mean (f_hat - y)^2`` over the whole domain,
  mean and standard deviation over ``--trials`` training sets per ``n``.

Outputs in ``--out`` (default ``ntk_runs/hypercube``): ``boolean_hypercube.png`` (two panels: learnability
and MSE vs n; theory as curves, networks as dots with error bars, one colour per k), ``results.json``
(every number), and TensorBoard logs (``tensorboard --logdir OUT``: predicted and measured overlaid per k,
step = n, and the figure).

    python examples/boolean_hypercube.py              # default: ~4 minutes on 2 CPU cores
    python examples/boolean_hypercube.py --trials 8   # smoother error bars
    python examples/boolean_hypercube.py --quick      # seconds: width 64, a coarse grid
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
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
    parity,
    stderr,
    train_full_batch,
)

import ntkmonitor  # noqa: E402

DEFAULT_GRID = (2, 4, 8, 16, 32, 64, 96, 128, 192, 256)
COLOURS = {0: "tab:blue", 1: "tab:orange", 3: "tab:green", 8: "tab:red"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--out", default="ntk_runs/hypercube", help="output folder (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=8, help="cube dimension d; M = 2^d points (default: 8)")
    parser.add_argument("--width", type=int, default=500, help="hidden width (default: 500)")
    parser.add_argument("--depth", type=int, default=4, help="hidden layers (default: 4)")
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 3, 8], help="parity orders (default: 0 1 3 8)")
    parser.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_GRID), help="training-set sizes")
    parser.add_argument("--trials", type=int, default=2, help="training sets per n (default: 2)")
    add_training_arguments(parser, max_steps=4_000)
    args = parser.parse_args(argv)
    if args.quick:
        args.dim, args.width, args.depth, args.trials, args.max_steps = 6, 64, 2, 1, 300
        args.ks = [k for k in args.ks if k <= args.dim] or [0, 1, 3]
        args.ns = [2, 8, 32, 64]
    M = 2**args.dim
    bad = [n for n in args.ns if not 1 <= n <= M]
    if bad:
        parser.error(f"--ns: expected sizes between 1 and M = {M}, but got {bad}")
    bad = [k for k in args.ks if not 0 <= k <= args.dim]
    if bad:
        parser.error(f"--ks: expected parity orders between 0 and d = {args.dim}, but got {bad}")
    args.ns = sorted(set(args.ns))
    return args


def theory_curves(spectrum: ntkmonitor.Spectrum, targets: dict[int, torch.Tensor], ns: list[int]) -> dict:
    """Predicted learnability and test MSE per k on the sizes ``ns`` (``None`` where there is no solution)."""
    curves = {}
    for k, y in targets.items():
        v = spectrum.project(y)
        learn, mse = [], []
        for n in ns:
            try:
                p = ntkmonitor.predict(spectrum, v, n)
                learn.append(p.learnability)
                mse.append(p.test_mse)
            except ntkmonitor.NoSolutionError:
                learn.append(None)
                mse.append(None)
        curves[k] = {"n": ns, "learnability": learn, "test_mse": mse}
    return curves


def run_experiments(args: argparse.Namespace, model: torch.nn.Module, X: torch.Tensor, K: torch.Tensor, targets: dict):
    """Train one network per (n, trial, k); return the measured learnability and MSE."""
    M = X.shape[0]
    ks = list(targets)
    gen = torch.Generator().manual_seed(args.seed + 1)
    fields = ("n", "learnability", "mse", "steps", "train_mse", "distance", "distance_predicted")
    measured = {k: {name: [] for name in fields} for k in ks}
    for n in args.ns:
        t0 = time.perf_counter()
        # at n = M every draw is the whole domain and, from the same initialization, every trial the same
        trials = 1 if n == M else args.trials
        idx = torch.stack([torch.randperm(M, generator=gen)[:n] for _ in range(trials)])  # (T, n)
        lr = gd_learning_rates(K, idx, args.lr_factor)  # (T,)
        # one problem per (k, trial): problem b = ki * trials + t
        train_idx = idx.repeat(len(ks), 1)
        Y = torch.stack([targets[k] for k in ks for _ in range(trials)])
        result = train_full_batch(
            model, X, train_idx, Y, lr.repeat(len(ks)), tol=args.tol, max_steps=args.max_steps, log=stderr
        )
        for ki, k in enumerate(ks):
            sl = slice(ki * trials, (ki + 1) * trials)
            f_hat, y = result["f_hat"][sl].cpu(), targets[k].cpu()
            measured[k]["n"].append(n)
            measured[k]["learnability"].append([ntkmonitor.learnability(y, f) for f in f_hat])
            measured[k]["mse"].append([float((f - y).pow(2).mean()) for f in f_hat])
            measured[k]["steps"].append(result["steps"][sl].tolist())
            measured[k]["train_mse"].append(result["train_mse"][sl].tolist())
            # ||theta - theta_0|| travelled vs the linearized network's sqrt(y^T K_DD^-1 y) (its f_hat starts at 0)
            measured[k]["distance"].append(result["distance"][sl].tolist())
            measured[k]["distance_predicted"].append([ntkmonitor.weight_distance(K[i][:, i], y[i]) for i in idx.cpu()])
        steps = result["steps"].view(len(ks), trials).max(dim=1).values.tolist()
        capped = int((result["train_mse"] >= args.tol).sum())
        stderr(
            f"  n={n:4d}: trained {len(ks) * trials} networks in {time.perf_counter() - t0:.1f} s, steps per k "
            f"{dict(zip(ks, steps, strict=True))}" + (f", {capped} stopped at the step cap" if capped else "")
        )
    return measured


def distance_ratio(measured_k: dict) -> float:
    """Mean over the grid of measured ``||theta - theta_0||`` / predicted ``sqrt(y^T K_DD^-1 y)`` (1 = lazy)."""
    ratios = [
        m / p
        for ms, ps in zip(measured_k["distance"], measured_k["distance_predicted"], strict=True)
        for m, p in zip(ms, ps, strict=True)
        if p > 0
    ]
    return sum(ratios) / len(ratios) if ratios else math.nan


def agreement(curves: dict, measured: dict) -> dict[int, float]:
    """Mean |predicted - measured mean| learnability over the n grid where the theory has a solution."""
    out = {}
    for k in measured:
        diffs = []
        for n, vals in zip(measured[k]["n"], measured[k]["learnability"], strict=True):
            pred = curves[k]["learnability"][curves[k]["n"].index(n)]
            if pred is not None:
                diffs.append(abs(pred - sum(vals) / len(vals)))
        out[k] = sum(diffs) / len(diffs) if diffs else math.nan
    return out


def figure(curves: dict, measured: dict, M: int, title: str):
    """Two panels: learnability and MSE vs n; theory as curves, networks as dots with error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
    for k in measured:
        colour = COLOURS.get(k)
        c = curves[k]
        pts = [(n, a, b) for n, a, b in zip(c["n"], c["learnability"], c["test_mse"], strict=True) if a is not None]
        n_th = [p[0] for p in pts]
        axes[0].plot(n_th, [p[1] for p in pts], color=colour, label=f"k = {k}")
        axes[1].plot(n_th, [p[2] for p in pts], color=colour, label=f"k = {k}")
        m = measured[k]
        for ax, key in ((axes[0], "learnability"), (axes[1], "mse")):
            mean = [sum(v) / len(v) for v in m[key]]
            std = [torch.tensor(v).std().item() if len(v) > 1 else 0.0 for v in m[key]]
            ax.errorbar(m["n"], mean, yerr=std, fmt="o", color=colour, ms=4, capsize=2)
    axes[0].set(xscale="log", xlabel="training-set size n", ylabel="learnability", ylim=(-0.05, 1.05))
    axes[1].set(xscale="log", xlabel="training-set size n", ylabel="test MSE (whole domain)", ylim=(-0.05, 1.6))
    for ax in axes:
        ax.set_xlim(1.5, M * 1.15)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="0.3"), plt.Line2D([], [], color="0.3", marker="o", linestyle="")]
    labels += ["theory (eNTK at init)", "trained networks (mean, std)"]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), title="parity of the first k bits")
    fig.suptitle(title)
    return fig


def write_tensorboard(out: Path, curves: dict, measured: dict, fig) -> None:
    """Predicted and measured per k as scalars (step = n), overlaid by a custom-scalars layout, and the figure."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tensorboard"))
    layout = {"eigenlearning (step = n)": {}}
    for k in measured:
        for key, th_key in (("learnability", "learnability"), ("mse", "test_mse")):
            tags = [f"hypercube/k{k}/{key}_predicted", f"hypercube/k{k}/{key}_measured"]
            layout["eigenlearning (step = n)"][f"k={k} {key}: predicted vs measured"] = ["Multiline", tags]
            for n, value in zip(curves[k]["n"], curves[k][th_key], strict=True):
                if value is not None:
                    writer.add_scalar(tags[0], value, n)
            for n, values in zip(measured[k]["n"], measured[k][key], strict=True):
                writer.add_scalar(tags[1], sum(values) / len(values), n)
    writer.add_custom_scalars(layout)
    writer.add_figure("hypercube/figure", fig, close=False)
    writer.close()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    torch.set_grad_enabled(True)
    X = hypercube(args.dim).to(args.device)
    M = X.shape[0]
    model = ntk_mlp(args.dim, args.width, args.depth, "relu", seed=args.seed).to(args.device)
    stderr(f"boolean hypercube: M = {M} points, network {args.depth} x {args.width} ReLU (NTK parameterization)")
    K = ntkmonitor.empirical_ntk(model, X, dtype=torch.float64).cpu()  # (M, M), the eNTK at initialization
    spectrum = ntkmonitor.eigendecompose(K)
    targets = {k: parity(X.cpu(), k) for k in args.ks}
    stderr(
        f"  eNTK at init: {time.perf_counter() - t_start:.1f} s, top eigenvalues "
        + ", ".join(f"{v:.4g}" for v in spectrum.eigenvalues[:3].tolist())
    )
    theory_ns = sorted(set(range(1, M + 1, max(1, M // 128))) | set(args.ns))
    curves = theory_curves(spectrum, targets, theory_ns)
    measured = run_experiments(args, model, X, K, targets)
    diff = agreement(curves, measured)
    title = (
        f"{{-1,1}}^{args.dim}: {args.depth}x{args.width} ReLU, eNTK theory (curves) vs trained networks "
        f"(dots, {args.trials} trials)"
    )
    fig = figure(curves, measured, M, title)
    fig.savefig(out / "boolean_hypercube.png", dpi=120)
    write_tensorboard(out, curves, measured, fig)
    results = {
        "settings": {key: value for key, value in vars(args).items()},
        "M": M,
        "eigenvalues": spectrum.eigenvalues.tolist(),
        "theory": {str(k): v for k, v in curves.items()},
        "measured": {str(k): v for k, v in measured.items()},
        "mean_abs_learnability_diff": {str(k): v for k, v in diff.items()},
        "seconds": time.perf_counter() - t_start,
    }

    print(f"Predicted vs measured learnability ({args.trials} trials per n, whole-domain measurement):")
    print("   n  " + "  ".join(f"k={k}: theory  net  " for k in measured))
    for i, n in enumerate(args.ns):
        cells = []
        for k in measured:
            pred = curves[k]["learnability"][curves[k]["n"].index(n)]
            vals = measured[k]["learnability"][i]
            cells.append(f"   {'  -  ' if pred is None else f'{pred:.3f}'}  {sum(vals) / len(vals):.3f}")
        print(f"{n:5d}" + "".join(cells))
    print(
        "mean |predicted - measured| learnability over the grid: "
        + ", ".join(f"k={k}: {d:.3f}" for k, d in diff.items())
    )
    ratios = {k: distance_ratio(measured[k]) for k in measured}
    results["distance_ratio"] = {str(k): r for k, r in ratios.items()}
    print(
        "distance travelled ||theta - theta_0||, measured / predicted by the linearized network (mean over n): "
        + ", ".join(f"k={k}: {r:.3f}" for k, r in ratios.items())
    )
    (out / "results.json").write_text(json.dumps(results, indent=1))
    board = shlex.join([sys.executable, "-m", "tensorboard.main", "--logdir", str(out / "tensorboard")])
    print(f"wrote {out / 'boolean_hypercube.png'}, {out / 'results.json'}; see them with: {board}")
    print(f"total {results['seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
