"""A side-effect-free functional view of an ``nn.Module`` for kernel computations.

:class:`FunctionalModel` splits the model's state into the differentiated parameters (the
*primals*, selected by ``params=``) and constants (every other parameter, detached, and *copies*
of the buffers), and evaluates ``torch.func.functional_call`` on them. The context manager
:meth:`FunctionalModel.measuring` puts every submodule in eval mode (dropout off, BatchNorm on its
running statistics), disables the fused Transformer fast path, forks the global RNG, leaves
inference mode and enables grad; on exit everything is restored exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from . import _inputs
from .errors import InputError, ModelCallError, ModelOutputError, ParameterSelectionError

OutputFn = Callable[[Any], torch.Tensor]


def _format_names(names: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def select_parameters(model: nn.Module, params: Sequence[str] | str | None) -> list[str]:
    """Names of the parameters the kernel is taken with respect to.

    Args:
        model: the module.
        params: ``None`` for every parameter with ``requires_grad``; otherwise parameter names
            and/or module-name prefixes (``"encoder"`` selects ``"encoder.0.weight"`` but not
            ``"encoder2.weight"``). Explicitly named parameters are used even if frozen.

    Returns:
        Selected names, in the model's parameter order.
    """
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
        if not names:
            raise ParameterSelectionError(
                "Expected the model to have at least one parameter with requires_grad=True, but got none "
                f"(all {len(named)} parameters are frozen). Unfreeze some, or name them with params=[...]."
            )
        return names
    if isinstance(params, str):
        params = [params]
    if not isinstance(params, (list, tuple)) or not all(isinstance(p, str) for p in params):
        raise InputError(
            f"Expected params to be None or a list of parameter names / module prefixes, but got {params!r}."
        )
    if len(params) == 0:
        raise ParameterSelectionError("Expected params to name at least one parameter, but got an empty list.")
    selected: set[str] = set()
    unknown = []
    for spec in params:
        hits = [n for n in named if n == spec or n.startswith(spec + ".") or spec == ""]
        if not hits:
            unknown.append(spec)
        selected.update(hits)
    if unknown:
        raise ParameterSelectionError(
            f"Expected params to name parameters or module prefixes of the model, but got unknown "
            f"{_format_names(unknown)}. Valid parameter names: {_format_names(list(named))}."
        )
    return [n for n in named if n in selected]


def compute_dtype(model: nn.Module, names: Sequence[str], dtype: torch.dtype | None) -> torch.dtype:
    """The dtype the kernel is computed in: ``dtype`` or the parameters' dtype, at least float32."""
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise InputError(f"Expected dtype to be a floating torch.dtype such as torch.float64, but got {dtype!r}.")
        return dtype
    named = dict(model.named_parameters())
    result = torch.float32
    for n in names:
        p = named[n]
        if p.is_complex():
            raise InputError(f"Expected real parameters, but {n!r} has dtype {p.dtype}.")
        result = torch.promote_types(result, p.dtype)
    return result


@dataclass(frozen=True)
class ModelProfile:
    """What one forward pass on one example tells about the model.

    Attributes:
        num_outputs: ``k``, the flattened output size per example.
        num_params: ``P``, the number of selected (differentiated) scalars.
        flops_per_example: forward FLOPs for one example (0 when unknown).
        activations_per_example: scalars produced by the forward pass of one example.
        conv_flops_per_example: the part of ``flops_per_example`` in convolutions.
    """

    num_outputs: int
    num_params: int
    flops_per_example: float
    activations_per_example: float
    conv_flops_per_example: float = 0.0


