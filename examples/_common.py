"""Shared pieces of the eigenlearning examples (``boolean_hypercube.py``, ``conservation_law.py``).

- :func:`hypercube` and :func:`parity`: the boolean hypercube ``{-1, 1}^d`` and its parity (Walsh) functions.
- :class:`NTKLinear` and :func:`ntk_mlp`: fully connected networks in the **NTK parameterization**
  (Jacot et al. 2018, https://arxiv.org/abs/1806.07572): ``y = (sigma_w / sqrt(fan_in)) W x + sigma_b b``
  with ``W, b ~ N(0, 1)``. In this parameterization the NTK has a finite limit as the width grows and one
  learning rate suits every width, which keeps a width-500 network close to its kernel (the lazy regime
  the eigenlearning theory describes).
- :func:`train_full_batch`: full-batch gradient descent on many independent training problems at once
  (``torch.func.vmap`` over stacked copies of the parameters), each until its train MSE is below a
  tolerance, with the network's output centered at initialization.

Not a public API: the examples import it from their own folder.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap


def hypercube(d: int) -> torch.Tensor:
    """All ``2^d`` points of ``{-1, 1}^d``, point ``i`` having bit ``b`` of ``i`` in coordinate ``b``.

    Returns:
        ``(2^d, d)`` float32 tensor.
    """
    i = torch.arange(2**d)[:, None]
    bits = (i >> torch.arange(d)[None, :]) & 1
    return (2.0 * bits - 1.0).float()


def parity(x: torch.Tensor, k: int) -> torch.Tensor:
    """The parity (Walsh function) of the first ``k`` coordinates, ``prod_{b < k} x_b``; ``k = 0`` is the constant 1.

    On the uniform measure over the cube every parity has unit norm (``mean(f^2) = 1``).

    Args:
        x: ``(M, d)`` points of the cube.
        k: number of bits, ``0 <= k <= d``.

    Returns:
        ``(M,)`` tensor of ``+-1``.
    """
    return x[:, :k].prod(dim=1) if k > 0 else torch.ones(x.shape[0], dtype=x.dtype)


class NTKLinear(nn.Module):
    """A linear layer in the NTK parameterization: ``y = (sigma_w / sqrt(d_in)) W x + sigma_b b``.

    ``W`` (``(d_out, d_in)``) and ``b`` (``(d_out,)``) are drawn from ``N(0, 1)``; the scales sit in the
    forward pass, so gradient descent with one learning rate trains every layer at the rate its width
    calls for. The weight scale is applied to the input (``F.linear(x * s, W, sigma_b b)``), which keeps
    ``W`` a plain ``F.linear`` weight: ntkmonitor's ``method="structured"`` handles it layer-wise.
    """

    def __init__(self, d_in: int, d_out: int, *, sigma_w: float, sigma_b: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in))
        self.bias = nn.Parameter(torch.randn(d_out))
        self.scale = sigma_w / math.sqrt(d_in)
        self.sigma_b = sigma_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.scale, self.weight, self.bias * self.sigma_b)


ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {"relu": (nn.ReLU, math.sqrt(2.0)), "tanh": (nn.Tanh, 1.0)}
"""Activation name -> (module, weight scale ``sigma_w``): He scale for ReLU, 1 for tanh."""


def ntk_mlp(
    d_in: int, width: int, depth: int, activation: str = "relu", *, d_out: int = 1, sigma_b: float = 0.1, seed: int = 0
) -> nn.Sequential:
    """A fully connected network with ``depth`` hidden layers of ``width`` units, NTK-parameterized.

    Args:
        d_in: input dimension.
        width: hidden width.
        depth: number of hidden layers.
        activation: ``"relu"`` or ``"tanh"``.
        d_out: outputs.
        sigma_b: bias scale of every layer.
        seed: seed of the initialization.

    Returns:
        ``nn.Sequential`` mapping ``(n, d_in)`` to ``(n, d_out)``.
    """
    act, sigma_w = ACTIVATIONS[activation]
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [NTKLinear(d, width, sigma_w=sigma_w, sigma_b=sigma_b), act()]
        d = width
    layers.append(NTKLinear(d, d_out, sigma_w=1.0, sigma_b=sigma_b))
    return nn.Sequential(*layers)


def train_full_batch(
    model: nn.Module,
    x: torch.Tensor,
    train_idx: torch.Tensor,
    targets: torch.Tensor,
    lr: torch.Tensor,
    *,
    tol: float = 1e-5,
    max_steps: int = 20_000,
    log: Callable[[str], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Train ``B`` independent copies of ``model`` by full-batch gradient descent, each on its own problem.

    Copy ``b`` starts from ``model``'s parameters, sees the points ``x[train_idx[b]]`` with targets
    ``targets[b, train_idx[b]]``, and minimizes ``(1/2n) sum_i (f_hat(x_i) - y_i)^2`` with
    ``f_hat = f_theta - f_theta0`` (the output centered at initialization) by plain gradient descent at
    learning rate ``lr[b]``, until its train MSE ``mean_i (f_hat(x_i) - y_i)^2`` is below ``tol`` or
    ``max_steps``. Copies that converge leave the batch (their parameters stop changing); the others go on.
    The copies are stacked and run with ``torch.func.vmap``, one batched matrix product per layer.

    Args:
        model: the network at initialization (not modified); maps ``(n, d)`` to ``(n, 1)``.
        x: ``(M, d)`` the whole domain.
        train_idx: ``(B, n)`` long, the training points of each copy.
        targets: ``(B, M)`` the target of each copy on the whole domain.
        lr: ``(B,)`` learning rates.
        tol: train-MSE tolerance.
        max_steps: step cap.
        log: called with a progress line now and then.

    Returns:
        ``f_hat`` ``(B, M)`` (the trained, centered function on the whole domain), ``steps`` ``(B,)``,
        ``train_mse`` ``(B,)``, ``distance`` ``(B,)`` (``||theta - theta_0||`` travelled by each copy).
    """
    B, n = train_idx.shape
    names = [name for name, _ in model.named_parameters()]
    with torch.no_grad():
        f0 = model(x).reshape(-1)  # (M,)
    train_idx = train_idx.to(x.device)
    xs, ys, f0s = x[train_idx], targets.to(x.device).gather(1, train_idx), f0[train_idx]  # (B, n, d), (B, n), (B, n)
    params = {name: p.detach().expand(B, *p.shape).clone() for name, p in model.named_parameters()}

    def loss(p: dict, xb: torch.Tensor, yb: torch.Tensor, f0b: torch.Tensor) -> torch.Tensor:
        residual = functional_call(model, p, (xb,)).reshape(-1) - f0b - yb
        return 0.5 * residual.pow(2).mean()

    step_fn = vmap(grad_and_value(loss))
    steps = torch.full((B,), max_steps, dtype=torch.long)
    mse = torch.full((B,), math.nan)
    final = {name: torch.empty_like(v) for name, v in params.items()}
    active = torch.arange(B)
    lr_a = lr.to(x.device, torch.float32).clone()
    start, last_log = time.perf_counter(), time.perf_counter()
    for step in range(max_steps + 1):
        grads, value = step_fn(params, xs, ys, f0s)
        m = 2.0 * value.detach().cpu()  # train MSE at the current parameters, (b,)
        done = m < tol
        if step == max_steps:
            done = torch.ones_like(done)
        if bool(done.any()):
            on = done.to(x.device)
            for name in names:
                final[name][active[done].to(x.device)] = params[name][on]
            steps[active[done]] = step
            mse[active[done]] = m[done]
            keep = ~on
            active = active[~done]
            if active.numel() == 0:
                break
            params = {name: v[keep] for name, v in params.items()}
            grads = {name: v[keep] for name, v in grads.items()}
            xs, ys, f0s, lr_a = xs[keep], ys[keep], f0s[keep], lr_a[keep]
        with torch.no_grad():
            for name in names:
                params[name].sub_(lr_a.view(-1, *([1] * (params[name].ndim - 1))) * grads[name])
        if log is not None and time.perf_counter() - last_log > 10:
            last_log = time.perf_counter()
            log(
                f"    step {step}: {active.numel()}/{B} still training, worst train MSE {float(m.max()):.2e} "
                f"({time.perf_counter() - start:.0f} s)"
            )
    with torch.no_grad():
        f_hat = vmap(lambda p: functional_call(model, p, (x,)).reshape(-1))(final) - f0
        start_params = dict(model.named_parameters())
        distance = sum((final[name] - start_params[name]).pow(2).flatten(1).sum(1) for name in names).sqrt()
    return {"f_hat": f_hat, "steps": steps, "train_mse": mse, "distance": distance.cpu()}


