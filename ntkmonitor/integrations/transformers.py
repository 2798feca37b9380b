"""The Hugging Face ``Trainer`` callback :class:`NTKMonitorCallback`: NTK theory vs your fine-tuning, live.

``Trainer(..., callbacks=[NTKMonitorCallback()])`` is all it takes. It is :class:`~ntkmonitor.NTKMonitor`'s
behaviour (:class:`~ntkmonitor.callback.NTKMonitorLogic`, built on :class:`~ntkmonitor.NTKTracker`) driven by the
``Trainer``'s events:

- **Probe**: ``probe_size`` items of the ``Trainer``'s ``eval_dataset`` (else ``train_dataset``, with a warning),
  drawn with a private generator and batched by the ``Trainer``'s own ``data_collator`` (padding, label names);
  the user's dataloaders are never iterated. ``labels`` are the targets, every other key a model input.
- **Output**: the logits (``output.logits``, or the output's ``"logits"`` entry); ``output_fn`` overrides.
- **Parameters**: every parameter with ``requires_grad``, i.e. the **trainable** ones. With a ``peft`` LoRA
  model (``get_peft_model``) the base weights are frozen, so the kernel is the eNTK of the adapters
  (``lora_A``, ``lora_B``) and of any ``modules_to_save`` (e.g. the classifier head): the kernel of the
  fine-tuning itself (Malladi et al. 2023, `A Kernel-Based View of Language Model Fine-Tuning
  <https://arxiv.org/abs/2210.05643>`_). ``params=[...]`` selects others.
- **n**: ``len(train_dataset)``.
- **Logging**: through the ``Trainer``'s reporting. When ``report_to`` includes ``"tensorboard"``, the same
  keys, overlay runs, custom-scalar charts and figures as the Lightning callback go to the ``Trainer``'s
  TensorBoard directory (that of its ``TensorBoardCallback``: ``$TENSORBOARD_LOGGING_DIR``, else
  ``output_dir/runs/<date_host>``); every other reporting integration (Weights & Biases,
  MLflow, ...) gets the scalars through its ``on_log``. Only the main process logs; ``ntk_history.json`` is
  written to ``args.output_dir``.
- **Guarantees**: the same as the Lightning callback's. Training is bit-identical with and without it (no
  RNG is consumed, no gradient, buffer or mode is touched); a failed measurement warns and is skipped
  (``strict=True`` re-raises); under DDP every rank computes a share of each kernel. **Resume**: at each
  checkpoint the probe, the reference and the history are saved as ``ntkmonitor_state.pt`` in the
  checkpoint directory; ``trainer.train(resume_from_checkpoint=...)`` continues against the same reference.
  The ``Trainer`` has no hook for a run stopped by an exception: the history file is written at the end of
  training only (``callback.history`` and the last checkpoint's state hold an interrupted run's).

The ``Trainer`` is found from the callback's hooks (they are called by its methods); a callback used outside
a ``Trainer`` gets a clear error.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from ..callback import NTKMonitorLogic
from ..errors import InputError, NTKMonitorWarning
from ..record import Snapshot
from ..sinks import MetricsSink, Sink

__all__ = ["NTKMonitorCallback", "STATE_FILE", "logits"]

STATE_FILE = "ntkmonitor_state.pt"
"""The callback's state (probe, reference, history) in each ``Trainer`` checkpoint directory."""


def logits(output: Any) -> torch.Tensor:
    """The logits of a Hugging Face model's output: ``output.logits``, ``output["logits"]`` or the output itself.

    Args:
        output: a ``ModelOutput``, a dict or a tensor ``(n, k)``.

    Returns:
        The ``(n, k)`` logits.

    Example:
        >>> logits({"logits": torch.zeros(2, 3)}).shape
        torch.Size([2, 3])
    """
    if isinstance(output, torch.Tensor):
        return output
    value = getattr(output, "logits", None)
    if value is None and isinstance(output, dict):
        value = output.get("logits")
    if value is None:
        raise InputError(
            f"Expected the model's output to have logits (output.logits or output['logits']), but got "
            f"{type(output).__name__}. Pass output_fn=lambda out: ... to NTKMonitorCallback."
        )
    return value


