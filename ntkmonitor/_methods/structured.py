"""``method="structured"``: layer-wise (structured) derivatives, never forming the full Jacobian.

For a linear map ``y = W a + b`` applied at positions ``s`` of an example (``a_s`` of size ``d_in``,
``y_s`` of size ``d_out``), the per-example Jacobian of output ``f_a`` is ``dW = sum_s g_as a_s^T``
with ``g_as = d f_a / d y_s``, so its weight block of the kernel is

.. math::

    K^W[i, j, a, b] = \\sum_{s, t} (a_{is} \\cdot a_{jt}) (g_{ias} \\cdot g_{jbt})

which costs ``n1 n2 S1 S2 (d_in + k d_out)`` instead of ``n1 n2 k d_in d_out`` (Novak et al. 2022,
"structured derivatives"). How the factors are obtained, for a block of ``c`` examples:

1. The model runs once on the block under a :class:`~torch.overrides.TorchFunctionMode` that
   intercepts ``F.linear``, ``F.conv1d``/``F.conv2d`` (grouped and depthwise too), ``F.embedding``,
   ``F.layer_norm``, ``F.rms_norm``, ``F.group_norm`` and eval-mode ``F.batch_norm`` calls whose weight
   or bias is a selected parameter. Each intercepted call records its input factor (``a``; unfolded
   patches for a convolution, token ids for an embedding, the normalized input ``x_hat`` for a
   normalization) and returns ``y + eps`` with ``eps`` a zero leaf tensor, so that
   ``d f / d eps = d f / d y``. Eval-mode batch norm is computed as its per-channel affine map, whose
   backward batches over the outputs without a loop. ``F.multi_head_attention_forward`` (what
   ``nn.MultiheadAttention`` calls, on sequence-first inputs) is replaced by the same function with the
   examples first (:mod:`.attention`), so its projections are intercepted linear maps, and
   ``F.scaled_dot_product_attention`` by its math in plain operations (the fused kernels' backward has no
   batching rule).
2. One backward pass, vectorized over the ``k`` one-hot output cotangents
   (``autograd.grad(..., is_grads_batched=True)``), gives ``g = d f_a / d y`` for every call.
   Examples are independent in eval mode, so the cotangent ``e_a`` on every example of the block
   yields each example's own ``g``.
3. Per parameter: weights of linear maps, convolutions (a linear map over patches, positions =
   output locations) and embeddings (a linear map of one-hot ids: ``a_is . a_jt = [id_is == id_jt]``)
   are kept **factored** ``(A (c, S, d_in), G (c, k, S, d_out))`` or made **explicit**
   ``J = sum_s G_s^T A_s`` of shape ``(c, k, d_out d_in)``, whichever the cost model prices lower
   (a grouped convolution is always explicit, each output channel with its group's patches);
   biases (``sum_s g_s``) and normalization affine parameters (``sum_s g_s * x_hat_s``) are explicit,
   except that a bias always called with the same factored weight is folded into it as a constant
   input feature (``a -> [a, 1]``), which adds its block at no extra product.
   A parameter used by several intercepted calls (tied weights, a layer called twice) gets the
   calls' positions concatenated (factored) or their Jacobians summed (explicit).
4. **Fallback.** Every selected parameter used in any other way (owned directly and used in
   ``forward``, a layer whose input does not have the examples along its first dimension, an
   attention call with ``bias_k``, ...) is found exactly: a probe pass on one and on
   two examples differentiates the output w.r.t. the parameters while the intercepted calls see
   detached copies, so any remaining gradient path means another use. Those parameters get
   per-example Jacobians by ``vmap(jacrev)`` (as ``method="jacobian"``), for their own entries only.

The kernel is the sum of the blocks of all parameters, contracted in blocks of examples that fit
the memory budget; for ``K(x1, x1)`` only pairs of blocks on and above the diagonal are computed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import jacrev, vmap
from torch.overrides import TorchFunctionMode

from .. import _inputs
from ..errors import KernelMemoryError
from ..options import KernelMode
from . import attention
from .jacobian import contract
from .request import BlockPairs, KernelRequest, chunks

_EFFICIENCY_PENALTY = 2.5
"""Weight of the structured method's FLOPs (many medium-sized products, a batched backward, Python overhead).

