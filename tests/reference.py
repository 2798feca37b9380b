"""An independent reference for the empirical NTK: a float64 per-example ``torch.autograd.grad`` loop.

It shares no code with ``ntkmonitor``: a float64 deep copy of the model in eval mode, one backward
pass per example and output, gradients concatenated into a Jacobian ``(n, k, P)`` and contracted
with ``einsum``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _one(x, i):
    if isinstance(x, torch.Tensor):
        return x[i : i + 1]
    if isinstance(x, (tuple, list)):
        return type(x)(t[i : i + 1] for t in x)
    return {k: t[i : i + 1] for k, t in x.items()}


def _call(model, x):
    if isinstance(x, torch.Tensor):
        return model(x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(**x)


def _double(x):
    if isinstance(x, torch.Tensor):
        return x.double().cpu() if x.is_floating_point() else x.cpu()
    if isinstance(x, (tuple, list)):
        return type(x)(_double(t) for t in x)
    return {k: _double(t) for k, t in x.items()}


def _n(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    return next(iter(x.values() if isinstance(x, dict) else x)).shape[0]


def jacobian(model: nn.Module, x, params=None, output_fn=None) -> torch.Tensor:
    """Per-example Jacobian ``(n, k, P)`` in float64, by a Python loop over examples and outputs."""
    ref = copy.deepcopy(model).cpu().double().eval()
    named = dict(ref.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
        names = [n for n in named if any(n == s or n.startswith(s + ".") for s in params)]
    for p in ref.parameters():
        p.requires_grad_(False)
    for n in names:
        named[n].requires_grad_(True)
    chosen = [named[n] for n in names]
    x = _double(x)
    rows = []
    for i in range(_n(x)):
        out = _call(ref, _one(x, i))
        if output_fn is not None:
            out = output_fn(out)
        out = out.reshape(-1)
        per_output = []
        for a in range(out.shape[0]):
            grads = torch.autograd.grad(out[a], chosen, retain_graph=True, allow_unused=True)
            per_output.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, chosen, strict=True)
                    ]
                )
            )
        rows.append(torch.stack(per_output))
    return torch.stack(rows)


def kernel(model: nn.Module, x1, x2=None, mode: str = "trace", params=None, output_fn=None) -> torch.Tensor:
    """The float64 reference kernel in ``mode``."""
    j1 = jacobian(model, x1, params, output_fn)
    j2 = j1 if x2 is None else jacobian(model, x2, params, output_fn)
    full = torch.einsum("iap,jbp->ijab", j1, j2)
    if mode == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    return diag if mode == "diagonal" else diag.mean(-1)
