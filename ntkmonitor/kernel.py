"""The empirical Neural Tangent Kernel of any ``nn.Module``: :func:`empirical_ntk`.

The empirical NTK of a model ``f(x; theta)`` with ``k`` outputs at its current parameters is

.. math::

    K(x, x')_{ab} = \\left\\langle \\frac{\\partial f_a(x)}{\\partial \\theta},
                    \\frac{\\partial f_b(x')}{\\partial \\theta} \\right\\rangle

(Jacot, Gabriel, Hongler 2018, https://arxiv.org/abs/1806.07572). This module computes it with
``torch.func`` transforms, without side effects on the model, in memory-bounded blocks.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from . import _inputs
from ._functional import FunctionalModel, ModelProfile, OutputFn, unwrap_compiled
from ._memory import memory_budget
from ._methods.jacobian import JacobianMethod
from ._methods.ntk_vp import NTKVPMethod
from ._methods.request import KernelMethodImpl, KernelRequest
from ._methods.structured import StructuredMethod
from .errors import InputError, KernelMemoryError, NTKMonitorError, NTKMonitorWarning
from .options import KernelMode, KernelOptions, NTKMethod, parse_enum

__all__ = [
    "empirical_ntk",
    "empirical_ntk_fn",
    "NTKFunction",
    "KernelMode",
    "NTKMethod",
    "resolve_method",
    "method_report",
    "MethodChoice",
    "split_rows",
]

_METHODS: dict[NTKMethod, KernelMethodImpl] = {
    NTKMethod.JACOBIAN: JacobianMethod(),
    NTKMethod.NTK_VP: NTKVPMethod(),
    NTKMethod.STRUCTURED: StructuredMethod(),
    NTKMethod.JACOBIAN_LOOP: JacobianMethod(vectorized=False),
}
"""The registered methods. A new method adds itself here (and to :class:`NTKMethod`)."""


@dataclasses.dataclass(frozen=True)
class MethodChoice:
    """What ``method="auto"`` chose for one model and kind of request, and why.

    Attributes:
        method: the method in use.
        skipped: ``{method: reason}`` for the methods that failed on this model: their two-example trial, or a
            whole request after passing it.
    """

    method: NTKMethod
    skipped: dict[str, str]


def method_report(model: nn.Module) -> list[MethodChoice]:
    """The choices ``method="auto"`` has made for ``model`` so far (one per kind of request), with reasons.

    Args:
        model: a module passed to :func:`empirical_ntk`.

    Returns:
        The :class:`MethodChoice` of each kind of request (mode, parameters, dtype, input shapes), oldest first.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> _ = empirical_ntk(model, torch.randn(4, 3))
        >>> (choice,) = method_report(model)
        >>> choice.method in NTKMethod, choice.skipped  # nothing failed on this MLP
        (True, {})
    """
    model, _ = unwrap_compiled(model)
    try:
        states = _STATES.get(model, {})
    except TypeError:  # a module that cannot be weakly referenced
        return []
    return [MethodChoice(method=st.last, skipped=dict(st.failed)) for st in states.values() if st.last is not None]


class NTKFunction:
    """The empirical NTK of one model, configured once and called many times: ``fn(x1, x2=None)``.

    Built by :func:`empirical_ntk_fn`. It keeps the parameter selection and options, and per input layout
    (per-example shapes and dtypes) the model's profile (outputs, FLOPs, the batch-independence check) and what
    the methods learned; each call re-reads the parameter and buffer tensors, so it follows in-place updates
    (an optimizer step) and ``load_state_dict``. ``method="auto"`` remembers per model which methods proved
    themselves (:func:`method_report`).

    Args:
        model: any ``nn.Module`` (see :func:`empirical_ntk`); ``torch.compile``'d modules are measured eagerly.
        options: the checked :class:`~ntkmonitor.KernelOptions`.

    Attributes:
        model: the measured module (the original module behind ``torch.compile``).
        options: the options.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        >>> ntk = empirical_ntk_fn(model, mode="trace")
        >>> x = torch.randn(5, 3)
        >>> torch.equal(ntk(x), empirical_ntk(model, x))
        True
    """

    def __init__(self, model: nn.Module, options: KernelOptions) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"Expected model to be a torch.nn.Module, but got {type(model).__name__}.")
        if not isinstance(options, KernelOptions):
            raise InputError(f"Expected options to be a KernelOptions, but got {type(options).__name__}.")
        self.options = options
        self.model, self._params = unwrap_compiled(model, options.params)
        self.functional_model()  # the parameter selection, dtype and device are checked now
        self._profiles: dict[tuple, ModelProfile] = {}
        self._caches: dict[tuple, dict] = {}

    def functional_model(self) -> FunctionalModel:
        """The model as a pure function of its selected parameters, with their current values."""
        o = self.options
        return FunctionalModel(self.model, self._params, o.dtype, o.output_fn)

    def __call__(self, x1: _inputs.Batch, x2: _inputs.Batch | None = None) -> torch.Tensor:
        """The kernel between ``x1`` ``(n1, ...)`` and ``x2`` ``(n2, ...)`` (``None``: ``K(x1, x1)``).

        Returns:
            ``(n1, n2)``, ``(n1, n2, k)`` or ``(n1, n2, k, k)`` by mode (see :func:`empirical_ntk`).
        """
        fmodel = self.functional_model()
        world = _world() if self.options.distributed else None
        if world is None:
            result, k, symmetric = self._raw(fmodel, x1, x2, None)
        else:
            result, k, symmetric = self._gathered(fmodel, x1, x2, world)
        if self.options.mode is KernelMode.TRACE:
            result /= k  # methods sum over the outputs; the trace kernel is their mean
        if symmetric:
            result = _mirror_upper(result, self.options.mode)
        return result

    def _raw(
        self, fmodel: FunctionalModel, x1: _inputs.Batch, x2: _inputs.Batch | None, world: tuple[int, int] | None
    ) -> tuple[torch.Tensor, int, bool]:
        """``(kernel summed over outputs, k, symmetric)``: the whole kernel, or this rank's share of it in a tensor of
        the whole kernel's shape (zeros elsewhere)."""
        mode = self.options.mode
        n1 = _inputs.validate_batch(x1, "x1")
        symmetric = x2 is None or x2 is x1
        n2 = n1
        if not symmetric:
            n2 = _inputs.validate_batch(x2, "x2")
            _inputs.check_compatible(x1, x2)
        with fmodel.measuring():
            x1p = _inputs.prepare(x1, fmodel.device, fmodel.dtype)
            x2p = None if symmetric else _inputs.prepare(x2, fmodel.device, fmodel.dtype)
            # what the profile and a method's analysis depend on: the input layout, the parameters (names and
            # shapes: a replaced head, an unfrozen layer, an inserted one all change it), dtype and device
            params = tuple((name, tuple(t.shape)) for name, t in fmodel.primals.items())
            key = (*_layout(x1p), min(n1, 2), params, fmodel.dtype, fmodel.device)
            if key not in self._profiles:
                self._profiles[key] = fmodel.profile(x1p, n1, "x1")
            profile, cache = self._profiles[key], self._caches.setdefault(key, {})
            full = KernelRequest(fmodel, x1p, x2p, n1, n2, mode, profile, self.options.chunk_size, 0)
            shape = full.result_shape()
            full.check_fits(
                2 * torch.Size(shape).numel() * full.itemsize,
                f"the {mode.value} kernel of shape {shape} (and one working copy)",
                "Use fewer examples, mode='trace' (k^2 times smaller than 'full'), or compute it in blocks of x1.",
            )
            if world is None:
                return self._local(fmodel, x1p, x2p, profile, cache), profile.num_outputs, symmetric
            rank, size = world
            start, stop = split_rows(n1, size, symmetric=symmetric)[rank]
            result = torch.zeros(shape, dtype=fmodel.dtype, device=fmodel.device)
            if stop > start:
                rows = _inputs.take(x1p, slice(start, stop))
                if not symmetric:
                    result[start:stop] = self._local(fmodel, rows, x2p, profile, cache)
                else:  # a band of the upper triangle: its diagonal block (upper half) and the rectangle right of it
                    result[start:stop, start:stop] = self._local(fmodel, rows, None, profile, cache)
                    if stop < n1:
                        rest = _inputs.take(x1p, slice(stop, n1))
                        result[start:stop, stop:] = self._local(fmodel, rows, rest, profile, cache)
            return result, profile.num_outputs, symmetric

    def _local(
        self, fmodel: FunctionalModel, xa: _inputs.Batch, xb: _inputs.Batch | None, profile: ModelProfile, cache: dict
    ) -> torch.Tensor:
        """The kernel between ``xa`` and ``xb`` (``None``: ``K(xa, xa)``, upper blocks) in this process, summed
        over outputs in trace mode."""
        na = _inputs.validate_batch(xa, "x1")
        nb = na if xb is None else _inputs.validate_batch(xb, "x2")
        request = KernelRequest(
            fmodel=fmodel,
            x1=xa,
            x2=xb,
            n1=na,
            n2=nb,
            mode=self.options.mode,
            profile=profile,
            chunk_size=self.options.chunk_size,
            budget=memory_budget(fmodel.device),
            cache=cache,
        )
        return _compute(request, self.options.method)

    def _gathered(
        self, fmodel: FunctionalModel, x1: _inputs.Batch, x2: _inputs.Batch | None, world: tuple[int, int]
    ) -> tuple[torch.Tensor, int, bool]:
        """Every rank computes its share (:meth:`_raw`); one sum over the ranks assembles the kernel on each. A rank
        that fails anywhere (inputs, profile, kernel) is known to all before the sum, so none waits forever."""
        import torch.distributed as dist

        failure: BaseException | None = None
        result, k, symmetric = torch.zeros(0, device=fmodel.device), 0, False
        try:
            result, k, symmetric = self._raw(fmodel, x1, x2, world)
        except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks have been told
            failure = err
        ok = torch.tensor([0.0 if failure is not None else 1.0], device=fmodel.device)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if failure is not None:
            raise failure
        if float(ok) < 1.0:
            raise NTKMonitorError(
                "Expected every rank to compute its share of the kernel, but another rank failed (its own error "
                "says why); no rank returns a partial kernel."
            )
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
        return result, k, symmetric


