"""Predictions from a finite probe against a known answer: eigenlearning on the boolean hypercube.

The truth. A finite domain ``X = {-1, 1}^d`` with the uniform measure; the empirical NTK (float64) of a real
network at initialization (a 2-hidden-layer ReLU MLP of width 512, PyTorch's default initialization) on all
of ``X``; ridgeless kernel regression on random training sets ``D`` of size ``n`` (drawn without
replacement, several trials, a private generator); test MSE and learnability ``<y, f_hat> / <y, y>``
measured over the whole domain, averaged over the trials.

The contenders, each given only a probe of ``M`` random domain points (the kernel on the probe and the
labels there), for several probe draws:

- **old**: the policy before the estimator, ``tracker.predict_from_spectrum``: the probe's eigenvalues and
  its own-basis coefficients, with a power-law eigenvalue tail of zero target power;
- **new**: :class:`ntkmonitor.ProbeEstimator` (deterministic equivalents with negative sample ridges,
  power-law continuation, intervals);
- **theory**: the eigenlearning theory on the *whole-domain* spectrum and coefficients (not a contender:
  the best any probe-based estimate of the theory could do).

The grid: ``n / M`` in {1/4, 1/2, 1, 2, 4, 8}, for ``M = 64`` on ``{-1,1}^11`` (2048 points) and ``M = 256``
on ``{-1,1}^13`` (8192 points), so that the largest training set is a quarter of the domain. (A probe is a
sample *without replacement* of a finite domain, which biases ``kappa`` by about ``M / |X|``, and training
sets of half the domain make every mode learnable faster than any power law: finite-domain effects that
real data sets do not have.) Targets: ``low`` (degree-1 and -2 Walsh functions), ``spread`` (degrees 1-6,
decaying) and ``noisy`` (degrees 1-3 plus white label noise of variance 0.3).

Reported per grid point: the truth, the whole-domain theory, and for old and new the **median over probe
draws** of predicted/true test MSE and of predicted - true learnability, and for new the fraction of probe
draws whose interval covers the truth. Single-threaded by default (``--threads``).

    python benchmarks/bench_prediction.py                       # the full grid (~10 minutes on 2 cores)
    python benchmarks/bench_prediction.py --quick --json p.json # {-1,1}^8, M = 32, 3 probes (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ntkmonitor  # noqa: E402
from ntkmonitor.tracker import predict_from_spectrum  # noqa: E402

RATIOS = (0.25, 0.5, 1, 2, 4, 8)
BOUNDS = {"mse_ratio": 1.5, "learnability": 0.05}  # n / M <= 4
BOUNDS_FAR = {"mse_ratio": 2.0, "learnability": 0.08}  # n / M = 8
NOISE = 0.3


def hypercube(d: int) -> torch.Tensor:
    """All ``2^d`` points of ``{-1, 1}^d`` as float64 ``(2^d, d)``."""
    i = torch.arange(2**d)[:, None]
    return (2.0 * ((i >> torch.arange(d)[None, :]) & 1) - 1.0).double()


def domain_kernel(d: int, width: int = 512, seed: int = 0) -> torch.Tensor:
    """The float64 eNTK of a ReLU MLP ``d -> width -> width -> 1`` (default init) on the whole cube."""
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(d, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).double()
    return ntkmonitor.empirical_ntk(net, hypercube(d), dtype=torch.float64)


def targets(X: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The three targets on the domain (each normalized to unit power before the noise)."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]

    def walsh(k: int) -> torch.Tensor:
        bits = sorted(rng.choice(d, k, replace=False).tolist())
        return X[:, bits].prod(dim=1)

    def unit(f: torch.Tensor) -> torch.Tensor:
        return f / f.pow(2).mean().sqrt()

    low = unit(1.0 * walsh(1) + 0.8 * walsh(1) + 0.7 * walsh(2) + 0.5 * walsh(2))
    spread = unit(sum(0.8**k * (walsh(k) + 0.7 * walsh(k)) for k in range(1, 7)))
    noisy = unit(1.0 * walsh(1) + 0.7 * walsh(2) + 0.6 * walsh(3))
    noisy = noisy + math.sqrt(NOISE) * torch.from_numpy(rng.standard_normal(X.shape[0]))
    return {"low": low, "spread": spread, "noisy": noisy}


def truth(K: torch.Tensor, y: torch.Tensor, n: int, trials: int, seed: int = 1) -> dict[str, float]:
    """Ridgeless kernel regression on ``trials`` random training sets of size ``n``, measured on the domain."""
    g = torch.Generator().manual_seed(seed)
    mse, learn = [], []
    for _ in range(trials):
        D = torch.randperm(K.shape[0], generator=g)[:n]
        alpha = torch.cholesky_solve(y[D, None], torch.linalg.cholesky(K[D][:, D]))
        f_hat = (K[:, D] @ alpha)[:, 0]
        mse.append(float((f_hat - y).pow(2).mean()))
        learn.append(float((f_hat * y).sum() / y.pow(2).sum()))
    return {"test_mse": statistics.fmean(mse), "learnability": statistics.fmean(learn), "trials": trials}


def run(domains: list[tuple[int, int]], probes: int, ratios: tuple[float, ...], log=print) -> dict:
    """The whole benchmark; returns the JSON-able results."""
    rows = []
    for d, M in domains:
        start = time.perf_counter()
        K = domain_kernel(d)
        X = hypercube(d)
        spectrum = ntkmonitor.eigendecompose(K)
        log(f"{{-1,1}}^{d}: kernel and whole-domain spectrum in {time.perf_counter() - start:.1f} s")
        for name, y in targets(X).items():
            g = torch.Generator().manual_seed(7)
            draws = [torch.randperm(K.shape[0], generator=g)[:M] for _ in range(probes)]
            estimators, old_specs = [], []
            for P in draws:
                KP, yP = K[P][:, P], y[P]
                estimators.append(ntkmonitor.ProbeEstimator(KP, yP))
                spec = ntkmonitor.eigendecompose(KP)
                old_specs.append((spec, spec.project(yP)))
            coefficients = spectrum.project(y)
            for ratio in ratios:
                n = int(round(ratio * M))
                t = truth(K, y, n, trials=int(min(40, max(4, 4096 // n))))
                theory = ntkmonitor.predict(spectrum.eigenvalues, coefficients, n)
                new = [e.predict(n) for e in estimators]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    old = [predict_from_spectrum(s, v, n)[0] for s, v in old_specs]
                row = {
                    "d": d,
                    "M": M,
                    "target": name,
                    "n_over_M": ratio,
                    "n": n,
                    "truth": t,
                    "theory": {"test_mse": theory.test_mse, "learnability": theory.learnability},
                    "new": _summary(new, t),
                    "old": _summary(old, t),
                }
                row["new"]["coverage_learnability"] = statistics.fmean(
                    float(p.learnability_interval[0] <= t["learnability"] <= p.learnability_interval[1]) for p in new
                )
                row["new"]["coverage_mse"] = statistics.fmean(
                    float(p.test_mse_interval[0] <= t["test_mse"] <= p.test_mse_interval[1]) for p in new
                )
                row["new"]["coverage"] = statistics.fmean(
                    float(
                        p.learnability_interval[0] <= t["learnability"] <= p.learnability_interval[1]
                        and p.test_mse_interval[0] <= t["test_mse"] <= p.test_mse_interval[1]
                    )
                    for p in new
                )
                row["new"]["regime"] = new[0].regime
                row["new"]["interval_width_learnability"] = statistics.median(
                    p.learnability_interval[1] - p.learnability_interval[0] for p in new
                )
                row["new"]["interval_ratio_mse"] = statistics.median(
                    p.test_mse_interval[1] / p.test_mse_interval[0] for p in new
                )
                bounds = BOUNDS if ratio <= 4 else BOUNDS_FAR
                row["new"]["within_bounds"] = bool(
                    1 / bounds["mse_ratio"] <= row["new"]["mse_ratio"] <= bounds["mse_ratio"]
                    and abs(row["new"]["learnability_error"]) <= bounds["learnability"]
                )
                rows.append(row)
                log(_line(row))
    covered = [r["new"]["coverage"] for r in rows]
    return {
        "rows": rows,
        "probes": probes,
        "coverage": statistics.fmean(covered),
        "coverage_learnability": statistics.fmean(r["new"]["coverage_learnability"] for r in rows),
        "coverage_mse": statistics.fmean(r["new"]["coverage_mse"] for r in rows),
        "within_bounds": sum(r["new"]["within_bounds"] for r in rows),
        "grid_points": len(rows),
        "bounds": {"n/M<=4": BOUNDS, "n/M=8": BOUNDS_FAR},
    }


def _summary(preds: list, t: dict[str, float]) -> dict[str, float]:
    ok = [p for p in preds if p is not None]
    if not ok:
        return {"mse_ratio": math.nan, "learnability_error": math.nan, "failed": len(preds)}
    return {
        "mse_ratio": statistics.median(p.test_mse / t["test_mse"] for p in ok),
        "learnability_error": statistics.median(p.learnability - t["learnability"] for p in ok),
        "failed": len(preds) - len(ok),
    }


def _line(r: dict) -> str:
    new, old = r["new"], r["old"]
    return (
        f"M={r['M']:<4} {r['target']:<7} n/M={r['n_over_M']:<5} truth MSE {r['truth']['test_mse']:.4f} "
        f"L {r['truth']['learnability']:.3f} | theory {r['theory']['test_mse']:.4f} {r['theory']['learnability']:.3f} "
        f"| new x{new['mse_ratio']:.2f} {new['learnability_error']:+.3f} cover {new['coverage']:.2f} "
        f"| old x{old['mse_ratio']:.2f} {old['learnability_error']:+.3f}"
    )


def markdown(result: dict) -> str:
    """The results as a markdown table (old beside new)."""
    lines = [
        "| M | target | n/M | truth MSE | truth L | theory MSE / L | old: MSE ratio, L error | "
        "new: MSE ratio, L error | new: interval covers | new: in bounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        new, old, t, th = r["new"], r["old"], r["truth"], r["theory"]
        lines.append(
            f"| {r['M']} | {r['target']} | {r['n_over_M']:g} | {t['test_mse']:.4f} | {t['learnability']:.3f} | "
            f"{th['test_mse']:.4f} / {th['learnability']:.3f} | "
            f"{old['mse_ratio']:.2f}x, {old['learnability_error']:+.3f} | "
            f"{new['mse_ratio']:.2f}x, {new['learnability_error']:+.3f} | {new['coverage']:.0%} | "
            f"{'yes' if new['within_bounds'] else 'no'} |"
        )
    lines.append("")
    lines.append(
        f"Interval coverage over all grid points and probe draws: learnability {result['coverage_learnability']:.1%}, "
        f"test MSE {result['coverage_mse']:.1%}, both at once {result['coverage']:.1%}. Grid points whose medians are "
        f"within the bounds: {result['within_bounds']} / {result['grid_points']}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="{-1,1}^8 with M = 32 and 3 probes: a smoke test")
    parser.add_argument("--probes", type=int, default=None, help="probe draws per grid point (default 20; quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        domains, probes, ratios = [(8, 32)], args.probes or 3, (0.5, 2)
    else:
        domains, probes, ratios = [(11, 64), (13, 256)], args.probes or 20, RATIOS
    start = time.perf_counter()
    result = run(domains, probes, ratios)
    result["seconds"] = time.perf_counter() - start
    table = markdown(result)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