class _TrainerView:
    """A Hugging Face ``Trainer`` and its ``TrainerState`` seen through the Lightning attributes that
    :class:`~ntkmonitor.callback.NTKMonitorLogic` reads."""

    def __init__(self, trainer: Any, args: Any, state: Any, optimizer: Any = None) -> None:
        self.trainer, self.args, self.state = trainer, args, state
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it: lr="auto" reads the inner one
        self.optimizers = [optimizer] if optimizer is not None else []
        self.fast_dev_run = False

    @property
    def is_global_zero(self) -> bool:  # noqa: D102
        return bool(self.state.is_world_process_zero)

    @property
    def global_step(self) -> int:  # noqa: D102
        return int(self.state.global_step)

    @property
    def current_epoch(self) -> int:  # noqa: D102
        return int(self.state.epoch or 0)

    @property
    def estimated_stepping_batches(self) -> float:  # noqa: D102
        return float(self.state.max_steps) if self.state.max_steps and self.state.max_steps > 0 else float("inf")

    @property
    def world_size(self) -> int:  # noqa: D102
        return int(self.args.world_size)


class _Reporter:
    """A ``log_metrics`` logger over one of the ``Trainer``'s reporting integrations (its ``on_log``)."""

    def __init__(self, callback: Any, view: _TrainerView) -> None:
        self.callback, self.view = callback, view

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:  # noqa: D102
        control = transformers.TrainerControl()
        self.callback.on_log(self.view.args, self.view.state, control, logs=dict(metrics))