def _world() -> tuple[int, int] | None:
    """``(rank, world size)`` of the default process group, or ``None`` outside ``torch.distributed`` (or alone)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return dist.get_rank(), dist.get_world_size()


def split_rows(n: int, parts: int, *, symmetric: bool) -> list[tuple[int, int]]:
    """Row ranges ``[(start, stop)]`` that share the kernel's work evenly among ``parts`` ranks.

    For ``K(x1, x2)`` every row costs the same, so the ranges hold ``n / parts`` rows each. For ``K(x1, x1)`` rank
    ``r`` computes the band of the upper triangle in rows ``start:stop`` (the upper half of its diagonal block and
    the rectangle right of it), so a row ``i`` costs ``n - i`` and the ranges are cut where the cumulative work
    crosses ``r / parts`` of the total.

    Args:
        n: rows.
        parts: ranks.
        symmetric: whether the kernel is ``K(x1, x1)``.

    Returns:
        ``parts`` contiguous ranges covering ``range(n)`` (some empty when ``n < parts``).

    Example:
        >>> split_rows(10, 2, symmetric=False), split_rows(10, 2, symmetric=True)
        ([(0, 5), (5, 10)], [(0, 4), (4, 10)])
    """
    if symmetric:
        work = [n - i for i in range(n)]
        total, cuts, running, r = sum(work), [0], 0, 1
        for i, w in enumerate(work):
            running += w
            while r < parts and running >= total * r / parts:
                cuts.append(i + 1)
                r += 1
        cuts += [n] * (parts + 1 - len(cuts))
    else:
        cuts = [round(n * r / parts) for r in range(parts + 1)]
    return [(cuts[r], cuts[r + 1]) for r in range(parts)]


def _layout(x: _inputs.Batch) -> tuple:
    leaves: list[tuple[Any, ...]] = []
    _inputs.tree_map(lambda t: leaves.append((tuple(t.shape[1:]), t.dtype)) or t, x)
    return tuple(leaves)


def empirical_ntk_fn(
    model: nn.Module,
    *,
    mode: KernelMode | str = "trace",
    method: NTKMethod | str = "auto",
    params: Sequence[str] | str | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    output_fn: OutputFn | None = None,
    distributed: bool = False,
) -> NTKFunction:
    """Configure the empirical NTK of ``model`` once; call the result many times: ``fn(x1, x2=None)``.

    The arguments are those of :func:`empirical_ntk`, checked here (a typo raises now, not at the first call). The
    returned :class:`NTKFunction` keeps the parameter selection, the model's profile and what ``auto`` learned,
    per input layout, and re-reads only the parameter tensors at each call, so repeated measurements of a model
    in training skip the planning (neural-tangents' ``empirical_ntk_fn`` is the model for this interface).

    Args:
        model: any ``nn.Module``.
        mode: ``"trace"``, ``"diagonal"`` or ``"full"`` (:class:`KernelMode`).
        method: ``"auto"``, ``"jacobian"``, ``"ntk_vp"``, ``"structured"`` or ``"jacobian_loop"`` (:class:`NTKMethod`).
        params: parameter names / module prefixes, or ``None`` for every trainable parameter.
        chunk_size: examples per block, or ``None`` for the memory budget.
        dtype: computation dtype, or ``None``.
        output_fn: selects the output tensor from a tuple/dict output.
        distributed: share the work among the ranks of ``torch.distributed`` (see :func:`empirical_ntk`).

    Returns:
        An :class:`NTKFunction`: ``fn(x1)`` ``(n1, n1, ...)``, ``fn(x1, x2)`` ``(n1, n2, ...)``.

    Raises:
        InputError: bad options. ParameterSelectionError: unknown parameter names.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        >>> ntk = empirical_ntk_fn(model, mode="full")
        >>> ntk(torch.randn(4, 3), torch.randn(2, 3)).shape
        torch.Size([4, 2, 2, 2])
    """
    options = KernelOptions(
        method=method,
        mode=mode,
        params=params,
        chunk_size=chunk_size,
        dtype=dtype,
        output_fn=output_fn,
        distributed=distributed,
    )
    return NTKFunction(model, options)


def empirical_ntk(
    model: nn.Module,
    x1: _inputs.Batch,
    x2: _inputs.Batch | None = None,
    *,
    mode: KernelMode | str = "trace",
    method: NTKMethod | str = "auto",
    params: Sequence[str] | str | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    output_fn: OutputFn | None = None,
    distributed: bool = False,
) -> torch.Tensor:
    """Compute the empirical NTK of ``model`` between two batches of inputs.

    .. math::

        K[i, j, a, b] = \\sum_p \\frac{\\partial f_a(x_{1,i})}{\\partial \\theta_p}
                              \\frac{\\partial f_b(x_{2,j})}{\\partial \\theta_p}

    The model is evaluated with eval-mode semantics (dropout off, BatchNorm on its running
    statistics) through ``torch.func.functional_call`` on detached parameters and copies of the
    buffers. **No side effects**: afterwards the parameters, buffers, every submodule's ``.training``,
    every ``.grad`` and the global (CPU and CUDA) RNG state are exactly as before. It works under
    ``torch.no_grad()`` and ``torch.inference_mode()`` (it leaves inference mode internally).

    **Non-finite values** stay where they arise, with every method: an example whose output or derivative is
    ``nan``/``inf`` (a ``nan`` in its input, say) gives non-finite entries in its own row and column only, and
    every other entry is what it would be without that example.

    Args:
        model: any ``nn.Module`` mapping a batch to outputs ``(n,)``, ``(n, k)`` or ``(n, ...)``
            (flattened to ``k`` outputs).
        x1: inputs, ``(n1, ...)``; or a tuple of such tensors (``model(*x1)``) or a dict
            (``model(**x1)``). Integer tensors (token ids) are passed through unchanged.
        x2: inputs ``(n2, ...)`` of the same structure and per-example shapes as ``x1``, or
            ``None`` for ``K(x1, x1)``, which computes only the upper blocks and returns an exactly
            symmetric kernel.
        mode: ``"trace"`` -> ``(n1, n2)``, the mean over outputs of ``K[i, j, a, a]``;
            ``"diagonal"`` -> ``(n1, n2, k)``; ``"full"`` -> ``(n1, n2, k, k)``. See :class:`KernelMode`.
        method: ``"auto"``, ``"jacobian"``, ``"ntk_vp"``, ``"structured"`` or ``"jacobian_loop"``; see
            :class:`NTKMethod` for when each wins and how ``"auto"`` falls back.
        params: ``None`` for every parameter with ``requires_grad``; or a list of parameter names
            and/or module prefixes, e.g. ``["encoder", "head.weight"]`` (explicitly named frozen
            parameters are included).
        chunk_size: examples per block (of ``x1``/``x2`` for ``"jacobian"``/``"structured"``, of ``x2`` for
            ``"ntk_vp"``). ``None`` sizes blocks to stay within the memory budget
            (1 GiB or a quarter of free memory; env ``NTKMONITOR_MEMORY_BUDGET``).
        dtype: computation and result dtype, e.g. ``torch.float64``. ``None``: the parameters'
            dtype, at least ``float32`` (half-precision models are computed in float32).
        output_fn: selects the output tensor from a model returning a tuple, dict or dataclass,
            e.g. ``lambda out: out["logits"]``.
        distributed: when ``torch.distributed`` is initialized with more than one rank, every rank computes its
            share of the rows (for ``K(x1, x1)`` a band of the upper triangle, balanced by work; see
            :func:`split_rows`) and one ``all_reduce`` assembles the whole kernel on every rank. Every rank of the
            default process group must call it with the same inputs. A rank that fails makes every rank raise
            (none waits forever). Outside ``torch.distributed`` it computes alone.

    Returns:
        The kernel on the model's device, in the computation dtype: ``(n1, n2)``, ``(n1, n2, k)``
        or ``(n1, n2, k, k)`` by ``mode``.

    Raises:
        InputError: bad arguments (wrong types, shapes, empty batch, unknown mode or method).
        ParameterSelectionError: ``params`` names unknown parameters (the message lists valid names),
            or no parameter is trainable.
        ModelOutputError: the output is not a floating tensor with the batch first (pass ``output_fn``).
        ModelCallError: the model failed on ``x1`` (e.g. wrong feature size).
        KernelMemoryError: the result or a block of ``chunk_size`` would not fit in memory.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        >>> x = torch.randn(5, 3)
        >>> empirical_ntk(model, x).shape
        torch.Size([5, 5])
        >>> empirical_ntk(model, x, x[:2], mode="full").shape
        torch.Size([5, 2, 2, 2])
    """
    ntk = empirical_ntk_fn(
        model,
        mode=mode,
        method=method,
        params=params,
        chunk_size=chunk_size,
        dtype=dtype,
        output_fn=output_fn,
        distributed=distributed,
    )
    return ntk(x1, x2)


def resolve_method(request: KernelRequest, method: NTKMethod | str = NTKMethod.AUTO) -> NTKMethod:
    """The method ``"auto"`` picks for ``request``: the lowest estimated cost.

    Args:
        request: the validated kernel request.
        method: a concrete method is returned unchanged.

    Returns:
        A concrete :class:`NTKMethod`.

    Example:
        >>> resolve_method(request, "jacobian")  # doctest: +SKIP
        <NTKMethod.JACOBIAN: 'jacobian'>
    """
    method = parse_enum(NTKMethod, method, "method")
    if method is not NTKMethod.AUTO:
        return method
    return _choose(request)


def _signature(request: KernelRequest) -> tuple:
    """What a method's ability to run depends on: mode, parameters, dtype, output selection, input layout."""
    fm = request.fmodel
    return (request.mode, tuple(fm.names), fm.dtype, id(fm.output_fn), _layout(request.x1), fm.device, tuple(_METHODS))


def _reason(err: BaseException, limit: int = 300) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"


def _compute(request: KernelRequest, method: NTKMethod) -> torch.Tensor:
    """The kernel by ``method``. Under ``auto``, a method that passed the two-example trial but fails on this
    request is excluded and the next one runs (never a method excluded before); the failure is remembered only
    once a method has succeeded, so one bad request (an out-of-range token id, say) changes nothing. A concrete
    method's failure inside ``torch.func`` becomes an error that names the way around."""
    chosen = resolve_method(request, method)
    excluded: dict[str, str] = {}
    first: BaseException | None = None
    while True:
        try:
            result = _METHODS[chosen].compute(request)
        except NTKMonitorError:
            raise
        except Exception as err:
            if method is not NTKMethod.AUTO:
                raise NTKMonitorError(
                    f"Expected method={chosen.value!r} to compute the kernel of {type(request.fmodel.model).__name__}, "
                    f"but torch.func failed: {_reason(err)}. method='auto' proves each method on two examples and "
                    "falls back; 'jacobian_loop' runs models vmap cannot batch (attention masks with data-dependent "
                    "control flow, RNNs); 'ntk_vp' avoids vmap over examples."
                ) from err
            first = first or err
            excluded[chosen.value] = _reason(err)
            try:
                chosen = _choose(request, excluded, remember=False)
            except NTKMonitorError:
                reasons = "; ".join(f"{name}: {why}" for name, why in excluded.items())
                raise NTKMonitorError(
                    "Expected some kernel method to compute this request, but every method that runs two of its "
                    f"examples failed on all of them ({reasons}). The first failure usually points at the input "
                    "(e.g. a token id out of range, a shape that differs); the method choice is unchanged."
                ) from first
            continue
        if excluded:  # a method succeeded after others failed on this request: remember those failures
            _state(request).failed.update(excluded)
            _report(request, chosen)
        return result


@dataclasses.dataclass
class _AutoState:
    """What ``auto`` learned about one model and kind of request: methods proven to run it, methods that failed."""

    proven: set[str] = dataclasses.field(default_factory=set)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    warned: set[str] = dataclasses.field(default_factory=set)
    last: NTKMethod | None = None


_STATES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, _AutoState]] = weakref.WeakKeyDictionary()


