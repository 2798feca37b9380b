"""The Lightning callback :class:`NTKMonitor`: NTK theory vs your network, live in TensorBoard.

``Trainer(callbacks=[NTKMonitor()])`` is all it takes. At the start of training the callback draws a
fixed probe from the validation set (or the training set, with a warning), captures the reference
kernel, then measures every ``every_n_steps`` optimizer steps and at the end of training, through an
:class:`~ntkmonitor.NTKTracker`. Results go to every logger: TensorBoard loggers get the scalars, the
custom-scalar charts, histograms, figures and a text summary (:mod:`ntkmonitor.tensorboard`); other
loggers (CSV, ...) get the scalars through ``log_metrics``.

Guarantees:

- **Training is not perturbed**: the same seed gives bit-identical weights with or without the callback
  (no RNG is consumed, no ``.grad``, buffer or ``.training`` flag is touched, the user's dataloaders are
  never iterated: probe items are read by indexing the dataset).
- **Never crashes training**: a failed measurement warns (:class:`~ntkmonitor.NTKMonitorWarning`) and is
  skipped; ``strict=True`` re-raises instead.
- **Resumable**: ``state_dict`` holds the probe and the reference, so a run resumed from a checkpoint
  continues against the same reference.
- **DDP**: every rank measures, each computing a share of the kernel's rows
  (``empirical_ntk(..., distributed=True)``), so a measurement takes about ``1 / world_size`` of the time
  one process would; the schedule (and the ``"auto"`` probe size) is decided on rank 0 and broadcast, so
  all ranks measure at the same steps; only global rank 0 logs and writes the history. After
  ``ddp_spawn``, ``monitor.history`` in the calling process holds rank 0's history.
- **Nothing lost**: the history file is also written when training stops early (Ctrl+C, an exception), and
  never in a ``fast_dev_run`` dry run.

The class is built on ``pytorch_lightning.Callback`` (or ``lightning.pytorch.Callback`` when only the
unified ``lightning`` package is installed); :func:`lightning_callback_class` builds it on any base.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _checks, drift
from ._files import unlink_quietly, write_text_atomic
from .errors import InputError, NTKMonitorError, NTKMonitorWarning
from .options import AnalysisOptions, KernelOptions
from .record import Snapshot
from .sinks import MetricsSink, Sink
from .tracker import NTKTracker, probe_order

__all__ = [
    "NTKMonitor",
    "NTKMonitorLogic",
    "lightning_callback_class",
    "DEFAULT_PROBE_SIZE",
    "DEFAULT_MAX_PROBE_SIZE",
    "DEFAULT_PROBE_SECONDS",
    "DEFAULT_MAX_OVERHEAD",
    "DEFAULT_MIN_MEASUREMENTS",
    "DEFAULT_MAX_MEASUREMENTS",
    "SCHEDULE_WARM_UP",
]

DEFAULT_PROBE_SIZE = 256
"""Probe points drawn when no probe is given; with ``probe_size="auto"`` (the default), the smallest probe."""

DEFAULT_MAX_PROBE_SIZE = 2048
"""With ``probe_size="auto"``, the largest probe the callback grows to."""

DEFAULT_PROBE_SECONDS = 0.25
"""With ``probe_size="auto"``, the estimated wall time of one measurement that the probe may grow to."""

DEFAULT_FIGURES_SECONDS = 60.0
"""After the first measurements, TensorBoard figures are drawn again once this many seconds have passed."""

DEFAULT_MIN_MEASUREMENTS = 8
"""The default schedule measures at least this many times (besides the reference and the last step)."""

DEFAULT_MAX_MEASUREMENTS = 50
"""The default schedule measures at most this many times."""

SCHEDULE_WARM_UP = 20
"""Training steps (at most 2 % of training) timed before the default schedule is decided."""

DEFAULT_MAX_OVERHEAD = 0.04
"""With ``every_n_steps=None`` the planned schedule chooses as many measurements as take this fraction of the
estimated training time (at least ``min_measurements``, which on a very short run can take more)."""


@contextmanager
def _preserve_rng() -> Any:
    """Restore torch (CPU and CUDA), Python and NumPy RNG states on exit (dataset transforms may draw)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _first_loader(loaders: Any) -> Any:
    """The first DataLoader of a loader collection (list, tuple, dict, CombinedLoader)."""
    if loaders is None:
        return None
    if hasattr(loaders, "iterables"):  # CombinedLoader
        loaders = loaders.iterables
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return _first_loader(loaders[0]) if loaders else None
    return loaders