Calibrated on 2 CPU cores (1 thread) against ``"jacobian"`` with ``benchmarks/bench_entk.py``'s workloads,
together with ``"jacobian"``'s weight on convolutions: ``auto`` picks the faster method on the MLP
(structured, ~900x faster), the small ResNet and the MobileNet-style CNN (structured, 1.4x and 1.6x) and the
Transformer (jacobian, 1.4x; its attention's many small products and copies are not FLOPs)."""

_OVERHEAD = 3e7
"""Fixed FLOP-equivalents of the probe passes and the Python work per call: on tiny requests
(``n = 64``, the test Transformer) ``"jacobian"`` is faster and ``auto`` keeps it."""

_FALLBACK_WRITE_COST = 500.0
"""FLOP-equivalents per fallback Jacobian entry (same calibration as ``method="jacobian"``)."""

_SPECS: dict = {
    F.linear: ("linear", ("input", "weight", "bias"), (None, None)),
    F.conv1d: ("conv1d", ("input", "weight", "bias", "stride", "padding", "dilation", "groups"), (None, 1, 0, 1, 1)),
    F.conv2d: ("conv2d", ("input", "weight", "bias", "stride", "padding", "dilation", "groups"), (None, 1, 0, 1, 1)),
    F.embedding: (
        "embedding",
        ("input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse"),
        (None, None, 2.0, False, False),
    ),
    F.layer_norm: ("layer_norm", ("input", "normalized_shape", "weight", "bias", "eps"), (None, None, 1e-5)),
    F.group_norm: ("group_norm", ("input", "num_groups", "weight", "bias", "eps"), (None, None, 1e-5)),
    F.rms_norm: ("rms_norm", ("input", "normalized_shape", "weight", "eps"), (None, None)),
    F.batch_norm: (
        "batch_norm",
        ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
        (None, None, False, 0.1, 1e-5),
    ),
}
"""Intercepted functionals: ``func -> (kind, argument names, defaults of the trailing arguments)``."""

_FACTORED_KINDS = ("linear", "conv1d", "conv2d", "embedding")


@dataclass
class _Call:
    """One intercepted call: ``roles`` maps ``"weight"``/``"bias"`` to parameter names."""

    kind: str
    roles: dict[str, str]
    eps: torch.Tensor
    data: dict = field(default_factory=dict)
    signature: tuple = ()


def _pair(v: object) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _patches(kind: str, x: torch.Tensor, w: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
    """Input patches of a convolution, ``(c, L, C_in * prod(kernel))`` (the weight's flattened layout)."""
    if kind == "conv1d":
        x = x.unsqueeze(2)
        ksize = (1, w.shape[-1])
        stride = (1, _pair(stride)[0])
        dilation = (1, _pair(dilation)[0])
        padding = padding if isinstance(padding, str) else (0, _pair(padding)[0])
    else:
        ksize = tuple(w.shape[-2:])
        stride, dilation = _pair(stride), _pair(dilation)
        padding = padding if isinstance(padding, str) else _pair(padding)
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        tot = [dilation[d] * (ksize[d] - 1) for d in range(2)]
        x = F.pad(x, (tot[1] // 2, tot[1] - tot[1] // 2, tot[0] // 2, tot[0] - tot[0] // 2))
        padding = (0, 0)
    cols = F.unfold(x, ksize, dilation=dilation, padding=padding, stride=stride)  # (c, C k, L)
    return cols.transpose(1, 2)


def _batchable(kind: str, func, params: tuple, bound: dict) -> torch.Tensor:  # noqa: ANN001
    """The intercepted call's output, computed so that its input gradient batches over cotangents without a loop:
    eval-mode batch norm as its per-channel affine map (the batching rule of ``native_batch_norm_backward``
    loops); other kinds as ``func``. Parameters in ``bound`` are detached (their gradients come from the
    factors)."""
    x = bound["input"]
    if kind == "batch_norm" and x.requires_grad:
        scale = torch.rsqrt(bound["running_var"] + bound["eps"])
        if bound["weight"] is not None:
            scale = scale * bound["weight"]
        shift = -bound["running_mean"] * scale
        if bound["bias"] is not None:
            shift = shift + bound["bias"]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))
    return func(*[bound[p] for p in params])


class _Capture(TorchFunctionMode):
    """Intercepts supported functional calls on selected parameters; see the module docstring.

    Args:
        names: ``id(tensor) -> name`` of the primals passed to the model.
        c: examples in the batch (an intercepted input must have them along its first dimension).
        allowed: names that may be intercepted (``None``: all).
    """

    def __init__(self, names: dict[int, str], c: int, allowed: set[str] | None = None) -> None:
        super().__init__()
        self.names, self.c, self.allowed = names, c, allowed
        self.calls: list[_Call] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is F.multi_head_attention_forward:
            out = attention.multi_head_attention(self._linear, *args, **kwargs)
            if out is not None:
                return out
        elif func is F.scaled_dot_product_attention:
            out = attention.scaled_dot_product_attention(*args, **kwargs)
            if out is not None:
                return out
        spec = _SPECS.get(func)
        if spec is not None:
            out = self._intercept(func, spec, args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``F.linear`` as if the model had called it (intercepted when it uses a selected parameter)."""
        return self.__torch_function__(F.linear, (), (x, weight, bias))

    def _intercept(self, func, spec, args, kwargs):  # noqa: ANN001, ANN202
        kind, params, defaults = spec
        if len(args) > len(params) or any(k not in params for k in kwargs):
            return None
        required = len(params) - len(defaults)
        bound = dict(zip(params, args, strict=False))
        bound.update(kwargs)
        for i, p in enumerate(params):
            if p not in bound:
                if i < required:
                    return None
                bound[p] = defaults[i - required]
        roles = {}
        for role in ("weight", "bias"):
            t = bound.get(role)
            name = self.names.get(id(t)) if isinstance(t, torch.Tensor) else None
            if name is not None and (self.allowed is None or name in self.allowed):
                roles[role] = name
        x = bound["input"]
        expanded = kind == "embedding" and isinstance(x, torch.Tensor) and x.ndim >= 2 and x.shape[0] == 1 < self.c
        if expanded:
            # ids shared by every example (position ids (1, L)): looked up per example, so that each example's
            # gradient is its own; the analysis checks that the (c, L, d) result only meets its own example
            x = bound["input"] = x.expand(self.c, *x.shape[1:])
        if not roles or not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] != self.c:
            return None
        data: dict = {"expanded": True} if expanded else {}
        w = bound.get("weight")
        xd = x.detach()
        if kind == "linear":
            if x.ndim < 2 or w is None or w.ndim != 2 or not x.is_floating_point():
                return None
            if "weight" in roles:
                data["A"] = xd.reshape(self.c, -1, x.shape[-1])
        elif kind in ("conv1d", "conv2d"):
            if x.ndim != (3 if kind == "conv1d" else 4):
                return None
            data["groups"] = int(bound["groups"])
            if "weight" in roles:
                data["A"] = _patches(kind, xd, w, bound["stride"], bound["padding"], bound["dilation"])
        elif kind == "embedding":
            if "weight" not in roles or bound["max_norm"] is not None or bound["scale_grad_by_freq"]:
                return None
            pad = bound["padding_idx"]
            if pad is not None and pad < 0:
                pad = w.shape[0] + pad
            data["ids"], data["pad"], data["V"] = xd.reshape(self.c, -1), pad, w.shape[0]
        elif kind in ("layer_norm", "rms_norm"):
            ns = tuple(bound["normalized_shape"])
            if x.ndim <= len(ns):
                return None
            data["nd"] = len(ns)
            if "weight" in roles and kind == "layer_norm":
                data["xhat"] = F.layer_norm(xd, ns, None, None, bound["eps"])
            elif "weight" in roles:
                data["xhat"] = F.rms_norm(xd, ns, None, bound["eps"])
        elif kind == "group_norm":
            if x.ndim < 2:
                return None
            if "weight" in roles:
                data["xhat"] = F.group_norm(xd, bound["num_groups"], None, None, bound["eps"])
        else:  # batch_norm
            if bound["training"] or bound["running_mean"] is None or x.ndim < 2:
                return None
            if "weight" in roles:
                rm, rv = bound["running_mean"].detach(), bound["running_var"].detach()
                data["xhat"] = F.batch_norm(xd, rm, rv, None, None, False, 0.0, bound["eps"])
        for role in roles:
            bound[role] = bound[role].detach()
        for p, t in bound.items():  # e.g. buffers copied under inference_mode: not saveable for backward
            if isinstance(t, torch.Tensor) and t.is_inference():
                bound[p] = t.clone()
        y = _batchable(kind, func, params, bound)
        eps = torch.zeros_like(y, requires_grad=True)
        sig = (kind, tuple(sorted(roles.items())), tuple(x.shape[1:]), tuple(y.shape[1:]))
        self.calls.append(_Call(kind, roles, eps, data, sig))
        return y + eps


@dataclass
class _ParamInfo:
    """Per structured parameter: its kind, role and sizes per example (for the cost model)."""

    kind: str
    role: str
    numel: int
    S: int = 1  # positions per example, summed over calls
    d_in: int = 1  # A's feature size (V for an embedding)
    d_out: int = 1
    factored: bool = False
    groups: int = 1  # a grouped convolution (always explicit: one Gram per group never costs less)
    partner: str | None = None  # a bias: the weight of exactly the same calls (linear, conv)
    folded: bool = False  # a bias folded into its factored weight as a constant input feature


@dataclass
class _Analysis:
    structured: dict[str, _ParamInfo]
    fallback: list[str]
    counts: Counter
    activations: float


def _call_sizes(call: _Call, c: int) -> tuple[int, int, int]:
    """``(positions per example, d_in, d_out)`` of an intercepted call."""
    x_shape, y_shape = call.signature[2], call.signature[3]
    if call.kind == "linear":
        d_out = y_shape[-1]
        return max(1, math.prod(y_shape[:-1])), x_shape[-1], d_out
    if call.kind in ("conv1d", "conv2d"):  # d_in: the patch size of one group (the weight's second dimension)
        d_in = call.data["A"].shape[-1] // call.data["groups"] if "A" in call.data else 1
        return max(1, math.prod(y_shape[1:])), d_in, y_shape[0]
    if call.kind == "embedding":
        return max(1, math.prod(x_shape)), call.data["V"], y_shape[-1]
    return max(1, math.prod(y_shape)), 1, 1


def _analyze(request: KernelRequest) -> _Analysis:
    """Probe the model on one and on two examples: which parameters are structured (see module doc)."""
    fm = request.fmodel
    n = request.n1
    results = []
    with fm.measuring():
        for idx in ([0], [0, min(1, n - 1)]):
            index = torch.tensor(idx, device=fm.device)
            xb = _inputs.tree_map(lambda t, index=index: t[index], request.x1)
            leaves = {name: p.detach().requires_grad_() for name, p in fm.primals.items()}
            cap = _Capture({id(t): name for name, t in leaves.items()}, len(idx))
            with cap:
                out = fm(leaves, xb)
            used: set[str] = set()
            if out.requires_grad:
                used |= _mixed_examples(out, cap.calls)
                grads = torch.autograd.grad(out.sum(), list(leaves.values()), allow_unused=True)
                used |= {name for name, g in zip(leaves, grads, strict=True) if g is not None}
            results.append((cap.calls, used, out.shape[1]))
    (calls1, used1, k), (calls2, used2, _) = results
    sig1: dict[str, Counter] = {}
    sig2: dict[str, Counter] = {}
    for calls, sig in ((calls1, sig1), (calls2, sig2)):
        for call in calls:
            for role, name in call.roles.items():
                sig.setdefault(name, Counter())[(role, *call.signature)] += 1
    structured: dict[str, _ParamInfo] = {}
    counts: Counter = Counter()
    for name in fm.names:
        s = sig1.get(name)
        if name in used1 or name in used2 or not s or s != sig2.get(name):
            continue
        kinds = {(key[0], key[1]) for key in s}
        if len(kinds) != 1:
            continue
        role, kind = next(iter(kinds))
        info = _ParamInfo(kind, role, fm.primals[name].numel(), S=0)
        for call in calls1:
            if call.roles.get(role) == name:
                S, d_in, d_out = _call_sizes(call, 1)
                info.S += S
                info.d_in, info.d_out = d_in, d_out
                info.groups = call.data.get("groups", 1)
        structured[name] = info
        counts[name] = sum(s.values())
    fallback = [name for name in fm.names if name not in structured]
    for name, info in structured.items():  # biases that always come with the same structured weight
        if info.role != "bias" or info.kind not in ("linear", "conv1d", "conv2d"):
            continue
        weights = {call.roles.get("weight") for call in calls1 if call.roles.get("bias") == name}
        w = next(iter(weights))
        if len(weights) == 1 and w in structured and counts[w] == counts[name]:
            info.partner = w
    acts = sum(call.eps.numel() for call in calls1)
    return _Analysis(structured, fallback, counts, float(max(acts, k)))


def _mixed_examples(out: torch.Tensor, calls: list[_Call]) -> set[str]:
    """Parameters of expanded calls (shared ids looked up per example) whose rows reach another example's output:
    the model used the ``(c, ...)`` result in a way the ``(1, ...)`` one would not (``pos[0]``, a sum over the
    first dimension); they fall back to exact Jacobians."""
    expanded = [call for call in calls if call.data.get("expanded")]
    if not expanded or out.shape[0] < 2:
        return set()
    mixed: set[str] = set()
    for i in range(out.shape[0]):
        grads = torch.autograd.grad(out[i].sum(), [c.eps for c in expanded], retain_graph=True, allow_unused=True)
        for call, g in zip(expanded, grads, strict=True):
            others = torch.cat([g[:i], g[i + 1 :]]) if g is not None else None
            if others is not None and bool(others.ne(0).any()):
                mixed |= set(call.roles.values())
    return mixed


def _analysis(request: KernelRequest) -> _Analysis:
    """:func:`_analyze`, cached with the request's input layout (it depends on neither the budget, the chunk size
    nor the parameters' values: only on which calls the model makes)."""
    if "structured_analysis" not in request.cache:
        request.cache["structured_analysis"] = _analyze(request)
    return request.cache["structured_analysis"]


def _kk(request: KernelRequest) -> int:
    return request.k * request.k if request.mode is KernelMode.FULL else request.k


def _pair_costs(info: _ParamInfo, request: KernelRequest) -> tuple[float, float, float]:
    """``(factored per pair, explicit per pair, explicit build per example)`` FLOPs of a weight.

    Factored: ``2 S^2 (d_in + kk d_out) + S^2 kk`` (input Gram, output-gradient Gram, product;
    ``d_in = 1`` for an embedding, whose input Gram compares ids);
    explicit: ``2 kk d_in d_out`` per pair plus ``2 k S d_in d_out`` per example to build
    (an embedding scatter builds in ``k (S d + V d)``); ``kk`` is ``k^2`` in full mode, else ``k``.
    """
    k, kk, S = request.k, _kk(request), info.S
    d_in = 1 if info.kind == "embedding" else info.d_in  # an id comparison, not a dot product
    factored = 2.0 * S * S * (d_in + kk * info.d_out) + S * S * kk
    explicit = 2.0 * kk * info.d_in * info.d_out
    if info.kind == "embedding":
        build = k * (S + info.d_in) * info.d_out
    else:
        build = 2.0 * k * S * info.d_in * info.d_out
    return factored, explicit, build


def _decide(request: KernelRequest, an: _Analysis) -> None:
    """Pick factored vs explicit per weight (in place), by :func:`_pair_costs` over the whole kernel."""
    pairs = request.n1 * request.n2 * (0.5 if request.symmetric else 1.0)
    runs = request.n1 if request.symmetric else request.n1 + request.n2
    for info in an.structured.values():
        if info.kind in _FACTORED_KINDS and info.role == "weight":
            fac, exp, build = _pair_costs(info, request)
            info.factored = info.groups == 1 and pairs * fac < pairs * exp + runs * build
    for info in an.structured.values():
        info.folded = info.partner is not None and an.structured[info.partner].factored


def _per_example_bytes(request: KernelRequest, an: _Analysis) -> tuple[float, float, float]:
    """``(transient, kept, quadratic)`` scalars per example of a block of ``c`` examples.

    Building a block holds ``c (transient + kept)`` (the activations and their ``k`` batched gradients, the
    factors and explicit Jacobians); a built block keeps ``c kept``; contracting two blocks adds ``c^2 quadratic``
    (the factored products)."""
    k, kk = request.k, _kk(request)
    transient = an.activations * (k + 2)
    kept = 0.0
    quad = 0.0
    for info in an.structured.values():
        if info.folded:
            continue
        if info.factored:
            kept += info.S * (info.d_in + k * info.d_out)
            quad = max(quad, info.S * info.S * (kk + 1))
        else:
            kept += k * info.numel
            transient += k * info.numel  # the factors an explicit Jacobian is built from
    P_fb = sum(request.fmodel.primals[n].numel() for n in an.fallback)
    kept += k * P_fb
    transient += k * P_fb
    return transient, kept, quad + kk


def _plan(request: KernelRequest, an: _Analysis) -> tuple[int, bool]:
    """``(examples per block, keep every column block)``.

    Blocks: ``chunk_size``, or the largest ``c`` for which building one block while another is held, and
    contracting them, fit half the budget. Column blocks are built once and kept when all of them fit in the
    other half (else each row block rebuilds them)."""
    n = max(request.n1, request.n2)
    transient, kept, quad = _per_example_bytes(request, an)
    size = request.itemsize
    keep = request.n2 * kept * size <= request.budget / 2
    if request.chunk_size is not None:
        c = min(request.chunk_size, n)
        request.check_fits(
            size * (c * (transient + 2 * kept) + c * c * quad),
            f"the structured factors of two blocks of chunk_size={request.chunk_size} examples",
            "Pass a smaller chunk_size, or chunk_size=None to size blocks automatically.",
        )
        return c, keep
    half = request.budget / (2 * size)
    lin = transient + 2 * kept
    # c lin + c^2 quad <= half
    c = (-lin + math.sqrt(lin * lin + 4 * quad * half)) / (2 * quad)
    return max(1, min(n, int(c))), keep


@dataclass
class _Block:
    """Factors of a block of examples: explicit Jacobians ``(c, k, p)`` and factored weights."""

    explicit: dict[str, torch.Tensor]
    factored: dict[str, tuple[str, torch.Tensor, torch.Tensor]]  # name -> (kind, A or ids, G (c, k, S, d))


def _gradients(out: torch.Tensor, eps: list[torch.Tensor]) -> list[torch.Tensor]:
    """``d out[:, a] / d eps`` for every output ``a``, as ``(k, c, ...)`` per tensor of ``eps``."""
    c, k = out.shape
    if not out.requires_grad:
        return [torch.zeros(k, *e.shape, dtype=e.dtype, device=e.device) for e in eps]
    cot = torch.zeros(k, c, k, dtype=out.dtype, device=out.device)
    ar = torch.arange(k, device=out.device)
    cot[ar, :, ar] = 1
    try:
        grads = torch.autograd.grad(out, eps, cot, retain_graph=True, is_grads_batched=True, allow_unused=True)
    except RuntimeError:  # an op without a batching rule for its backward: one pass per output
        per_out = [torch.autograd.grad(out, eps, cot[a], retain_graph=True, allow_unused=True) for a in range(k)]
        grads = [None if per_out[0][i] is None else torch.stack([g[i] for g in per_out]) for i in range(len(eps))]
    return [
        torch.zeros(k, *e.shape, dtype=e.dtype, device=e.device) if g is None else g
        for g, e in zip(grads, eps, strict=True)
    ]


def _block(request: KernelRequest, an: _Analysis, x: _inputs.Batch, ex: slice) -> _Block:
    """Factors of examples ``ex`` of ``x``: one forward pass, one batched backward, fallback Jacobians."""
    fm = request.fmodel
    xb = _inputs.take(x, ex)
    c = ex.stop - ex.start
    explicit: dict[str, torch.Tensor] = {}
    factored: dict[str, tuple[str, torch.Tensor, torch.Tensor]] = {}
    if an.structured:
        primals = dict(fm.primals)
        cap = _Capture({id(t): name for name, t in primals.items()}, c, set(an.structured))
        with cap:
            out = fm(primals, xb)
        k = out.shape[1]
        seen = Counter(name for call in cap.calls for name in call.roles.values())
        if seen != an.counts:
            raise RuntimeError(
                "method='structured': the model's layer calls differ between blocks of examples "
                f"(expected {dict(an.counts)}, got {dict(seen)}); use method='jacobian'."
            )
        grads = _gradients(out, [call.eps for call in cap.calls])
        parts: dict[str, list] = {}
        for call, g in zip(cap.calls, grads, strict=True):
            g = g.movedim(0, 1)  # (c, k, *y)
            for role, name in call.roles.items():
                if an.structured[name].folded:
                    continue  # the weight's factor A gets a constant 1 feature instead
                item = _contribution(call, role, g, c, k)
                if role == "weight" and "bias" in call.roles and an.structured[call.roles["bias"]].folded:
                    A, G = item
                    item = (torch.cat([A, torch.ones_like(A[..., :1])], dim=-1), G)
                parts.setdefault(name, []).append(item)
        for name, items in parts.items():
            info = an.structured[name]
            if info.kind in _FACTORED_KINDS and info.role == "weight":
                A = items[0][0] if len(items) == 1 else torch.cat([a for a, _ in items], dim=1)
                G = items[0][1] if len(items) == 1 else torch.cat([gg for _, gg in items], dim=2)
                if info.factored:
                    factored[name] = (info.kind, A, G)
                else:
                    explicit[name] = _materialize(info, A, G)
            else:
                explicit[name] = sum(items[1:], items[0])
    if an.fallback:
        rest = {n: t for n, t in fm.primals.items() if n not in an.fallback}
        fb = {n: fm.primals[n] for n in an.fallback}

        def f(p: dict, xi: _inputs.Batch) -> torch.Tensor:
            return fm.single({**rest, **p}, xi)

        try:
            jac = vmap(jacrev(f), in_dims=(None, 0))(fb, xb)
        except RuntimeError:  # data-dependent control flow (.item(), Hugging Face masks): one example at a time
            rows = [jacrev(f)(fb, _inputs.tree_map(lambda t, i=i: t[i], xb)) for i in range(c)]
            jac = {n: torch.stack([r[n] for r in rows]) for n in fb}
        explicit.update({n: j.reshape(j.shape[0], j.shape[1], -1) for n, j in jac.items()})
    return _Block(explicit, factored)


def _contribution(call: _Call, role: str, g: torch.Tensor, c: int, k: int):  # noqa: ANN202
    """One call's part of a parameter's factors: ``(A, G)`` for factored weights, else ``(c, k, p)``."""
    kind = call.kind
    if kind == "linear":
        G = g.reshape(c, k, -1, g.shape[-1])  # (c, k, S, d_out)
        return (call.data["A"], G) if role == "weight" else G.sum(2)
    if kind in ("conv1d", "conv2d"):
        G = g.reshape(c, k, g.shape[2], -1).transpose(2, 3)  # (c, k, L, C_out)
        return (call.data["A"], G) if role == "weight" else G.sum(2)
    if kind == "embedding":
        ids = call.data["ids"]
        G = g.reshape(c, k, ids.shape[1], g.shape[-1])
        if call.data["pad"] is not None:
            G = G * (ids != call.data["pad"])[:, None, :, None].to(G.dtype)
        return ids, G
    # normalization: the weight's gradient sums g * x_hat over positions, the bias's sums g (one contraction, no
    # (c, k, ...) temporary)
    if kind in ("layer_norm", "rms_norm"):
        p = math.prod(g.shape[g.ndim - call.data["nd"] :])
        if role == "weight":
            return torch.einsum("iasp,isp->iap", g.reshape(c, k, -1, p), call.data["xhat"].reshape(c, -1, p))
        return g.reshape(c, k, -1, p).sum(2)
    if role == "weight":  # batch_norm, group_norm: (c, k, C)
        C = g.shape[2]
        return torch.einsum("iacs,ics->iac", g.reshape(c, k, C, -1), call.data["xhat"].reshape(c, C, -1))
    return g.reshape(c, k, g.shape[2], -1).sum(-1)


def _materialize(info: _ParamInfo, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Explicit per-example weight Jacobian ``(c, k, d_out * d_in)`` from its factors."""
    c, k, S, d = G.shape
    if info.kind == "embedding":
        J = torch.zeros(c, k, info.d_in, d, dtype=G.dtype, device=G.device)
        J.scatter_add_(2, A[:, None, :, None].expand(c, k, S, d), G)
        return J.reshape(c, k, -1)
    if info.groups > 1:  # output channel o = (group, o') sees only its group's input channels
        g = info.groups
        J = torch.einsum("iasgo,isgf->iagof", G.reshape(c, k, S, g, d // g), A.reshape(c, S, g, -1))
        return J.reshape(c, k, -1)
    return torch.einsum("iasd,isf->iadf", G, A).reshape(c, k, -1)


def _contract_factored(kind: str, f1: tuple, f2: tuple, mode: KernelMode) -> torch.Tensor:
    """One weight's block from factors: trace ``(c1, c2)`` (sum over outputs), diagonal ``(c1, c2, k)``,
    full ``(c1, c2, k, k)``; ``sum_{s,t} AA[i,s,j,t] GG[i,a,s,j,b,t]``."""
    A1, G1 = f1
    A2, G2 = f2
    c1, k, S1, d = G1.shape
    c2, _, S2, _ = G2.shape
    if kind == "embedding":
        AA = (A1.reshape(c1, S1, 1, 1) == A2.reshape(1, 1, c2, S2)).to(G1.dtype)
    else:
        AA = (A1.reshape(c1 * S1, -1) @ A2.reshape(c2 * S2, -1).T).reshape(c1, S1, c2, S2)
    if mode is KernelMode.TRACE:
        GG = G1.transpose(1, 2).reshape(c1 * S1, k * d) @ G2.transpose(1, 2).reshape(c2 * S2, k * d).T
        if S1 == S2 == 1:
            return GG.mul_(AA.reshape(c1, c2))
        return (GG.reshape(c1, S1, c2, S2) * AA).sum((1, 3))
    if mode is KernelMode.DIAGONAL:
        GG = torch.bmm(G1.transpose(0, 1).reshape(k, c1 * S1, d), G2.transpose(0, 1).reshape(k, c2 * S2, d).mT)
        return (GG.reshape(k, c1, S1, c2, S2) * AA).sum((2, 4)).permute(1, 2, 0)
    GG = (G1.reshape(c1 * k * S1, d) @ G2.reshape(c2 * k * S2, d).T).reshape(c1, k, S1, c2, k, S2)
    return (GG * AA[:, None, :, :, None, :]).sum((2, 5)).permute(0, 2, 1, 3)


def _contract_blocks(b1: _Block, b2: _Block, request: KernelRequest) -> torch.Tensor:
    mode = request.mode
    total = contract(b1.explicit, b2.explicit, mode) if b1.explicit else None
    for name, (kind, A1, G1) in b1.factored.items():
        _, A2, G2 = b2.factored[name]
        blk = _contract_factored(kind, (A1, G1), (A2, G2), mode)
        total = blk if total is None else total.add_(blk)
    return total


class StructuredMethod:
    """Structured (layer-wise) derivatives; see :class:`ntkmonitor.NTKMethod` for when to pick it."""

    def cost(self, request: KernelRequest) -> float:
        """Estimated FLOP-equivalents; ``math.inf`` when no selected parameter is structured.

        With ``m`` examples run (``n1`` when symmetric, else ``n1 + n2``), ``[FP]`` the forward FLOPs
        per example, pairs ``= n1 n2`` (half when symmetric) and ``kk = k`` (``k^2`` in full mode)::

            3e7 + 2.5 * ( m (1 + 2k) [FP]                                  # forward + batched backward
                    + sum_weights min(pairs * factored, pairs * explicit + m * build)   # _pair_costs
                    + sum_explicit_params 2 pairs kk p )              # biases, norms
            + fallback: (3 [FP] + 500 P_fb) k m + 2 pairs kk P_fb    # vmap(jacrev) on P_fb params

        where the constant ``3e7`` (:data:`_OVERHEAD`) prices the probe (two tiny forward passes) and
        Python work. ``math.inf`` also when one example's factors (and fallback Jacobian) do not fit
        half the memory budget (there is no chunking over outputs in this method; ``"jacobian"`` and
        ``"ntk_vp"`` have it).
        """
        try:
            an = _analysis(request)
        except Exception:  # noqa: BLE001 - an unsupported model: let another method run
            return math.inf
        if not an.structured:
            return math.inf
        _decide(request, an)
        transient, kept, quad = _per_example_bytes(request, an)
        if (transient + 2 * kept + quad) * request.itemsize > request.budget / 2:
            return math.inf  # not even one example per block fits: no output chunking here
        k, kk = request.k, _kk(request)
        fp = max(request.profile.flops_per_example, 2.0 * request.fmodel.num_params)
        pairs = request.n1 * request.n2 * (0.5 if request.symmetric else 1.0)
        try:
            c, keep = _plan(request, an)
        except KernelMemoryError:  # the user's chunk_size does not fit: another method may
            return math.inf
        rows = math.ceil(request.n1 / c)
        if request.symmetric:  # examples run: each once when the column blocks are kept, else once per row block
            m = request.n1 if keep else request.n1 * (rows + 1) / 2
        else:
            m = request.n1 + request.n2 * (1 if keep else rows)
        work = m * (1 + 2 * k) * fp
        for info in an.structured.values():
            if info.kind in _FACTORED_KINDS and info.role == "weight":
                fac, exp, build = _pair_costs(info, request)
                work += pairs * exp + m * build if info.groups > 1 else min(pairs * fac, pairs * exp + m * build)
            elif info.partner is None or not an.structured[info.partner].factored:
                work += 2 * pairs * kk * info.numel
        P_fb = sum(request.fmodel.primals[n].numel() for n in an.fallback)
        fallback = 0.0
        if P_fb:
            fallback = (3 * fp + _FALLBACK_WRITE_COST * P_fb) * k * m + 2 * pairs * kk * P_fb
        return _OVERHEAD + _EFFICIENCY_PENALTY * work + fallback

    def compute(self, request: KernelRequest) -> torch.Tensor:
        """The kernel, summed over outputs in trace mode (blocks on and above the diagonal when symmetric)."""
        an = _analysis(request)
        _decide(request, an)
        c, cache_cols = _plan(request, an)
        rows = chunks(request.n1, c)
        cols = None if request.symmetric else chunks(request.n2, c)

        def build(x: _inputs.Batch, ex: slice) -> _Block:
            return _block(request, an, x, ex)

        result = request.new_result()
        for ex1, ex2, b1, b2, _ in BlockPairs(request, rows, cols, build, cache_columns=cache_cols):
            result[ex1, ex2] = _contract_blocks(b1, b2, request)
        return result