def _state(request: KernelRequest) -> _AutoState:
    try:
        per_model = _STATES.setdefault(request.fmodel.model, {})
    except TypeError:  # not weakly referenceable: learn nothing across calls
        per_model = {}
    return per_model.setdefault(_signature(request), _AutoState())


def _choose(request: KernelRequest, excluded: dict[str, str] | None = None, *, remember: bool = True) -> NTKMethod:
    """``auto``: the cheapest method (by the cost model, for this request's size) that runs the model.

    A method runs a two-example trial the first time it would be chosen for a model and kind of request; its
    success or failure (with the reason) is remembered, so later calls only rank the costs. ``excluded`` (method
    -> reason) are skipped for this call only.
    """
    fm = request.fmodel
    state = _state(request)
    costs = {m: impl.cost(request) for m, impl in _METHODS.items()}
    skip = {**state.failed, **(excluded or {})}
    trial, memory_error, chosen = None, None, None
    reference: torch.Tensor | None = None
    for m in sorted(costs, key=costs.__getitem__):
        if m.value in skip or costs[m] == float("inf"):
            continue
        if m.value not in state.proven:
            if trial is None:
                two = min(request.n1, 2)
                trial = dataclasses.replace(
                    request, x1=_inputs.take(request.x1, slice(0, two)), x2=None, n1=two, n2=two
                )
            try:
                with fm.measuring():
                    kernel = _METHODS[m].compute(trial)
            except KernelMemoryError as err:  # not a property of the model: not remembered
                memory_error = err
                continue
            except Exception as err:  # noqa: BLE001 - the reason is kept and reported
                state.failed[m.value] = _reason(err)
                continue
            if m is not NTKMethod.JACOBIAN_LOOP:
                if reference is None:
                    reference = _reference(trial)
                defect = _trial_defect(kernel, reference, fm.dtype)
                if defect:
                    state.failed[m.value] = defect
                    continue
            state.proven.add(m.value)
        chosen = m
        break
    if chosen is not None:
        if remember:  # otherwise the caller records the choice once the whole request has succeeded
            _report(request, chosen)
        return chosen
    if memory_error is not None:
        raise memory_error
    reasons = "; ".join(f"{name}: {why}" for name, why in {**state.failed, **(excluded or {})}.items())
    raise NTKMonitorError(
        f"Expected some kernel method to run this model, but every one failed on two examples ({reasons}). Check "
        "that the model runs on a batch of these inputs outside inference mode, and report the model if it does: "
        "the reasons above say what torch.func could not do."
    )