def stderr(message: str) -> None:
    """Print a progress line to stderr."""
    print(message, file=sys.stderr, flush=True)


def gd_learning_rates(K: torch.Tensor, train_idx: torch.Tensor, factor: float) -> torch.Tensor:
    """Learning rates ``eta_b = factor * n / mu_max(K_DD)`` for the training sets ``train_idx`` (``(B, n)``).

    For the loss ``(1/2n) sum (f - y)^2`` the linearized network shrinks eigenmode ``j`` of ``K_DD`` by
    ``1 - eta mu_j / n`` per step: any ``factor < 2`` is stable for the top mode, and larger factors
    converge the slow modes faster.

    Returns:
        ``(B,)`` float32 learning rates.
    """
    mu_max = torch.stack([torch.linalg.eigvalsh(K[i][:, i])[-1] for i in train_idx.cpu()]).cpu()
    return (factor * train_idx.shape[1] / mu_max).float()


def add_training_arguments(parser: argparse.ArgumentParser, *, max_steps: int) -> None:
    """The options both eigenlearning examples share: gradient descent, device, seed, ``--quick``."""
    parser.add_argument("--lr-factor", type=float, default=1.8, help="eta = factor * n / mu_max(K_DD) (default: 1.8)")
    parser.add_argument("--tol", type=float, default=1e-5, help="train-MSE target (default: 1e-5)")
    parser.add_argument(
        "--max-steps", type=int, default=max_steps, help=f"gradient-descent step cap (default: {max_steps})"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialization and the training sets")
    parser.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (smoke test)")
