"""Attention written for the structured method: projections as linear maps of examples-first inputs.

``nn.MultiheadAttention`` calls :func:`torch.nn.functional.multi_head_attention_forward` on inputs laid out
sequence-first ``(L, N, E)`` (it transposes ``batch_first`` inputs), and projects them with ``F.linear``
calls whose first dimension is not the examples (the output projection even runs on ``(L N, E)``). The
structured method factors only linear maps of inputs whose first dimension is the examples, so it would
fall back to per-example Jacobians for every attention weight.

:func:`multi_head_attention` computes the same function with the examples first: ``q = x W_q^T + b_q``
(one packed projection for self-attention, where query, key and value are the same tensor), scaled dot
products with the masks of the original, and the output projection on ``(N, L, E)``. The projections go
through the caller's ``linear`` (the structured method's interceptor), so ``in_proj_weight``,
``in_proj_bias``, ``q/k/v_proj_weight`` and ``out_proj`` are factored like any linear layer (except the
``in_proj_bias`` of separate projection weights, ``kdim != embed_dim``: it is sliced in three, and falls back).

:func:`scaled_dot_product_attention` is the math of :func:`torch.nn.functional.scaled_dot_product_attention`
(``softmax(q k^T scale + mask) v``) in plain operations: the fused CPU kernels have no batching rule for
their backward, so the structured method's batched backward over the ``k`` outputs would run them once
per output.

Both return ``None`` for what they do not cover (dropout while training, ``bias_k``/``bias_v``,
``add_zero_attn``, static keys, unbatched inputs, nested tensors): the caller then runs the original
function and the parameters involved fall back to Jacobians, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.overrides import TorchFunctionMode

Linear = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

_MHA_ARGS = (
    "query",
    "key",
    "value",
    "embed_dim_to_check",
    "num_heads",
    "in_proj_weight",
    "in_proj_bias",
    "bias_k",
    "bias_v",
    "add_zero_attn",
    "dropout_p",
    "out_proj_weight",
    "out_proj_bias",
    "training",
    "key_padding_mask",
    "need_weights",
    "attn_mask",
    "use_separate_proj_weight",
    "q_proj_weight",
    "k_proj_weight",
    "v_proj_weight",
    "static_k",
    "static_v",
    "average_attn_weights",
    "is_causal",
)
_MHA_DEFAULTS = {
    "training": True,
    "key_padding_mask": None,
    "need_weights": True,
    "attn_mask": None,
    "use_separate_proj_weight": False,
    "q_proj_weight": None,
    "k_proj_weight": None,
    "v_proj_weight": None,
    "static_k": None,
    "static_v": None,
    "average_attn_weights": True,
    "is_causal": False,
}

_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}


def _bind(names: tuple[str, ...], defaults: dict, args: tuple, kwargs: dict) -> dict | None:
    if len(args) > len(names) or any(key not in names for key in kwargs):
        return None
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    for name in names:
        if name not in bound:
            if name not in defaults:
                return None
            bound[name] = defaults[name]
    return bound


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (``True``: not attended) as ``-inf``/0, a float mask as given."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, -math.inf)
    return mask.to(dtype)


def _plain(t: object) -> bool:
    return isinstance(t, torch.Tensor) and not t.is_nested


def scaled_dot_product_attention(*args: object, **kwargs: object) -> torch.Tensor | None:
    """``softmax(q k^T scale + mask) v`` in plain operations, or ``None`` for dropout or unusual inputs.

    Same arguments as :func:`torch.nn.functional.scaled_dot_product_attention`: ``query (..., L, E)``,
    ``key (..., S, E)``, ``value (..., S, Ev)``, a boolean ``attn_mask`` (``True``: attended) or a float one
    (added), ``is_causal`` (a lower-triangular mask), ``scale`` (default ``1 / sqrt(E)``), ``enable_gqa``
    (key and value heads repeated to the query's).

    Returns:
        ``(..., L, Ev)``.
    """
    b = _bind(_SDPA_ARGS, _SDPA_DEFAULTS, args, kwargs)
    if b is None or not all(_plain(b[name]) for name in ("query", "key", "value")) or b["dropout_p"]:
        return None
    q, k, v, mask = b["query"], b["key"], b["value"], b["attn_mask"]
    if q.ndim < 2 or (mask is not None and not _plain(mask)):
        return None
    if b["enable_gqa"] and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        repeat = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(repeat, dim=-3), v.repeat_interleave(repeat, dim=-3)
    scale = b["scale"] if b["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = (q * scale) @ k.transpose(-2, -1)
    if b["is_causal"]:
        L, S = q.shape[-2], k.shape[-2]
        causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask.to(scores.dtype)
    return _softmax_masked_rows_zero(scores) @ v


def _softmax_masked_rows_zero(scores: torch.Tensor) -> torch.Tensor:
    """``softmax(scores, -1)``, with rows whose scores are all ``-inf`` (every key masked) 0 instead of NaN, as
    torch's ``scaled_dot_product_attention`` returns them (a fully padded query of a left-padded batch)."""
    weights = torch.softmax(scores, dim=-1)
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    return torch.where(empty, torch.zeros((), dtype=weights.dtype, device=weights.device), weights)


def multi_head_attention(linear: Linear, *args: object, **kwargs: object) -> tuple | None:
    """:func:`torch.nn.functional.multi_head_attention_forward` with the examples first, or ``None``.

    Args:
        linear: ``(x, weight, bias) -> y``, called for every projection with ``x`` of shape ``(N, L, E)``.
        *args: the arguments of ``multi_head_attention_forward`` (inputs ``(L, N, E)``).
        **kwargs: its keyword arguments.

    Returns:
        ``(attn_output (L, N, E), attn_weights)`` as the original returns them (weights ``(N, L, S)``, or
        ``(N, H, L, S)`` without averaging, or ``None`` when ``need_weights=False``); ``None`` when the call
        uses what this does not cover (see the module docstring).
    """
    b = _bind(_MHA_ARGS, _MHA_DEFAULTS, args, kwargs)
    if b is None:
        return None
    query, key, value = b["query"], b["key"], b["value"]
    unsupported = (
        not all(_plain(t) and t.ndim == 3 for t in (query, key, value))
        or b["bias_k"] is not None
        or b["bias_v"] is not None
        or b["add_zero_attn"]
        or b["static_k"] is not None
        or b["static_v"] is not None
        or (b["training"] and b["dropout_p"] > 0)
    )
    if unsupported:
        return None
    L, N, E = query.shape
    S = key.shape[0]
    H = int(b["num_heads"])
    if E != b["embed_dim_to_check"] or E % H:
        return None
    hd = E // H
    x_q, x_k, x_v = (t.transpose(0, 1) for t in (query, key, value))  # (N, L, E), examples first
    if b["use_separate_proj_weight"]:
        bias = b["in_proj_bias"]
        b_q, b_k, b_v = (None, None, None) if bias is None else bias.chunk(3)
        q = linear(x_q, b["q_proj_weight"], b_q)
        k = linear(x_k, b["k_proj_weight"], b_k)
        v = linear(x_v, b["v_proj_weight"], b_v)
    elif query is key and key is value:
        q, k, v = linear(x_q, b["in_proj_weight"], b["in_proj_bias"]).split(E, dim=-1)
    else:  # the packed weight on each input, its own third kept: exact, and the weight stays one factor
        w, bias = b["in_proj_weight"], b["in_proj_bias"]
        q = linear(x_q, w, bias)[..., :E]
        k = linear(x_k, w, bias)[..., E : 2 * E]
        v = linear(x_v, w, bias)[..., 2 * E :]
    q, k, v = (t.reshape(N, -1, H, hd).transpose(1, 2) for t in (q, k, v))  # (N, H, len, hd)
    mask = _additive(b["attn_mask"], q.dtype)
    if b["is_causal"] and b["key_padding_mask"] is None and not b["need_weights"]:
        mask = torch.zeros(L, S, dtype=q.dtype, device=q.device).masked_fill_(
            ~torch.ones(L, S, dtype=torch.bool, device=q.device).tril(), -math.inf
        )  # the original then ignores attn_mask and attends causally
    if mask is not None:
        mask = mask.reshape(1, 1, L, S) if mask.ndim == 2 else mask.reshape(N, H, L, S)
    padding = _additive(b["key_padding_mask"], q.dtype)
    if padding is not None:
        padding = padding.reshape(N, 1, 1, S)
        mask = padding if mask is None else mask + padding
    scores = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    # (N, H, L, S); like the original: fully masked rows are 0 without weights (its SDPA path), NaN with them
    weights = torch.softmax(scores, dim=-1) if b["need_weights"] else _softmax_masked_rows_zero(scores)
    out = (weights @ v).transpose(1, 2).reshape(N, L, E)
    out = linear(out, b["out_proj_weight"], b["out_proj_bias"]).transpose(0, 1)  # (L, N, E)
    if not b["need_weights"]:
        return out, None
    return out, (weights.mean(dim=1) if b["average_attn_weights"] else weights)


class PlainAttention(TorchFunctionMode):
    """Runs ``F.scaled_dot_product_attention`` as :func:`scaled_dot_product_attention` (plain operations), so that
    ``vmap`` batches it: the fused CPU kernels have no batching rule, and ``vmap`` would call them once per example.

    Example:
        >>> q = torch.randn(2, 3, 4)
        >>> with PlainAttention():
        ...     out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        >>> out.shape
        torch.Size([2, 3, 4])
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, D105
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            out = scaled_dot_product_attention(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)