def _default_batch_to_xy(batch: Any) -> tuple[Any, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):  # dicts, and Hugging Face's BatchEncoding
        batch = dict(batch)
        for xk, yk in (("x", "y"), ("input", "target"), ("inputs", "targets"), ("image", "label")):
            if xk in batch and yk in batch:
                return batch[xk], batch[yk]
        for yk in ("labels", "label"):  # Hugging Face style: every other key is a model input
            if yk in batch and len(batch) > 1:
                return {k: v for k, v in batch.items() if k != yk}, batch[yk]
    raise InputError(
        f"Expected dataset items to be (x, y) pairs, dicts with 'x'/'y' keys or Hugging Face-style dicts with a "
        f"'labels' key, but got {type(batch).__name__}. "
        "Pass batch_to_xy=lambda batch: (inputs, targets) to NTKMonitor, or an explicit probe=(x, y)."
    )


class NTKMonitorLogic:
    """The monitor callbacks' behaviour, independent of the training framework.

    :class:`NTKMonitor` (Lightning) and :class:`ntkmonitor.integrations.transformers.NTKMonitorCallback` (Hugging
    Face) drive it with a trainer object that has Lightning's attributes (``global_step``, ``is_global_zero``,
    ``current_epoch``, ``world_size``, ...); the Hugging Face callback adapts its ``TrainerState`` to them and
    overrides where the data, the sinks and the history file come from. The arguments are :class:`NTKMonitor`'s.
    """

    def __init__(
        self,
        probe: tuple[Any, torch.Tensor] | None = None,
        *,
        probe_size: int | str = "auto",
        max_probe_size: int = DEFAULT_MAX_PROBE_SIZE,
        probe_seconds: float = DEFAULT_PROBE_SECONDS,
        train_size: int | None = None,
        every_n_steps: int | None = None,
        max_overhead: float = DEFAULT_MAX_OVERHEAD,
        min_measurements: int = DEFAULT_MIN_MEASUREMENTS,
        max_measurements: int = DEFAULT_MAX_MEASUREMENTS,
        figures_every: int | None = None,
        figures_seconds: float = DEFAULT_FIGURES_SECONDS,
        batch_to_xy: Callable[[Any], tuple[Any, torch.Tensor]] | None = None,
        module: str | None = None,
        method: str = "auto",
        params: Sequence[str] | str | None = None,
        chunk_size: int | None = None,
        dtype: torch.dtype | None = None,
        output_fn: Callable[[Any], torch.Tensor] | None = None,
        top_k: int = 10,
        ridge: float | None = None,
        lr: float | str | None = None,
        loss: str = "half_mse",
        noise: float = 0.0,
        thresholds: drift.DriftThresholds | None = None,
        seed: int = 0,
        history_file: str | None = "ntk_history.json",
        strict: bool = False,
    ) -> None:
        super().__init__()
        if probe is not None and not (isinstance(probe, (tuple, list)) and len(probe) == 2):
            raise InputError(f"Expected probe to be None or a pair (x, y), but got {type(probe).__name__}.")
        if probe_size != "auto":
            probe_size = _checks.positive_int(probe_size, "probe_size (or 'auto')")
            if probe_size < 3:
                raise InputError(
                    f"Expected probe_size >= 3 (a probe of fewer points gives no spectrum or prediction), but got "
                    f"{probe_size}. Use the default 'auto' or a few hundred points."
                )
        max_probe_size = _checks.positive_int(max_probe_size, "max_probe_size")
        if max_probe_size < DEFAULT_PROBE_SIZE:
            raise InputError(f"Expected max_probe_size >= {DEFAULT_PROBE_SIZE}, but got {max_probe_size}.")
        probe_seconds = _checks.real_number(probe_seconds, "probe_seconds", strict=True)
        if figures_every is not None:
            figures_every = _checks.positive_int(figures_every, "figures_every (or None)")
        figures_seconds = _checks.real_number(figures_seconds, "figures_seconds")
        if every_n_steps is not None:
            every_n_steps = _checks.positive_int(every_n_steps, "every_n_steps (or None for the overhead budget)")
        if train_size is not None:
            train_size = _checks.positive_int(train_size, "train_size (or None to infer it)")
        min_measurements = _checks.positive_int(min_measurements, "min_measurements")
        max_measurements = _checks.positive_int(max_measurements, "max_measurements")
        if max_measurements < min_measurements:
            raise InputError(
                f"Expected max_measurements >= min_measurements, but got {max_measurements} < {min_measurements}."
            )
        if not (isinstance(max_overhead, (int, float)) and 0 < max_overhead <= 1):
            raise InputError(f"Expected max_overhead in (0, 1], but got {max_overhead!r}.")
        # every kernel and analysis option is checked here, once: a typo fails at construction
        self.kernel_options = KernelOptions(
            method=method, params=params, chunk_size=chunk_size, dtype=dtype, output_fn=output_fn
        )
        self.analysis_options = AnalysisOptions(
            top_k=top_k,
            ridge=ridge,
            lr=None if lr == "auto" else lr,
            loss=loss,
            noise=noise,
            thresholds=thresholds,
        )
        if batch_to_xy is not None and not callable(batch_to_xy):
            raise InputError(f"Expected batch_to_xy to be callable, but got {type(batch_to_xy).__name__}.")
        self.probe = probe
        self.probe_size = probe_size
        self.max_probe_size = max_probe_size
        self.probe_seconds = probe_seconds
        self.train_size = train_size
        self.every_n_steps = every_n_steps
        self.max_overhead = float(max_overhead)
        self.min_measurements = min_measurements
        self.max_measurements = max_measurements
        self.figure_seconds = 0.0
        self.figures_every = figures_every
        self.figures_seconds = figures_seconds
        self.batch_to_xy = batch_to_xy or _default_batch_to_xy
        self.module = module
        self.lr = lr
        self.seed = seed
        self.history_file = history_file
        self.strict = strict
        self.tracker: NTKTracker | None = None
        self._shared = False
        self._grow: Any = None
        self._options: dict[str, Any] = {}
        self._pending_state: dict[str, Any] | None = None
        self._warm_up_end: float | None = None
        self._last_step: int | None = None
        self._measure_seconds = 0.0
        self._last_cost = 0.0
        self._train_start: float | None = None
        self._plan: tuple[int, ...] | None = None
        self._reference_cost = 0.0
        self._start_step: int | None = None
        self._total: int | None = None
        self._measurements_since_figures = 0
        self._sinks: list[Sink] = []
        # ddp_spawn (and ddp_fork) train in child processes, each with a copy of this object: rank 0 hands its
        # history back to the process that created the callback through this file
        self._creator_pid = os.getpid()
        self._handoff = Path(tempfile.gettempdir()) / f"ntkmonitor-history-{uuid.uuid4().hex}.json"
        self._recovered: list[Snapshot] | None = None
        weakref.finalize(self, unlink_quietly, self._handoff)

    # ------------------------------------------------------------------ public
    @property
    def history(self) -> list[Snapshot]:
        """Every :class:`~ntkmonitor.Snapshot` measured so far (empty before training).

        Under DDP it is rank 0's; after ``strategy="ddp_spawn"`` the process that called ``trainer.fit`` gets
        rank 0's history too (the tracker itself stays in the child process).
        """
        if self.tracker is not None:
            return self.tracker.history
        if self._recovered is None and os.getpid() == self._creator_pid and self._handoff.is_file():
            payload = json.loads(self._handoff.read_text())
            self._recovered = [Snapshot.from_dict(entry) for entry in payload["history"]]
            unlink_quietly(self._handoff)
        return list(self._recovered or [])

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints."""
        return "NTKMonitor"

    def state_dict(self) -> dict[str, Any]:
        """Probe, reference and history of the tracker, for resuming (see :meth:`load_state_dict`)."""
        tracker_state = self.tracker.state_dict() if self.tracker is not None else self._pending_state
        return {"tracker": tracker_state, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state; the reference is applied at the start of the resumed training."""
        self._pending_state = state_dict.get("tracker")
        self._last_step = state_dict.get("last_step")

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Draw the probe and capture the reference (or restore it from a checkpoint)."""
        self._shared = _shared_kernel(trainer)
        if not self._measures(trainer):
            return
        start = time.perf_counter()
        self._warm_up_end = None
        self._guard(trainer, "the reference", lambda: self._start(trainer, pl_module))
        self._train_start = time.perf_counter()
        # the reference counts towards the budget; the one-time warm-up before it does not
        self._measure_seconds = self._train_start - (self._warm_up_end or start)
        self._reference_cost = self._measure_seconds
        self._start_step = int(trainer.global_step)
        self._plan = None
        self._total: int | None = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Measure when an optimizer step completes a period (gradient accumulation respected)."""
        if not self._measures(trainer) or self.tracker is None or not self.tracker.has_reference:
            return
        step = int(trainer.global_step)
        if step == self._last_step or step == 0:
            return
        if self.every_n_steps is not None:
            due = step % self.every_n_steps == 0
        else:
            due = self._scheduled(trainer, step)
        if due:
            self._measure(trainer, pl_module, step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Measure at the final step (if not yet measured), write figures and the history file."""
        if not self._measures(trainer) or self.tracker is None or not self.tracker.has_reference:
            return
        step = int(trainer.global_step)
        if step != self._last_step:
            self._measure(trainer, pl_module, step, final=True)
        elif self.tracker.history:
            self._guard(trainer, "the final figures", lambda: self._log_sinks(final=True))
        if trainer.is_global_zero:
            self._keep_history(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Training stopped (Ctrl+C, an error): keep the history measured so far, as at the end of training."""
        if trainer.is_global_zero and self.tracker is not None and self.tracker.history:
            self._keep_history(trainer)

    def _keep_history(self, trainer: Any) -> None:
        self._guard(trainer, "the history file", lambda: self._write_history(trainer))
        if os.getpid() != self._creator_pid:  # a spawned child: hand the history to the parent
            self._guard(trainer, "the history hand-off", lambda: write_text_atomic(self._handoff, self._payload()))

    # ------------------------------------------------------------------ internals
    def _measures(self, trainer: Any) -> bool:
        """Whether this process measures: global rank 0, and every rank when the kernel is shared."""
        return bool(trainer.is_global_zero or self._shared)

    def _from_rank_zero(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank when the kernel is shared (decisions that depend on timing)."""
        if not self._shared:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _all_ready(self, ok: bool) -> bool:
        """Whether every rank got ``ok`` (one all-reduce when the kernel is shared): a rank that failed before the
        kernel's collectives must not leave the others waiting in them."""
        if not self._shared:
            return ok
        import torch.distributed as dist

        flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _guard(self, trainer: Any, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - the monitor must never crash training
            if self.strict:
                raise
            _rank_zero_warn(
                f"NTKMonitor: {what} at step {int(trainer.global_step)} failed and was skipped "
                f"({type(err).__name__}: {err}). Training continues; pass strict=True to raise instead."
            )
            return None

    def _network(self, pl_module: Any) -> nn.Module:
        if self.module is None:
            return pl_module
        module = pl_module
        for part in self.module.split("."):
            if not hasattr(module, part):
                raise InputError(
                    f"Expected module={self.module!r} to name a submodule of {type(pl_module).__name__}, but "
                    f"{type(module).__name__} has no attribute {part!r}."
                )
            module = getattr(module, part)
        if not isinstance(module, nn.Module):
            raise InputError(f"Expected module={self.module!r} to be an nn.Module, but got {type(module).__name__}.")
        return module

    def _start(self, trainer: Any, pl_module: Any) -> None:
        """Build the tracker, warm up, size the probe and capture the reference, in phases that every rank
        finishes before the next begins when the kernel is shared (each phase but the first holds a kernel
        collective, so a rank that failed must not skip it alone)."""
        self._phase(lambda: self._build(trainer, pl_module))
        if self.tracker.has_reference:  # resumed from a checkpoint
            return
        self._phase(lambda: self._with_grad(self.tracker.warm_up))
        if self._grow is not None:
            grow, self._grow = self._grow, None

            def resize() -> None:
                # every rank estimates (the estimate computes a kernel: a collective); rank 0's choice holds
                size = self._from_rank_zero(self._auto_probe_size(grow[1]))
                if size > self.tracker.M:
                    self.tracker = NTKTracker(
                        self._network(pl_module), grow[0](size), self.tracker.train_size, **self._options
                    )

            self._phase(resize)
        self._warm_up_end = time.perf_counter()  # the one-time torch.func warm-up is not charged to the budget
        snap = self._phase(
            lambda: self._with_grad(
                lambda: self.tracker.reference(step=self._last_step, epoch=int(trainer.current_epoch))
            )
        )
        self._log(trainer, snap)

    def _phase(self, fn: Callable[[], Any]) -> Any:
        """``fn()``; when the kernel is shared, then every rank learns whether all succeeded, and all stop if one
        failed (the failing rank with its own error, the others with :class:`~ntkmonitor.NTKMonitorError`)."""
        try:
            result = fn()
        except Exception:
            self._all_ready(False)
            self.tracker = None
            raise
        if not self._all_ready(True):
            self.tracker = None
            raise NTKMonitorError("another rank failed to start the monitor (its warning says why)")
        return result

    def _build(self, trainer: Any, pl_module: Any) -> None:
        """The tracker (and the sinks on rank 0): from the checkpoint when resuming, else on a drawn probe."""
        network = self._network(pl_module)
        analysis = dataclasses.replace(self.analysis_options, lr=self._resolve_lr(trainer))
        kernel = dataclasses.replace(self.kernel_options, distributed=True) if self._shared else self.kernel_options
        self._options = options = {"kernel": kernel, "analysis": analysis}
        self._sinks = self._make_sinks(trainer) if trainer.is_global_zero else []
        self._grow = None
        if self._pending_state is not None:  # resumed from a checkpoint: same probe, same reference
            state, self._pending_state = self._pending_state, None
            self.tracker = NTKTracker(network, (state["x"], state["y"]), int(state["train_size"]), **options)
            self.tracker.load_state_dict(state)
            return
        probe, from_train, grow = self._probe(trainer)
        train_size = self.train_size or self._infer_train_size(trainer)
        if from_train:
            _rank_zero_warn(
                "NTKMonitor: no validation data, so the probe was drawn from the training set. Actual "
                "learnability on training points is inflated by memorization (it tends to 1); pass a held-out "
                "probe=(x, y), or validation data (Lightning: a val_dataloader; Hugging Face: eval_dataset), for "
                "meaningful numbers."
            )
        self.tracker = NTKTracker(network, probe, train_size, **options)
        self._last_step = int(trainer.global_step)
        self._grow = grow

    def _resolve_lr(self, trainer: Any) -> float | None:
        if self.lr != "auto" or self.analysis_options.loss == "cross_entropy":
            return None if self.lr == "auto" else self.lr
        optimizers = getattr(trainer, "optimizers", None) or []
        if len(optimizers) == 1 and type(optimizers[0]) is torch.optim.SGD:
            group = optimizers[0].param_groups[0]
            if not group.get("momentum") and not group.get("weight_decay"):
                return float(group["lr"])
        _rank_zero_warn(
            "NTKMonitor: lr='auto' needs a single plain SGD optimizer (no momentum or weight decay) for the "
            "finite-time prediction; predicting the converged network instead."
        )
        return None

    def _auto_probe_size(self, available: int) -> int:
        """The largest probe (doubling from the pilot) whose estimated measurement time fits ``probe_seconds``.

        The pilot's kernel time is scaled by ``(M / M0)^2`` and its analysis time (eigendecompositions) by
        ``(M / M0)^3``.
        """
        pilot = self.tracker.M
        kernel_s, analysis_s = self._with_grad(self.tracker.measurement_cost)
        limit = min(self.max_probe_size, available)
        size = best = pilot
        while size < limit:
            size = min(2 * size, limit)  # the last step may be partial: up to the dataset or the cap
            r = size / pilot
            if kernel_s * r**2 + analysis_s * r**3 > self.probe_seconds:
                break
            best = size
        return best

    def _probe(self, trainer: Any) -> tuple[tuple[Any, torch.Tensor], bool, Any]:
        """``(probe, drawn from training data, grow)``; ``grow`` is ``(draw(M), available)`` for ``"auto"``."""
        if self.probe is not None:
            x, y = self.probe
            return (x, torch.as_tensor(y)), False, None
        dataset, from_train = self._dataset(trainer, "val"), False
        if dataset is None:
            dataset, from_train = self._dataset(trainer, "train"), True
        if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise InputError(
                "Expected a map-style validation or training dataset to draw the probe from, but found none "
                "(iterable datasets cannot be indexed). Pass probe=(x, y) to NTKMonitor."
            )
        order = probe_order(len(dataset), self.seed)

        def draw(size: int) -> tuple[Any, torch.Tensor]:
            """The first ``size`` items of the private permutation (a larger probe contains a smaller one)."""
            with _preserve_rng():
                batch = self._collate(trainer, [dataset[i] for i in order[:size]])
            x, y = self.batch_to_xy(batch)
            return x, torch.as_tensor(y)

        auto = self.probe_size == "auto"
        size = DEFAULT_PROBE_SIZE if auto else self.probe_size
        grow = (draw, len(order)) if auto and len(order) > size else None
        if not auto and size > len(order):
            _rank_zero_warn(
                f"NTKMonitor: probe_size={size} but the dataset has {len(order)} items; the probe is all {len(order)}."
            )
        return draw(min(size, len(order))), from_train, grow

    @staticmethod
    def _collate(trainer: Any, items: list) -> Any:
        """A batch of dataset items (``torch.utils.data.default_collate``)."""
        from torch.utils.data import default_collate

        return default_collate(items)

    @staticmethod
    def _dataset(trainer: Any, which: str) -> Any:
        if which == "train":
            loader = _first_loader(trainer.train_dataloader)
        else:
            loader = _first_loader(trainer.val_dataloaders)
            if loader is None:
                source = trainer.fit_loop.epoch_loop.val_loop._data_source
                if source.is_defined() and getattr(trainer, "limit_val_batches", 1) != 0:
                    with _preserve_rng():
                        loader = _first_loader(source.dataloader())
        return getattr(loader, "dataset", None)

    def _infer_train_size(self, trainer: Any) -> int:
        dataset = self._dataset(trainer, "train")
        try:
            return len(dataset)
        except TypeError:
            raise InputError(
                "Expected a sized training dataset to infer the training-set size n, but it has no len(). "
                "Pass train_size=n to NTKMonitor."
            ) from None

    def _scheduled(self, trainer: Any, step: int) -> bool:
        """The default schedule: log-spaced steps, as many as the overhead budget allows, decided once.

        After a warm-up of a few steps (:data:`SCHEDULE_WARM_UP`, at most 2 % of training) the training time is
        estimated from the time per step, and the number of measurements ``K`` is chosen so that ``K`` times the
        reference measurement's cost is ``max_overhead`` of it, clipped to ``[min_measurements,
        max_measurements]``; the steps are ``K`` log-spaced points from the warm-up to the last step (early
        training, where the kernel moves fastest, is measured most densely). Without a known number of steps
        (``max_steps=-1`` with an iterable dataset) it measures whenever the budget allows instead.
        """
        if self._plan is None:
            if self._total is None:  # Lightning estimates it from the loaders: once, not on every warm-up step
                total = getattr(trainer, "estimated_stepping_batches", math.inf)
                self._total = (
                    int(total) if isinstance(total, (int, float)) and math.isfinite(total) and total > 0 else 0
                )
            total, first = self._total, self._start_step or 0
            if not total or total <= first:
                self._plan = ()
            else:
                warm = max(1, min(SCHEDULE_WARM_UP, (total - first) // 50))
                if step - first < warm:
                    return False
                # every rank reaches this step together; rank 0's timing decides for all
                self._plan = self._from_rank_zero(self._plan_steps(step, total))
        if not self._plan:
            return self._from_rank_zero(self._within_budget())
        return step in self._plan

    def _training_seconds(self) -> float:
        """Wall time spent training since this run started: neither the reference (before the start) nor the
        measurements and their logging count."""
        if self._train_start is None:
            return 0.0
        during = self._measure_seconds - self._reference_cost  # the reference ran before the start
        return max(time.perf_counter() - self._train_start - during, 0.0)

    def _plan_steps(self, step: int, total: int) -> tuple[int, ...]:
        """``K`` log-spaced steps from ``step`` to ``total``; ``K`` from the time per step since this run's start
        (a resumed run counts from where it resumed) and the reference's cost."""
        first = self._start_step or 0
        per_step = max(self._training_seconds(), 1e-9) / max(step - first, 1)
        cost = max(self._reference_cost, 1e-6)
        budget = self.max_overhead * per_step * (total - first)
        count = int(min(max(budget // cost, self.min_measurements), self.max_measurements))
        grid = np.unique(np.round(np.geomspace(step, total, count)).astype(int))
        return tuple(int(s) for s in grid)

    def _within_budget(self) -> bool:
        """Whether one more measurement fits within ``max_overhead`` of the training time so far.

        The cost of a measurement is estimated by the last one during training (logging included; before the
        first, by nothing), so the callback's share of the wall time stays within ``max_overhead``; the final
        measurement fits in the margin between the default 4 % and 5 %.
        """
        if self._train_start is None:
            return False
        return self._measure_seconds + self._last_cost <= self.max_overhead * self._training_seconds()

    @staticmethod
    def _with_grad(fn: Callable[[], Snapshot]) -> Snapshot:
        """Run a measurement outside inference mode with grad enabled (Lightning may disable both)."""
        with torch.inference_mode(False), torch.enable_grad():
            return fn()

    def _figure_seconds_total(self) -> float:
        return sum(getattr(sink, "figure_seconds", 0.0) for sink in self._sinks)

    def _measure(self, trainer: Any, pl_module: Any, step: int, final: bool = False) -> None:
        self._last_step = step
        start = time.perf_counter()
        figures_before = self._figure_seconds_total()
        try:
            snap = self._guard(
                trainer,
                "the measurement",
                lambda: self._with_grad(lambda: self.tracker.measure(step, epoch=int(trainer.current_epoch))),
            )
            if snap is not None:
                self._log(trainer, snap, final=final)
        finally:  # the budget counts measurement and logging; figures are capped by their own cadence
            figures = self._figure_seconds_total() - figures_before
            self._last_cost = time.perf_counter() - start - figures
            self._measure_seconds += self._last_cost
            self.figure_seconds += figures

    def _make_sinks(self, trainer: Any) -> list[Sink]:
        sinks: list[Sink] = []
        for logger in getattr(trainer, "loggers", []) or []:
            writer = getattr(logger, "experiment", None) if _is_tensorboard(logger) else None
            if writer is not None and hasattr(writer, "add_custom_scalars"):
                from .tensorboard import TensorBoardSink

                sinks.append(
                    TensorBoardSink(writer, figures_every=self.figures_every, figures_seconds=self.figures_seconds)
                )
            else:
                sinks.append(MetricsSink(logger))
        return sinks

    def _log(self, trainer: Any, snap: Snapshot, final: bool = False) -> None:
        self._guard(trainer, "logging", lambda: self._log_sinks(final=final))

    def _log_sinks(self, final: bool = False) -> None:
        for sink in self._sinks:
            self.tracker.publish(sink, final=final)

    def _payload(self) -> str:
        return json.dumps(
            {"train_size": self.tracker.train_size, "history": [s.to_dict() for s in self.tracker.history]}, indent=1
        )

    def _write_history(self, trainer: Any) -> None:
        # fast_dev_run is a dry run: Lightning writes no logs or checkpoints, and neither does the monitor
        if not self.history_file or not getattr(trainer, "loggers", None) or getattr(trainer, "fast_dev_run", False):
            return
        log_dir = trainer.loggers[0].log_dir or trainer.default_root_dir
        path = Path(log_dir) / self.history_file
        os.makedirs(path.parent, exist_ok=True)
        write_text_atomic(path, self._payload())


def _shared_kernel(trainer: Any) -> bool:
    """Whether the ranks share the kernel: more than one process in an initialized default process group."""
    if getattr(trainer, "world_size", 1) <= 1 or not torch.distributed.is_available():
        return False
    return bool(torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1)


def _is_tensorboard(logger: Any) -> bool:
    return any(cls.__name__ == "TensorBoardLogger" for cls in type(logger).__mro__)


def _rank_zero_warn(message: str) -> None:
    try:
        from lightning_utilities.core.rank_zero import rank_zero_warn
    except ImportError:  # pragma: no cover - lightning always ships lightning_utilities
        import warnings

        warnings.warn(message, NTKMonitorWarning, stacklevel=3)
        return
    rank_zero_warn(message, category=NTKMonitorWarning)


_DOC = """Lightning callback that monitors training against NTK theory.

    ``Trainer(callbacks=[NTKMonitor()])`` works with no arguments: the probe (``probe_size`` points) is
    drawn with a private generator from the validation dataset, or from the training dataset with a
    warning; ``n`` is the training dataset's length; ``(x, y)`` come from dataset items (pairs, or dicts
    with ``x``/``y`` keys; ``batch_to_xy`` for other formats). Measurements run in training hooks, outside
    inference mode, at the optimizer step (gradient accumulation respected). See ``docs/callback.md`` for
    every logged key.

    Args:
        probe: explicit held-out ``(x, y)``; ``y`` float ``(M,)``/``(M, k)`` or integer labels ``(M,)``.
        probe_size: points drawn when ``probe`` is None: an int, or ``"auto"`` (default): 256 points, grown by
            doubling (the larger probe contains the smaller) while one measurement is estimated to take at most
            ``probe_seconds``, up to ``max_probe_size`` and the dataset's size. Larger probes give tighter
            prediction intervals (``docs/theory.md`` §8).
        max_probe_size: the largest ``"auto"`` probe (default 2048).
        probe_seconds: the ``"auto"`` time budget of one measurement (default 0.25 s), estimated from the
            256-point pilot: kernel time times ``(M/256)^2`` plus analysis time times ``(M/256)^3``.
        train_size: ``n`` for the theory; default ``len(train dataset)``.
        every_n_steps: measure every this many optimizer steps; ``None`` (default): the planned schedule, ``K``
            log-spaced steps from the first steps to the last, ``K`` chosen once after a short warm-up so that the
            measurements take ``max_overhead`` of the estimated training time (see ``docs/callback.md``).
        max_overhead: overhead budget of the default schedule (default 0.04).
        min_measurements: the default schedule measures at least this many times (default 8).
        max_measurements: and at most this many (default 50).
        figures_every: also draw TensorBoard figures every this many measurements; ``None`` (default): by time.
        figures_seconds: figures are drawn at the first measurement after the reference, then again once this
            many seconds have passed (default 60), and at the end.
        batch_to_xy: maps a collated batch of dataset items to ``(x, y)``.
        module: attribute path of the network inside the LightningModule (e.g. ``"net"``); ``None`` for the
            LightningModule itself (its ``forward``).
        method: kernel method, passed to :func:`~ntkmonitor.empirical_ntk`.
        params: parameter selection, passed to :func:`~ntkmonitor.empirical_ntk`.
        chunk_size: examples per block, passed to :func:`~ntkmonitor.empirical_ntk`.
        dtype: computation dtype, passed to :func:`~ntkmonitor.empirical_ntk`.
        output_fn: output selection, passed to :func:`~ntkmonitor.empirical_ntk`.
        top_k: modes reported per measurement.
        ridge: fixed ridge of the predictions.
        lr: learning rate for the finite-time prediction (:func:`~ntkmonitor.effective_ridge`); ``"auto"``
            reads it from a plain SGD optimizer; ``None`` predicts the converged network.
        loss: ``"half_mse"`` or ``"mse"``, the loss normalization for ``lr``; ``"cross_entropy"`` for a
            classifier (the MSE theory's predictions are labelled as such; read
            ``ntk/learnability/function_alignment``).
        noise: target noise variance for the predicted test MSE.
        thresholds: :class:`~ntkmonitor.DriftThresholds` of the verdict.
        seed: seed of the private generator that draws the probe.
        history_file: JSON file written into the first logger's ``log_dir`` at the end of training, or when it
            stops early (Ctrl+C, an error); not with ``fast_dev_run`` (``None``: never).
        strict: re-raise measurement errors instead of warning and skipping.

    Example:
        >>> import pytorch_lightning as pl
        >>> monitor = NTKMonitor(every_n_steps=50, probe_size=128)
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[monitor], logger=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
    """


def lightning_callback_class(base: type) -> type:
    """Build the NTKMonitor callback class on a Lightning ``Callback`` base class.

    Args:
        base: ``pytorch_lightning.Callback`` or ``lightning.pytorch.Callback``.

    Returns:
        A subclass of ``base`` with the behaviour of :class:`NTKMonitor`.

    Example:
        >>> import pytorch_lightning as pl
        >>> cls = lightning_callback_class(pl.Callback)
        >>> issubclass(cls, pl.Callback)
        True
    """
    return type("NTKMonitor", (NTKMonitorLogic, base), {"__doc__": _DOC, "__module__": __name__})


def _default_base() -> type:
    try:
        import pytorch_lightning as pl
    except ImportError:
        import lightning.pytorch as pl
    return pl.Callback


NTKMonitor = lightning_callback_class(_default_base())