class _ActivationCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the elements of every non-view tensor an op produces (a proxy for activation memory), and refuses,
    before it runs, any op that would write into one of the ``protected`` storages (the user's parameters)."""

    def __init__(self, protected: dict[int, str] | None = None) -> None:
        super().__init__()
        self.count = 0
        self.protected = protected or {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if self.protected and func._schema.is_mutable:
            written = [
                value
                for arg, value in zip(func._schema.arguments, args, strict=False)
                if arg.alias_info is not None and arg.alias_info.is_write and isinstance(value, torch.Tensor)
            ]
            for value in written:
                name = self.protected.get(_storage(value))
                if name is not None:
                    raise _InPlaceWriteError(name, str(func))
        out = func(*args, **(kwargs or {}))
        if getattr(func, "is_view", False):
            return out  # views allocate nothing
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.count += t.numel()
        return out


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
        return None


class _InPlaceWriteError(ModelCallError):
    def __init__(self, name: str, op: str) -> None:
        super().__init__(
            f"Expected the model's forward pass to leave its parameters alone, but it writes in place to {name!r} "
            f"({op}); it was stopped before the write, so the weights are unchanged. ntkmonitor evaluates the model "
            "on its parameters without copying them: make the update out of place, or run it only in training "
            "(if self.training: ...)."
        )


def unwrap_compiled(model: nn.Module, params: Sequence[str] | str | None = None) -> tuple[nn.Module, Any]:
    """The module behind ``torch.compile(module)`` (its ``_orig_mod``), and ``params`` without that prefix.

    Measurements run the original module eagerly: calling the compiled wrapper with other parameters would make
    Dynamo retrace (and recompile) the graph that training uses, which changes training's numerics.
    """
    inner = getattr(model, "_orig_mod", None)
    if not (isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule"):
        return model, params
    prefix = "_orig_mod."

    def strip(name: str) -> str:
        return name[len(prefix) :] if name.startswith(prefix) else name

    if isinstance(params, str):
        params = strip(params)
    elif params is not None:
        params = [strip(p) if isinstance(p, str) else p for p in params]
    return inner, params


class _ReverseModeEmbedding(torch.overrides.TorchFunctionMode):
    """See :meth:`FunctionalModel.reverse_mode_tangents`."""

    _NAMES = ("input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is not torch.nn.functional.embedding:
            return out
        bound = {**dict(zip(self._NAMES, args, strict=False)), **kwargs}
        if bound.get("scale_grad_by_freq"):
            raise ModelCallError(
                "Expected forward-mode derivatives to match the backward pass, but an embedding uses "
                "scale_grad_by_freq=True, whose backward scales by token counts that forward mode cannot know. "
                "Use method='jacobian' or 'structured' (method='auto' does)."
            )
        padding = bound.get("padding_idx")
        if padding is None:
            return out
        weight = bound["weight"]
        padding = padding + weight.shape[0] if padding < 0 else padding
        mask = (bound["input"] == padding).unsqueeze(-1)
        return torch.where(mask, out.detach(), out)


class FunctionalModel:
    """The model as a pure function of its selected parameters.

    Args:
        model: the user's module; never modified (see :meth:`measuring`).
        params: parameter selection, see :func:`select_parameters`.
        dtype: computation dtype, see :func:`compute_dtype`.
        output_fn: maps the model's raw output to a tensor ``(batch, ...)``.

    Attributes:
        names: selected parameter names.
        primals: ``{name: tensor}`` of the selected parameters (detached; cast to ``dtype``).
        constants: the other parameters (detached) and copies of the buffers.
        device, dtype: where and in what the kernel is computed.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Sequence[str] | str | None = None,
        dtype: torch.dtype | None = None,
        output_fn: OutputFn | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"Expected model to be a torch.nn.Module, but got {type(model).__name__}.")
        if output_fn is not None and not callable(output_fn):
            raise InputError(f"Expected output_fn to be callable, but got {type(output_fn).__name__}.")
        model, params = unwrap_compiled(model, params)
        self.model = model
        self.output_fn = output_fn
        self.names = select_parameters(model, params)
        self.dtype = compute_dtype(model, self.names, dtype)
        named = dict(model.named_parameters())
        self.device = named[self.names[0]].device
        if self.device.type == "meta":
            raise InputError(
                "Expected the model's parameters to hold values, but they are on the 'meta' device (shapes only), "
                "so there is no kernel to compute. Materialize them first: model.to_empty(device='cpu') and then "
                "load_state_dict(...), or build the model outside torch.device('meta')."
            )
        selected = set(self.names)

        def _const(t: torch.Tensor) -> torch.Tensor:
            t = t.detach()
            if t.is_floating_point() and t.dtype != self.dtype:
                t = t.to(self.dtype)
            return t

        # parameters the forward pass itself writes to (nn.Embedding / nn.EmbeddingBag with max_norm renormalize
        # their looked-up rows in place) are copied, found by identity so that a tied name is found too
        renormalized = {
            id(m.weight)
            for m in model.modules()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.max_norm is not None
        }
        written = {n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in renormalized}
        self.primals = {n: _const(named[n]).clone() if n in written else _const(named[n]) for n in self.names}
        self.constants = {
            n: _const(p).clone() if n in written else _const(p) for n, p in named.items() if n not in selected
        }
        # Buffers are copied: a forward pass that writes to a buffer writes to the copy.
        self.constants.update({n: _const(b).clone() for n, b in model.named_buffers()})
        self.num_params = sum(p.numel() for p in self.primals.values())
        self._protected = {
            ptr: n
            for n, p in model.named_parameters()
            if n not in written and (ptr := _storage(p.detach())) is not None and p.numel()
        }

    # ------------------------------------------------------------------ evaluation
    def __call__(self, primals: dict[str, torch.Tensor], x: _inputs.Batch) -> torch.Tensor:
        """Evaluate the model: ``primals`` and a batch ``x`` -> outputs ``(batch, k)``."""
        args, kwargs = _inputs.as_call(x)
        out = functional_call(self.model, (primals, self.constants), args, kwargs)
        return self._to_matrix(out)

    def single(self, primals: dict[str, torch.Tensor], x: _inputs.Batch) -> torch.Tensor:
        """Evaluate on one example without batch dimension (for ``vmap``): -> ``(k,)``."""
        return self(primals, _inputs.tree_map(lambda t: t.unsqueeze(0), x))[0]

    def _to_matrix(self, out: Any) -> torch.Tensor:
        if self.output_fn is not None:
            out = self.output_fn(out)
            if not isinstance(out, torch.Tensor):
                raise ModelOutputError(f"Expected output_fn to return a tensor, but it returned {type(out).__name__}.")
        elif not isinstance(out, torch.Tensor):
            raise ModelOutputError(
                f"Expected the model to return a tensor, but it returned {type(out).__name__}. Pass "
                "output_fn to select the output, e.g. output_fn=lambda out: out[0] for a tuple or "
                "output_fn=lambda out: out['logits'] for a dict."
            )
        if not out.is_floating_point():
            raise ModelOutputError(
                f"Expected the model's output to be a floating-point tensor, but got dtype {out.dtype}. "
                "The NTK needs differentiable outputs: return logits/scores, not labels or argmax indices."
            )
        if out.ndim == 0:
            raise ModelOutputError(
                "Expected the model's output to have a batch dimension, but got a 0-d tensor. The model "
                "must map a batch (n, ...) to outputs (n,) or (n, k); do not reduce over the batch."
            )
        return out.reshape(out.shape[0], -1)

    # ------------------------------------------------------------------ checks
    def profile(self, x: _inputs.Batch, n: int, name: str = "x1") -> ModelProfile:
        """Run the model once on one example (and check the batch) to learn ``k`` and the costs."""
        from torch.utils.flop_counter import FlopCounterMode

        one = _inputs.take(x, slice(0, 1))
        counter = _ActivationCounter(self._protected)
        flops = conv_flops = 0.0
        try:
            with torch.no_grad():
                try:
                    with FlopCounterMode(display=False) as fc, counter:
                        out1 = self(self.primals, one)
                    flops = float(fc.get_total_flops())
                    counts = fc.get_flop_counts().get("Global", {})
                    conv_flops = float(sum(v for op, v in counts.items() if "convolution" in str(op)))
                except (ModelOutputError, _InPlaceWriteError):
                    raise
                except Exception:  # noqa: BLE001 - profiling is best effort; the real call follows
                    out1 = self._guarded_call(one)
                    counter.count = 0
                outn = self(self.primals, _inputs.take(x, slice(0, min(n, 2))))
        except (ModelOutputError, _InPlaceWriteError):
            raise
        except Exception as err:
            raise ModelCallError(
                f"Calling the model on {name} ({_inputs.describe(x)}) failed: {type(err).__name__}: {err}. "
                f"Check that {name} has the feature shape and dtype the model expects."
            ) from err
        if outn.shape[0] != min(n, 2):
            raise ModelOutputError(
                f"Expected the model's output to have the batch size {min(n, 2)} as first dimension, but got "
                f"shape {tuple(outn.shape)}. The model must map a batch (n, ...) to outputs (n, ...)."
            )
        if n >= 2:
            if outn.shape[1:] != out1.shape[1:]:
                raise ModelOutputError(
                    f"Expected the model's output per example to have one shape whatever the batch size, but got "
                    f"{tuple(out1.shape[1:])} for one example and {tuple(outn.shape[1:])} for two. A batch-dependent "
                    "shape (padding to the longest example in the batch, .squeeze() of the batch dimension) has no "
                    "per-example NTK: pad to a fixed length, or squeeze only non-batch dimensions."
                )
            self._check_independent(out1, outn, name)
        return ModelProfile(
            num_outputs=out1.shape[1],
            num_params=self.num_params,
            flops_per_example=flops,
            activations_per_example=float(counter.count),
            conv_flops_per_example=conv_flops,
        )

    def _guarded_call(self, x: _inputs.Batch) -> torch.Tensor:
        """The model on ``x`` with in-place writes to its parameters refused (without the FLOP counter)."""
        try:
            with _ActivationCounter(self._protected):
                return self(self.primals, x)
        except (ModelOutputError, _InPlaceWriteError):
            raise
        except Exception:  # noqa: BLE001 - the dispatch mode itself may not support the model: run it plainly
            return self(self.primals, x)

    def _check_independent(self, out1: torch.Tensor, out2: torch.Tensor, name: str) -> None:
        """``f(x[:2])[0] == f(x[:1])[0]``: the first dimension indexes independent examples."""
        scale = max(float(out1.abs().max()), float(out2.abs().max())) if out1.numel() else 0.0
        gap = float((out2[:1] - out1).abs().max()) if out1.numel() else 0.0
        # round-off of batched kernels (cuBLAS/cuDNN may pick other algorithms for 1 and 2 examples, TF32 on
        # Ampere+) stays far below this; mixing examples changes outputs by order one
        tol = (5e-3 if self.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-7) * max(scale, 1e-6)
        if gap > tol:
            raise ModelOutputError(
                f"Expected the examples of {name} to be independent (the output for {name}[0] must not depend on "
                f"{name}[1]), but the model's output for the first example changes by {gap:.3g} (of {scale:.3g}) "
                "when a second example joins the batch. The first dimension must index examples: a model that "
                "mixes them (nn.MultiheadAttention or nn.Transformer with batch_first=False called on "
                "(batch, seq, d), batch statistics, x - x.mean(0)) has no per-example NTK. Wrap the model so "
                "that the batch dimension comes first and is never reduced, or select per-example outputs with "
                "output_fn."
            )

    def _check_untouched(self, versions: dict[str, int]) -> None:
        """Raise if the forward pass wrote in place to one of the model's own parameters or buffers."""
        state = dict([*self.model.named_parameters(), *self.model.named_buffers()])
        changed = [n for n, v in versions.items() if n in state and state[n]._version != v]
        if changed:
            raise ModelCallError(
                f"Expected the model's forward pass to leave its own tensors alone, but it wrote in place to "
                f"{_format_names(changed)} while the kernel was measured. ntkmonitor evaluates the model on "
                "its parameters without copying them; make the in-place update out of place (or run it in a "
                "training-only branch), or report the layer so that its tensors are copied."
            )

    # ------------------------------------------------------------------ context
    @contextlib.contextmanager
    def reverse_mode_tangents(self) -> Iterator[None]:
        """Forward-mode derivatives (``jvp``) that agree with reverse mode where PyTorch's backward deviates.

        ``F.embedding(..., padding_idx=p)`` (and so ``nn.Embedding``) reads row ``p`` in its forward pass, but its
        backward gives that row no gradient (training never updates it through the embedding). A ``jvp`` would
        differentiate the read, so a kernel built from a ``vjp`` and a ``jvp`` mixes two Jacobians, which is wrong
        when the weight is shared (a tied output layer). Inside this context every embedding lookup, by module or
        by function, positionally or by keyword, gives the padding positions no tangent; values are unchanged.
        ``scale_grad_by_freq=True`` scales the backward by token counts that forward mode cannot know: it raises
        :class:`~ntkmonitor.ModelCallError` (``method="auto"`` then uses a reverse-mode method).
        """
        with _ReverseModeEmbedding():
            yield

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Eval-mode semantics, grad enabled, outside inference mode, RNG forked; all restored.

        Attention runs on the composite "math" kernel of ``scaled_dot_product_attention`` (the fused
        CPU/CUDA kernels support neither forward-mode AD nor ``vmap``), the fused Transformer fast path is
        off, and ``torch.compile``'d submodules run eagerly (``torch.compiler.set_stance("force_eager")``).
        """
        from torch.nn.attention import SDPBackend, sdpa_kernel

        model = self.model
        flags = [(m, m.training) for m in model.modules()]
        versions = {n: t._version for n, t in [*model.named_parameters(), *model.named_buffers()]}
        fastpath = torch.backends.mha.get_fastpath_enabled()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.random.fork_rng(devices=devices))
                stack.enter_context(torch.inference_mode(False))
                stack.enter_context(torch.enable_grad())
                stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
                # compiled submodules run eagerly: tracing them with other parameters would recompile (and
                # change) the graphs that training uses
                if hasattr(torch.compiler, "set_stance"):  # torch >= 2.6; older releases measure _orig_mod only
                    stack.enter_context(torch.compiler.set_stance("force_eager"))
                model.eval()
                torch.backends.mha.set_fastpath_enabled(False)
                yield
            self._check_untouched(versions)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
            for m, flag in flags:
                m.training = flag