_TRIAL_TOLERANCE = {torch.float64: 1e-7}
"""Largest relative gap (to the reference's largest entry) a method may show on its trial; 1e-3 otherwise."""

_REFERENCE_PASSES = 256
"""The trial is checked against per-example reverse mode when that takes at most this many backward passes."""


def _reference(trial: KernelRequest) -> torch.Tensor:
    """The trial kernel by per-example reverse mode (``jacobian_loop``), the derivatives training uses.

    Every method must reproduce it: one whose derivatives deviate (forward mode through an op with a custom
    backward, say) is caught before it is ever chosen. Empty when it would take more than
    :data:`_REFERENCE_PASSES` backward passes (``2 k``: a language model's vocabulary) or fails.
    """
    if trial.n1 * trial.k > _REFERENCE_PASSES:
        return torch.empty(0)
    try:
        with trial.fmodel.measuring():
            return _METHODS[NTKMethod.JACOBIAN_LOOP].compute(trial)
    except Exception:  # noqa: BLE001 - no reference: the trial checks what it can
        return torch.empty(0)


def _trial_defect(kernel: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> str:
    """Why a method's trial kernel is not to be trusted (``""`` when it is), judged on the upper blocks.

    Non-finite entries are the data's (``nan`` in an input) when the reference has them at the same places;
    without a reference they disqualify the method. Finite entries must match the reference to
    :data:`_TRIAL_TOLERANCE` of its largest entry.
    """
    n = kernel.shape[0]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=kernel.device))
    upper = upper.reshape(n, n, *([1] * (kernel.ndim - 2))).expand_as(kernel)
    finite = torch.isfinite(kernel) | ~upper
    if reference.shape != kernel.shape:
        return "" if bool(finite.all()) else "returned non-finite values on two examples"
    if not bool((finite == (torch.isfinite(reference) | ~upper)).all()):
        return "returned non-finite values where per-example reverse mode is finite (or the reverse) on two examples"
    both = upper & finite
    if not bool(both.any()):
        return ""
    scale = float(reference[both].abs().max())
    gap = float((kernel[both] - reference[both]).abs().max()) / (scale if scale > 0 else 1.0)
    if gap > _TRIAL_TOLERANCE.get(dtype, 1e-3):
        return f"disagreed with per-example reverse mode on two examples (relative gap {gap:.2g})"
    return ""