class _HFLogic(NTKMonitorLogic):
    """Where the data, the sinks and the history file come from in a Hugging Face ``Trainer``."""

    @staticmethod
    def _collate(trainer: _TrainerView, items: list) -> Any:
        columns = _model_columns(trainer)
        if columns is not None:  # as the Trainer does (remove_unused_columns): e.g. a dataset's raw "text" column
            items = [{k: v for k, v in it.items() if k in columns} if isinstance(it, dict) else it for it in items]
        collator = getattr(trainer.trainer, "data_collator", None)
        if collator is None:
            return NTKMonitorLogic._collate(trainer, items)
        return collator(items)

    def guarded(self, view: _TrainerView, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, warned and skipped on failure like a measurement (re-raised with ``strict=True``)."""
        return self._guard(view, what, fn)

    @staticmethod
    def _dataset(trainer: _TrainerView, which: str) -> Any:
        name = "train_dataset" if which == "train" else "eval_dataset"
        dataset = getattr(trainer.trainer, name, None)
        if isinstance(dataset, dict):  # several eval datasets: the first
            dataset = next(iter(dataset.values()), None)
        return dataset

    def _make_sinks(self, trainer: _TrainerView) -> list[Sink]:
        sinks: list[Sink] = []
        for callback in trainer.trainer.callback_handler.callbacks:
            module = type(callback).__module__
            if type(callback).__name__ == "TensorBoardCallback":
                from torch.utils.tensorboard import SummaryWriter

                from ..tensorboard import TensorBoardSink

                log_dir = getattr(callback, "logging_dir", None) or getattr(trainer.args, "logging_dir", None)
                log_dir = log_dir or os.path.join(trainer.args.output_dir, "runs")
                writer = SummaryWriter(log_dir=log_dir)
                sinks.append(
                    TensorBoardSink(writer, figures_every=self.figures_every, figures_seconds=self.figures_seconds)
                )
            elif module.startswith("transformers.integrations") and hasattr(callback, "on_log"):
                sinks.append(MetricsSink(_Reporter(callback, trainer)))
        return sinks

    def _write_history(self, trainer: _TrainerView) -> None:
        if not self.history_file:
            return
        from .._files import write_text_atomic

        path = Path(trainer.args.output_dir) / self.history_file
        os.makedirs(path.parent, exist_ok=True)
        write_text_atomic(path, self._payload())

    def close(self) -> None:
        """Close the TensorBoard writers this callback opened."""
        for sink in self._sinks:
            writer = getattr(sink, "writer", None)
            if writer is not None:
                writer.close()


def _model_columns(trainer: _TrainerView) -> set[str] | None:
    """The item keys the ``Trainer`` keeps (``remove_unused_columns=True``): the model's named ``forward`` arguments
    and the label names; ``None`` when it keeps every key."""
    if not getattr(trainer.args, "remove_unused_columns", True):
        return None
    model = trainer.trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the wrapped model's
    params = inspect.signature(base.forward).parameters  # named ones: the Trainer drops the rest, even with **kwargs
    labels = getattr(trainer.args, "label_names", None) or ["label", "label_ids", "labels"]
    return set(params) | set(labels)


def _find_trainer() -> tuple[Any, str | None]:
    """The ``transformers.Trainer`` whose method called this hook, and its ``resume_from_checkpoint`` (if any)."""
    frame = inspect.currentframe()
    trainer, resume = None, None
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if trainer is None and isinstance(candidate, transformers.Trainer):
                trainer = candidate
            value = frame.f_locals.get("resume_from_checkpoint")
            if trainer is not None and isinstance(value, (str, os.PathLike)):
                resume = os.fspath(value)
                break
            if trainer is not None and frame.f_code.co_name == "train":
                break
            frame = frame.f_back
    finally:
        del frame
    return trainer, resume


class NTKMonitorCallback(transformers.TrainerCallback):
    """Hugging Face ``Trainer`` callback that monitors training (fine-tuning) against NTK theory.

    ``Trainer(model, args, train_dataset=..., eval_dataset=..., callbacks=[NTKMonitorCallback()])`` works with no
    arguments; see the module docstring (and ``docs/huggingface.md``) for where the probe, ``n`` and the outputs come
    from, and ``docs/callback.md`` for the logged keys (those of :class:`~ntkmonitor.NTKMonitor`).

    Args:
        probe: explicit ``(x, y)``: ``x`` a dict of model inputs ``(M, ...)`` (``input_ids``, ``attention_mask``),
            ``y`` the targets.
        output_fn: maps the model's output to ``(n, k)``; default :func:`logits`.
        **kwargs: every other argument of :class:`~ntkmonitor.NTKMonitor` (``probe_size``, ``every_n_steps``,
            ``train_size``, ``params``, ``method``, ``loss``, ``strict``, ``history_file``, ...).

    Example:
        >>> from ntkmonitor.integrations.transformers import NTKMonitorCallback
        >>> callback = NTKMonitorCallback(probe_size=64, loss="mse")
    """

    def __init__(
        self,
        probe: tuple[Any, torch.Tensor] | None = None,
        *,
        output_fn: Callable[[Any], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        self._logic = _HFLogic(probe, output_fn=output_fn or logits, **kwargs)
        self._view: _TrainerView | None = None

    # ------------------------------------------------------------------ public
    @property
    def history(self) -> list[Snapshot]:
        """Every :class:`~ntkmonitor.Snapshot` measured so far (the main process's)."""
        return self._logic.history

    @property
    def tracker(self) -> Any:
        """The :class:`~ntkmonitor.NTKTracker` (``None`` before training)."""
        return self._logic.tracker

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any):
        """Draw the probe and capture the reference (or restore it from the checkpoint being resumed)."""
        trainer, resume = _find_trainer()
        if trainer is None:
            raise InputError(
                "Expected NTKMonitorCallback to be called by a transformers.Trainer, but no Trainer was found among "
                "its callers. Pass it as Trainer(..., callbacks=[NTKMonitorCallback()])."
            )
        self._view = _TrainerView(trainer, args, state, kwargs.get("optimizer"))
        if state.global_step > 0:
            self._logic.guarded(self._view, "restoring the monitor's state", lambda: self._restore(args, state, resume))
        self._logic.on_train_start(self._view, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any):
        """Measure when an optimizer step is due (gradient accumulation respected: steps are optimizer steps)."""
        if self._view is not None:
            self._logic.on_train_batch_end(self._view, model, None, None, 0)

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any):
        """Measure at the final step (if not yet measured), draw the final figures, write the history."""
        if self._view is None:
            return
        try:
            self._logic.on_train_end(self._view, model)
        finally:
            self._logic.close()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any):
        """Save the probe, the reference and the history into the checkpoint just written (main process)."""
        if not state.is_world_process_zero or self._logic.tracker is None:
            return
        folder = Path(args.output_dir) / f"{transformers.trainer_utils.PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir():
            torch.save(self._logic.state_dict(), folder / STATE_FILE)

    # ------------------------------------------------------------------ internals
    def _restore(self, args: Any, state: Any, resume: str | None) -> None:
        prefix = transformers.trainer_utils.PREFIX_CHECKPOINT_DIR
        candidates = [Path(resume)] if resume else []
        default = Path(args.output_dir) / f"{prefix}-{state.global_step}"
        if not any(c.resolve() == default.resolve() for c in candidates):
            candidates.append(default)
        for folder in candidates:
            path = folder / STATE_FILE
            if path.is_file():
                self._logic.load_state_dict(torch.load(path, weights_only=True))
                return
        warnings.warn(
            f"NTKMonitorCallback: resuming at step {state.global_step} without {STATE_FILE} in "
            f"{', '.join(str(c) for c in candidates)}: a new probe and reference are drawn now.",
            NTKMonitorWarning,
            stacklevel=2,
        )
