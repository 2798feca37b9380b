"""Where measurements go: the :class:`Sink` protocol, and :class:`MetricsSink` for any ``log_metrics`` logger.

A sink takes the data record (:mod:`ntkmonitor.record`): each :class:`~ntkmonitor.Snapshot` with the run's
:class:`~ntkmonitor.Reference`. :class:`~ntkmonitor.tensorboard.TensorBoardSink` draws charts and figures;
:class:`MetricsSink` sends the flat scalar dict to a Lightning logger (CSV, W&B, MLflow, ...) or anything with
``log_metrics(metrics, step)``. :meth:`ntkmonitor.NTKTracker.publish` hands a tracker's latest measurement to a
sink; the callback does it for every logger of the trainer.

Example:
    >>> class Printer:
    ...     def log_metrics(self, metrics, step):
    ...         print(step, sorted(metrics)[:1])
    >>> from ntkmonitor.record import Reference, Snapshot
    >>> sink = MetricsSink(Printer())
    >>> sink.log(Snapshot(step=4, kernel_distance=0.01), Reference(eigenvalues=[1.0], target_power=[1.0]))
    4 ['ntk/drift/kernel_distance']
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .errors import InputError
from .record import Reference, Snapshot

__all__ = ["Sink", "MetricsSink"]


@runtime_checkable
class Sink(Protocol):
    """What receives measurements: ``log(snapshot, reference, *, eigenvalues=None, final=False)``.

    ``eigenvalues`` are the current kernel's operator eigenvalues ``(R,)`` when known (for a spectrum
    histogram); ``final`` marks the end of the run (draw what is left, flush). Logging the same snapshot object
    twice must write it once.
    """

    def log(self, snapshot: Snapshot, reference: Reference, *, eigenvalues: Any = None, final: bool = False) -> None:
        """Write one measurement."""
        ...


class MetricsSink:
    """A :class:`Sink` over any logger with ``log_metrics(metrics: dict[str, float], step: int)``.

    Sends :meth:`Snapshot.scalars() <ntkmonitor.Snapshot.scalars>`, the one flat dict every logger receives.

    Args:
        logger: e.g. a Lightning ``CSVLogger``, ``WandbLogger`` or ``MLFlowLogger``.

    Example:
        >>> MetricsSink(object())
        Traceback (most recent call last):
        ...
        ntkmonitor.errors.InputError: Expected a logger with log_metrics(metrics, step), but got object.
    """

    def __init__(self, logger: Any) -> None:
        if not callable(getattr(logger, "log_metrics", None)):
            raise InputError(f"Expected a logger with log_metrics(metrics, step), but got {type(logger).__name__}.")
        self.logger = logger
        self._last: Snapshot | None = None

    def log(self, snapshot: Snapshot, reference: Reference, *, eigenvalues: Any = None, final: bool = False) -> None:
        """Send the snapshot's scalars at its step (once per snapshot)."""
        if snapshot is self._last:
            return
        self.logger.log_metrics(snapshot.scalars(), step=snapshot.step)
        self._last = snapshot