def _report(request: KernelRequest, method: NTKMethod) -> None:
    """Record the choice for :func:`method_report` and warn once about each newly failed cheaper method."""
    state = _state(request)
    state.last = method
    new = {name: why for name, why in state.failed.items() if name not in state.warned}
    if new:
        state.warned.update(new)
        warnings.warn(
            f"empirical_ntk(method='auto'): using {method.value!r} for {type(request.fmodel.model).__name__}, "
            "because "
            + "; ".join(f"{name!r} failed ({why})" for name, why in new.items())
            + ". Pass method=... to choose yourself; ntkmonitor.kernel.method_report(model) keeps the reasons.",
            NTKMonitorWarning,
            stacklevel=5,
        )


def _mirror_upper(kernel: torch.Tensor, mode: KernelMode) -> torch.Tensor:
    """Fill the strict lower triangle from the upper one and make the diagonal exactly symmetric."""
    n = kernel.shape[0]
    transposed = kernel.transpose(0, 1)
    if mode is KernelMode.FULL:
        transposed = transposed.transpose(2, 3)
    idx = torch.arange(n, device=kernel.device)
    lower = (idx[:, None] > idx[None, :]).reshape(n, n, *([1] * (kernel.ndim - 2)))
    kernel = torch.where(lower, transposed, kernel)
    if mode is KernelMode.FULL:
        diag = kernel[idx, idx]  # (n, k, k)
        kernel[idx, idx] = 0.5 * (diag + diag.transpose(1, 2))
    return kernel
