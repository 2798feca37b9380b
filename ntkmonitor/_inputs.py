"""Batches of model inputs: a tensor, a tuple of tensors, or a dict of tensors.

A *batch* is what the model is called with, with examples along the first dimension of every
tensor. The calling convention is:

- ``Tensor`` ``x``: ``model(x)``;
- ``tuple``/``list`` ``(a, b)``: ``model(a, b)``;
- ``dict`` ``{"ids": a, "mask": b}``: ``model(ids=a, mask=b)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .errors import InputError

Batch = Any  # Tensor | tuple[Tensor, ...] | dict[str, Tensor]


def _leaves(x: Batch) -> list[tuple[str, torch.Tensor]]:
    if isinstance(x, torch.Tensor):
        return [("", x)]
    if isinstance(x, (tuple, list)):
        return [(f"[{i}]", t) for i, t in enumerate(x)]
    if isinstance(x, Mapping):
        return [(f"[{k!r}]", t) for k, t in x.items()]
    raise AssertionError("unreachable")  # validated before


def named_leaves(x: Batch) -> list[tuple[str, torch.Tensor]]:
    """``[(key, tensor)]`` of a validated batch: ``""`` for a tensor, ``"[0]"`` / ``"['ids']"`` for its parts."""
    return _leaves(x)


def validate_batch(x: Batch, name: str) -> int:
    """Check that ``x`` is a non-empty batch and return its number of examples.

    Args:
        x: a tensor ``(n, ...)``, a tuple/list of such tensors, or a dict of them.
        name: the argument's name, for error messages.

    Returns:
        ``n``, the shared size of the first dimension.
    """
    if not isinstance(x, (torch.Tensor, tuple, list, Mapping)):
        raise InputError(
            f"Expected {name} to be a tensor, a tuple of tensors or a dict of tensors, "
            f"but got {type(x).__name__}. Convert it with torch.as_tensor(...)."
        )
    if isinstance(x, (tuple, list, Mapping)) and len(x) == 0:
        raise InputError(f"Expected {name} to hold at least one tensor, but got an empty {type(x).__name__}.")
    sizes = {}
    for key, t in _leaves(x):
        if not isinstance(t, torch.Tensor):
            raise InputError(
                f"Expected every element of {name} to be a tensor, but {name}{key} is "
                f"{type(t).__name__}. Convert it with torch.as_tensor(...)."
            )
        if t.ndim == 0:
            raise InputError(
                f"Expected {name}{key} to have a batch dimension (examples first), but got a 0-d "
                "tensor. Use x.unsqueeze(0) for a single example."
            )
        if t.is_complex():
            raise InputError(f"Expected real-valued {name}{key}, but got dtype {t.dtype}.")
        sizes[key] = t.shape[0]
    if len(set(sizes.values())) != 1:
        raise InputError(
            f"Expected every tensor in {name} to have the same number of examples (first dimension), but got {sizes}."
        )
    n = next(iter(sizes.values()))
    if n == 0:
        raise InputError(f"Expected {name} to hold at least one example, but got an empty batch (first dimension 0).")
    return n


def check_compatible(x1: Batch, x2: Batch) -> None:
    """Check that ``x2`` has the structure, per-example shapes and dtypes of ``x1``."""
    if type(x1) is not type(x2) and not (isinstance(x1, (tuple, list)) and isinstance(x2, (tuple, list))):
        raise InputError(
            f"Expected x2 to be of the same kind as x1 ({type(x1).__name__}), but got {type(x2).__name__}."
        )
    if isinstance(x1, Mapping) and set(x1) != set(x2):
        raise InputError(f"Expected x2 to have the keys of x1 {sorted(x1)}, but got {sorted(x2)}.")
    if isinstance(x1, (tuple, list)) and len(x1) != len(x2):
        raise InputError(f"Expected x2 to have {len(x1)} elements like x1, but got {len(x2)}.")
    l2 = dict(_leaves(x2))
    for key, a in _leaves(x1):
        b = l2[key]
        if a.shape[1:] != b.shape[1:]:
            raise InputError(
                f"Expected x2{key} to have per-example shape {tuple(a.shape[1:])} like x1{key}, but got "
                f"{tuple(b.shape[1:])}. Pass inputs with the same feature shape (pad sequences to one length)."
            )
        if a.dtype.is_floating_point != b.dtype.is_floating_point:
            raise InputError(f"Expected x2{key} to have a dtype like x1{key} ({a.dtype}), but got {b.dtype}.")


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], x: Batch) -> Batch:
    """Apply ``fn`` to every tensor of the batch, keeping its structure."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (tuple, list)):
        return type(x)(fn(t) for t in x)
    return {k: fn(t) for k, t in x.items()}


def take(x: Batch, index: slice) -> Batch:
    """Examples ``index`` of the batch."""
    return tree_map(lambda t: t[index], x)


def describe(x: Batch) -> str:
    """A short description of the batch's shapes and dtypes for error messages."""
    parts = [f"{key or 'x'}: {tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" for key, t in _leaves(x)]
    return ", ".join(parts)


def as_call(x: Batch) -> tuple[tuple, dict | None]:
    """``(args, kwargs)`` to call a model with the batch, by the convention of this module."""
    if isinstance(x, torch.Tensor):
        return (x,), None
    if isinstance(x, (tuple, list)):
        return tuple(x), None
    return (), dict(x)


def prepare(x: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """Move to ``device``, cast floating tensors to ``dtype``, and detach.

    Inference tensors (created under ``torch.inference_mode()``) are cloned into normal tensors
    so that autograd transforms can use them. The caller's tensors are never modified.
    """

    def _prep(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        t = t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device)
        if t.is_inference():
            t = t.clone()
        return t

    return tree_map(_prep, x)
