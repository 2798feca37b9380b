"""The computation behind ``ntkmonitor audit`` and ``ntkmonitor predict``: inputs in, a typed result out.

:class:`AuditSettings` holds what the command line parsed, checked once (a mistake raises :class:`UsageError` naming
the flag and the fix); :func:`run_audit` loads the model, the checkpoints and the data, checks every checkpoint
against the model before any kernel work, measures the timeline with :class:`~ntkmonitor.NTKTracker` and returns an
:class:`AuditRun`: the :class:`~ntkmonitor.results.AuditResult` that :mod:`ntkmonitor.report` renders, and the
tracker whose measurements :func:`write_tensorboard` replays. :mod:`ntkmonitor.cli` only parses arguments, calls
these and maps errors to exit codes.

Example:
    >>> settings = AuditSettings(command="predict", model="mymodels.py:make", data="data.pt")  # doctest: +SKIP
    >>> run = run_audit(settings)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import importlib.util
import math
import os
import pickle
import platform
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__, _checks
from ._memory import available_bytes, format_bytes
from .errors import InputError, ModelCallError, NTKMonitorWarning, ParameterSelectionError, UsageError
from .kernel import empirical_ntk
from .options import AnalysisOptions, KernelOptions
from .record import Verdict
from .results import (
    AnalysisInfo,
    AuditResult,
    LearningCurve,
    ModelInfo,
    PowerLaw,
    ProbeInfo,
    ReferenceSpectrum,
    SelfCheckCurve,
    TimelineEntry,
    WeightDistance,
)
from .theory import weight_distance
from .tracker import NTKTracker, probe_order

__all__ = ["AuditSettings", "AuditRun", "run_audit", "write_tensorboard", "WEIGHT_DISTANCE_MAX_POINTS"]

_OPTION_FLAGS = {"method": "--method", "params": "--params", "top_k": "--top-k", "ridge": "--ridge", "loss": "--loss"}


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """What ``ntkmonitor audit`` / ``predict`` was asked to do, checked at construction.

    Attributes:
        command: ``"audit"`` or ``"predict"``.
        model: ``MODULE:FACTORY`` (or ``path/to/file.py:FACTORY``), or ``None`` with ``lightning_module``.
        lightning_module: ``MODULE:CLASS`` of a LightningModule, or ``None``.
        checkpoints: the checkpoint files, the reference first.
        data: a ``.pt``/``.npz`` file or ``MODULE:FUNCTION``.
        probe_size: probe points (at least 3).
        train_size: ``n``, or ``None`` for the rows of ``x``.
        method: the eNTK method.
        params: parameter names / module prefixes, or ``None``.
        ridge: ridge of the predictions (``>= 0``).
        loss: ``"half_mse"``, ``"mse"`` or ``"cross_entropy"``.
        top_k: modes reported per checkpoint.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seed of the probe draw.
        trust_checkpoint: allow full unpickling.
        mode: ``"trace"`` or ``"full"`` (audit).
        n_max: largest ``n`` of the learning curve, or ``None``.
        n_points: points of the learning curve (at least 2).
        command_line: the command as typed, for the report.
        kernel: the :class:`~ntkmonitor.KernelOptions` built from ``method`` and ``params``.
        analysis: the :class:`~ntkmonitor.AnalysisOptions` built from ``top_k``, ``ridge`` and ``loss``.
    """

    command: str
    data: str
    model: str | None = None
    lightning_module: str | None = None
    checkpoints: Sequence[str] = ()
    probe_size: int = 256
    train_size: int | None = None
    method: str = "auto"
    params: Sequence[str] | None = None
    ridge: float = 0.0
    loss: str = "half_mse"
    top_k: int = 10
    device: str = "cpu"
    seed: int = 0
    trust_checkpoint: bool = False
    mode: str = "trace"
    n_max: int | None = None
    n_points: int = 25
    command_line: str = ""
    kernel: KernelOptions = dataclasses.field(init=False)
    analysis: AnalysisOptions = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.probe_size < 3:  # as NTKMonitor(probe_size=...): a smaller probe gives no spectrum or prediction
            raise UsageError(
                f"--probe-size: expected an int >= 3, but got {self.probe_size}. Use a few hundred points."
            )
        if self.train_size is not None and self.train_size < 1:
            raise UsageError(f"--train-size: expected a positive int, but got {self.train_size}.")
        if not math.isfinite(self.ridge):
            raise UsageError(f"--ridge: expected a finite number >= 0, but got {self.ridge}.")
        if self.n_points < 2:
            raise UsageError(
                f"--n-points: expected an int >= 2 (points of the learning curve), but got {self.n_points}."
            )
        if self.n_max is not None and self.n_max < 1:
            raise UsageError(f"--n-max: expected a positive int, but got {self.n_max}.")
        for flag, spec in (("--model", self.model), ("--lightning-module", self.lightning_module)):
            if spec is not None and (":" not in spec or not spec.rpartition(":")[0] or not spec.rpartition(":")[2]):
                raise UsageError(
                    f"{flag}: expected MODULE:NAME with both parts (e.g. mypkg.models:make_net or "
                    f"path/to/file.py:make_net), but got {spec!r}."
                )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device: cuda was asked for but torch sees no CUDA device. Use --device cpu.")
        try:  # the option types check themselves; their messages get the flag's name
            kernel = KernelOptions(method=self.method, params=list(self.params) if self.params else None)
            analysis = AnalysisOptions(top_k=self.top_k, ridge=self.ridge, loss=self.loss)
        except InputError as err:
            field = next((f for f in _OPTION_FLAGS if f"Expected {f} " in str(err)), "")
            raise UsageError(f"{_OPTION_FLAGS.get(field, '--' + field)}: {err}") from None
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "analysis", analysis)


@dataclasses.dataclass
class AuditRun:
    """What :func:`run_audit` returns.

    Attributes:
        result: the typed result (render it with :func:`ntkmonitor.report.write_report`).
        tracker: the tracker that measured it (replay it with :func:`write_tensorboard`).
    """

    result: AuditResult
    tracker: NTKTracker


def _call_user(fn: Any, flag: str, what: str, returns: str) -> Any:
    """``fn()`` of the user's code; an exception there becomes one line naming the flag."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - the user's code failed: say so on one line
        reason = " ".join(str(err).split())[:200]
        raise UsageError(
            f"{flag}: {what} raised {type(err).__name__}: {reason}. Fix it (it is called with no arguments; {returns})."
        ) from None


def _as_step(value: Any, path: str) -> int | None:
    """A checkpoint's recorded step as an int (``None`` when absent), or a one-line error naming the file."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise UsageError(
            f"--checkpoint: {path!r} records the step {value!r}, not a whole number. Save the step as an int."
        )
    if not 0 <= value <= 2**53:
        raise UsageError(f"--checkpoint: {path!r} records the step {int(value)}, outside 0 to 2^53.")
    return int(value)


# ---------------------------------------------------------------------------------------------------- loading
@contextlib.contextmanager
def _no_bytecode() -> Iterator[None]:
    """Import user code without writing ``__pycache__`` next to it (nothing outside ``--out``)."""
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = previous


def _import_object(spec: str, arg: str) -> Any:
    if not isinstance(spec, str) or ":" not in spec:
        raise UsageError(
            f"{arg}: expected MODULE:NAME (e.g. mypkg.models:make_net or path/to/file.py:make_net), but got {spec!r}."
        )
    module_name, _, attr = spec.rpartition(":")
    with _no_bytecode():
        try:
            if module_name.endswith(".py"):
                path = Path(module_name)
                _existing_file(module_name, arg, "Python file")
                module_spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(module_spec)
                # registered while it runs: dataclasses (with `from __future__ import annotations`), pickling and
                # typing look the module up in sys.modules by name
                previous = sys.modules.get(module_spec.name)
                sys.modules[module_spec.name] = module
                sys.path.insert(0, str(path.resolve().parent))
                try:
                    module_spec.loader.exec_module(module)
                except BaseException:
                    if previous is None:
                        sys.modules.pop(module_spec.name, None)
                    else:
                        sys.modules[module_spec.name] = previous
                    raise
                finally:
                    sys.path.remove(str(path.resolve().parent))
            else:
                if os.getcwd() not in sys.path:
                    sys.path.insert(0, os.getcwd())
                module = importlib.import_module(module_name)
        except UsageError:
            raise
        except ImportError as err:
            raise UsageError(
                f"{arg}: cannot import module {module_name!r} ({err}). Run from the directory that contains it, "
                "or add it to PYTHONPATH."
            ) from None
    if not hasattr(module, attr):
        raise UsageError(f"{arg}: module {module_name!r} has no attribute {attr!r}. Check the name after ':'.")
    return getattr(module, attr)


def _existing_file(path: str, arg: str, kind: str = "file") -> None:
    """A clear one-line error for a path that is missing or a directory."""
    if Path(path).is_dir():
        raise UsageError(f"{arg}: {path!r} is a directory. Pass a {kind} inside it.")
    if not Path(path).is_file():
        raise UsageError(f"{arg}: file {path!r} does not exist. Pass an existing {kind}.")


def _check_expansion(path: str, arg: str) -> None:
    """Refuse a torch file whose storages would expand beyond the memory available (a compressed-zip bomb)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load reports what is wrong with it
    available = available_bytes(torch.device("cpu"))
    if expanded > available:
        raise UsageError(
            f"{arg}: {path!r} expands to {format_bytes(expanded)} in memory (the file has "
            f"{format_bytes(os.path.getsize(path))}), more than the {format_bytes(available)} available. Pass a "
            "checkpoint saved with torch.save from the model, or free memory."
        )


def _load_file(path: str, arg: str, trust: bool) -> Any:
    _existing_file(path, arg)
    _check_expansion(path, arg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"{arg}: {path!r} holds objects that safe loading (weights_only=True) refuses ({first}). If you trust "
            "this file, pass --trust-checkpoint (it runs code stored in the file)."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        if trust and not zipfile.is_zipfile(path):  # a plain pickle (pickle.dump), which torch.load cannot read
            try:
                with open(path, "rb") as fh:
                    return pickle.load(fh)  # noqa: S301 - the user vouched for the file with --trust-checkpoint
            except Exception:  # noqa: BLE001 - report torch's reason below
                pass
        hint = "" if trust else " If it is a plain pickle you trust, pass --trust-checkpoint."
        raise UsageError(f"{arg}: cannot read {path!r} as a torch file ({type(err).__name__}: {err}).{hint}") from None


def _state_from_checkpoint(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], int | None, dict[str, Any]]:
    """``(state_dict, global_step, hyperparameters)`` of a plain or Lightning checkpoint."""
    if isinstance(obj, nn.Module):
        return obj.state_dict(), None, {}
    if isinstance(obj, dict):
        if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # Lightning
            return obj["state_dict"], _as_step(obj.get("global_step"), path), dict(obj.get("hyper_parameters") or {})
        for key in ("model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return obj[key], _as_step(obj.get("global_step", obj.get("step")), path), {}
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, None, {}
    raise UsageError(
        f"--checkpoint: {path!r} is not a state_dict, a Lightning checkpoint, or a dict with 'state_dict', "
        "'model_state_dict' or 'model'. Save it with torch.save(model.state_dict(), path)."
    )


def _build_model(args: AuditSettings, first: tuple | None) -> nn.Module:
    if bool(args.model) == bool(args.lightning_module):
        raise UsageError("--model / --lightning-module: expected exactly one of them. Pass --model MODULE:FACTORY.")
    if args.lightning_module:
        if first is None:
            raise UsageError("--lightning-module: needs at least one --checkpoint (a Lightning checkpoint).")
        cls = _import_object(args.lightning_module, "--lightning-module")
        try:
            model = cls(**first[2])
        except TypeError as err:
            raise UsageError(
                f"--lightning-module: {args.lightning_module} could not be built from the checkpoint's "
                f"hyperparameters ({err}). Call self.save_hyperparameters() in its __init__."
            ) from None
    else:
        factory = _import_object(args.model, "--model")
        if not callable(factory):
            raise UsageError(f"--model: {args.model!r} is not callable. Point it to a function returning an nn.Module.")
        model = _call_user(factory, "--model", f"the factory {args.model}", "it must return an nn.Module")
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model: expected the factory to return an nn.Module, but got {type(model).__name__}.")
    return model


_KNOWN_PREFIXES = ("module.", "model.", "_orig_mod.")
"""Key prefixes a wrapper adds (DDP's ``module.``, a LightningModule's ``model.``, ``torch.compile``'s
``_orig_mod.``); a checkpoint whose keys match the model only without them is loaded with them stripped."""


def _match_state(model: nn.Module, state: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The checkpoint's state with wrapper prefixes stripped so its keys match the model's, and a note saying so.

    Raises :class:`UsageError` for keys that do not match, shapes that differ and non-finite weights, naming the
    checkpoint and the tensor: all before any kernel work.
    """
    expected = model.state_dict()
    stripped: list[str] = []
    for _ in range(len(_KNOWN_PREFIXES)):  # nested wrappers: "module.model.0.weight"
        unmatched = [k for k in state if k not in expected]
        if set(expected) <= set(state) or not unmatched:
            break
        prefix = max(_KNOWN_PREFIXES, key=lambda p: sum(k.startswith(p) for k in unmatched))
        if not any(k.startswith(prefix) for k in unmatched):
            break
        state = {k[len(prefix) :] if k in unmatched and k.startswith(prefix) else k: v for k, v in state.items()}
        stripped.append(prefix)
    missing = [k for k in expected if k not in state]
    if missing:
        unexpected = [k for k in state if k not in expected]
        raise UsageError(
            f"--checkpoint: {path!r} does not match the model (missing keys {missing[:5]}, unexpected keys "
            f"{unexpected[:5]}). Pass the --model / --lightning-module the checkpoint was saved from."
        )
    state = {k: v for k, v in state.items() if k in expected}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UsageError(f"--checkpoint: {path!r} holds a {type(value).__name__} for {name!r}, not a tensor.")
        if value.shape != expected[name].shape:
            raise UsageError(
                f"--checkpoint: {path!r} has {name!r} of shape {tuple(value.shape)}, but the model's is "
                f"{tuple(expected[name].shape)}. Pass the --model (and its size arguments) the checkpoint was saved "
                "from."
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UsageError(
                f"--checkpoint: {path!r} has {bad} NaN/inf value(s) in {name!r} (a diverged run). Leave that "
                "checkpoint out: audit the ones before the divergence."
            )
    note = f"stripped the prefix {'+'.join(repr(p) for p in stripped)} from the keys of {path!r}" if stripped else ""
    return state, note


def _load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state already checked by :func:`_match_state`."""
    model.load_state_dict(state, strict=False)


def _timeline_steps(checkpoints: list[tuple]) -> list[int]:
    """The step of each checkpoint: recorded steps in training order; without any, the checkpoint's position.

    A first checkpoint without a step is the reference before training (step 0). Otherwise recorded and missing
    steps do not mix, and recorded steps must not decrease: either would draw the timeline out of order.
    """
    recorded = [step for _, _, _, step in checkpoints]
    if all(step is None for step in recorded):
        return list(range(len(checkpoints)))
    if recorded[0] is None:
        recorded[0] = 0
    missing = [path for (path, *_), step in zip(checkpoints, recorded, strict=True) if step is None]
    if missing:
        raise UsageError(
            f"--checkpoint: {missing[0]!r} records no training step, but other checkpoints do, so its place in "
            "the timeline is unknown. Save checkpoints with their step (a Lightning checkpoint, or "
            "{'state_dict': ..., 'global_step': step}), or pass only ones without."
        )
    steps = [int(step) for step in recorded]
    for (before, *_), (after, *_), a, b in zip(checkpoints, checkpoints[1:], steps, steps[1:], strict=False):
        if b < a:
            raise UsageError(
                f"--checkpoint: {after!r} (step {b}) comes after {before!r} (step {a}). Pass checkpoints in "
                "training order; the first is the reference."
            )
    return steps


def _npz(spec: str) -> dict[str, Any]:
    _existing_file(spec, "--data", ".pt or .npz file")
    try:
        loaded = np.load(spec, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"--data: cannot read {spec!r} as an .npz archive ({type(err).__name__}: {err}).") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UsageError(
            f"--data: {spec!r} is a single .npy array, not an .npz archive of named arrays. Save it with "
            "np.savez(path, x=x, y=y)."
        )
    data = {}
    with loaded:
        for key in loaded.files:
            try:
                data[key] = loaded[key]
            except ValueError:
                raise UsageError(
                    f"--data: {spec!r} holds an object array under {key!r}, which cannot be loaded safely. Save "
                    "numeric arrays: np.savez(path, x=x.astype('float32'), y=y)."
                ) from None
    return data


def _as_data_tensor(value: Any, key: str) -> torch.Tensor:
    """One array of ``--data`` as a real tensor, or a one-line error naming the key."""
    if not isinstance(value, torch.Tensor):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            what = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers"}.get(
                array.dtype.kind, f"dtype {array.dtype}"
            )
            raise UsageError(f"--data: {key!r} holds {what}; expected real numbers (features, targets or labels).")
        value = torch.as_tensor(array)
    if value.layout != torch.strided or value.is_nested:
        raise UsageError(f"--data: {key!r} is a {value.layout} tensor; expected a dense one. Save it with .to_dense().")
    if value.is_complex():
        raise UsageError(f"--data: {key!r} holds complex numbers ({value.dtype}); expected real numbers.")
    if value.shape[0] == 0:
        raise UsageError(f"--data: {key!r} has no rows; expected one row per example.")
    if value.ndim == 0:
        raise UsageError(f"--data: {key!r} is a single number; expected one row per example.")
    where = _checks.non_finite(value)
    if where:
        raise UsageError(f"--data: {key!r} has {where}. Remove or impute those rows.")
    return value


def _load_data(spec: str) -> dict[str, torch.Tensor]:
    if spec.endswith((".pt", ".pth")):
        data = _load_file(spec, "--data", trust=False)
    elif spec.endswith(".npz"):
        data = _npz(spec)
    elif ":" in spec and not Path(spec).exists():
        loader = _import_object(spec, "--data")
        if not callable(loader):
            raise UsageError(f"--data: {spec!r} is not callable. Point it to a function returning (x, y).")
        data = _call_user(loader, "--data", f"the loader {spec}", "it returns x, y")
    elif Path(spec).is_dir():
        raise UsageError(f"--data: {spec!r} is a directory. Pass a .pt or .npz file inside it, or MODULE:FUNCTION.")
    else:
        raise UsageError(f"--data: expected a .pt or .npz file or MODULE:FUNCTION, but got {spec!r}.")
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        data = dict(zip(("x", "y", "x_probe", "y_probe"), data, strict=False))
    if not isinstance(data, dict) or "x" not in data or "y" not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"--data: expected keys 'x' and 'y' (optionally 'x_probe', 'y_probe'), but found {found}.")
    out = {key: _as_data_tensor(data[key], key) for key in ("x", "y", "x_probe", "y_probe") if key in data}
    for xk, yk in (("x", "y"), ("x_probe", "y_probe")):
        if (xk in out) != (yk in out):
            raise UsageError(f"--data: '{xk}' and '{yk}' must come together, but only one of them is there.")
        if xk in out and out[xk].shape[0] != out[yk].shape[0]:
            raise UsageError(
                f"--data: '{xk}' has {out[xk].shape[0]} rows but '{yk}' has {out[yk].shape[0]}; they must match."
            )
    return out


def _probe(data: dict[str, torch.Tensor], size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str, bool]:
    key = "x_probe" if "x_probe" in data else "x"
    x, y = data[key], data["y_probe" if key == "x_probe" else "y"]
    index = torch.tensor(probe_order(x.shape[0], seed)[:size], dtype=torch.long)
    if index.numel() < 3:
        raise UsageError(
            f"--data: '{key}' has {x.shape[0]} row(s), but a probe needs at least 3 points (--probe-size is at least "
            "3). Provide more held-out points."
        )
    where = "x_probe" if key == "x_probe" else "x, the training data"
    return x[index], y[index], f"{where} ({index.numel()} of {x.shape[0]} points)", key == "x"


# ---------------------------------------------------------------------------------------------------- running
def _progress(message: str) -> None:
    print(f"ntkmonitor: {message}", file=sys.stderr, flush=True)


def _versions() -> dict[str, str]:
    return {
        "ntkmonitor": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _learning_curve(tracker: NTKTracker, args: AuditSettings, n_max: int, points: int) -> dict[str, Any]:
    """The predicted learning curve from ``K0`` (:class:`~ntkmonitor.ProbeEstimator`), with its intervals."""
    grid = {int(round(v)) for v in np.geomspace(1, max(n_max, 2), points)} | {tracker.train_size}
    curve: dict[str, Any] = {"ridge": args.ridge, "reach": math.nan}
    estimator = tracker.estimator0
    if estimator is None:
        curve["note"] = f"no prediction: a {tracker.M}-point probe is too small"
        return curve
    predictions = [estimator.predict(n, ridge=args.ridge) for n in sorted(grid)]
    curve["n"] = [p.n for p in predictions]
    for name in ("learnability", "test_mse"):
        curve[name] = [getattr(p, name) for p in predictions]
        curve[f"{name}_lower"] = [getattr(p, f"{name}_interval")[0] for p in predictions]
        curve[f"{name}_upper"] = [getattr(p, f"{name}_interval")[1] for p in predictions]
    curve["kappa"] = [p.kappa for p in predictions]
    curve["regime"] = [p.regime for p in predictions]
    at_n = estimator.predict(tracker.train_size, ridge=args.ridge)
    curve["reach"] = at_n.reach
    curve["at_train_size"] = at_n.to_dict()
    curve["note"] = at_n.note
    return curve


def run_audit(args: AuditSettings) -> AuditRun:
    """Run ``ntkmonitor audit`` or ``predict`` (``args.command``): load, check, measure, predict.

    Every input is loaded and checked (files, data, model, checkpoints against the model) before the first kernel.

    Args:
        args: the :class:`AuditSettings`.

    Returns:
        The :class:`AuditRun`: the typed result and the tracker that measured it.

    Raises:
        UsageError: a mistake in the inputs, naming the flag and the fix.
    """
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device: cuda was asked for but torch sees no CUDA device. Use --device cpu.")
    checkpoints = []
    for path in args.checkpoints:
        state, step, hparams = _state_from_checkpoint(_load_file(path, "--checkpoint", args.trust_checkpoint), path)
        checkpoints.append((path, state, hparams, step))
    if args.trust_checkpoint and checkpoints:
        warnings.warn(
            "--trust-checkpoint: checkpoints were fully unpickled; this runs code stored in them.",
            NTKMonitorWarning,
            stacklevel=2,
        )
    data = _load_data(args.data)
    first = (checkpoints[0][0], checkpoints[0][1], checkpoints[0][2]) if checkpoints else None
    model = _build_model(args, first).to(args.device)
    x_probe, y_probe, source, overlaps = _probe(data, args.probe_size, args.seed)
    train_size = args.train_size or int(data["x"].shape[0])
    result_warnings = []
    if overlaps:
        result_warnings.append(
            "The probe was drawn from x (the training data): actual learnability on training points is inflated by "
            "memorization. Provide x_probe/y_probe of held-out points."
        )
    # every checkpoint is checked against the model before any kernel work
    matched = [_match_state(model, state, path) for path, state, _, _ in checkpoints]
    steps = _timeline_steps(checkpoints)
    if len(checkpoints) > 1 and all(step is None for *_, step in checkpoints):
        result_warnings.append(
            "No checkpoint records its training step, so the timeline's x-axis is the checkpoint's position (0, 1, "
            "...). Save the step with each checkpoint (a Lightning checkpoint, or {'state_dict': ..., "
            "'global_step': step}) to see the drift against training time."
        )
    checkpoints = [
        (path, state, hparams, step)
        for (path, _, hparams, _), (state, _), step in zip(checkpoints, matched, steps, strict=True)
    ]
    for _, note in matched:
        if note:
            _progress(note)
            result_warnings.append(f"--checkpoint: {note} (a wrapper's prefix).")
    timeline = checkpoints or [("initial model (--model factory)", None, {}, 0)]
    if checkpoints:
        _load_state(model, checkpoints[0][1])
    try:
        tracker = NTKTracker(model, (x_probe, y_probe), train_size, kernel=args.kernel, analysis=args.analysis)
    except ModelCallError as err:
        raise UsageError(
            f"--data: the model from --model fails on the inputs of --data (x of shape {tuple(x_probe.shape)}): "
            f"{err.__cause__ or err}. Check that the data's feature size matches the model."
        ) from None
    except ParameterSelectionError as err:
        raise UsageError(f"--params: {err}") from None
    except InputError as err:
        raise UsageError(f"--data: {err} (the probe comes from --data)") from None
    entries = []
    for index, (path, state, _, step) in enumerate(timeline):
        label = Path(path).name if state is not None else path
        start = time.perf_counter()
        if index == 0:
            _progress(f"[1/{len(timeline)}] reference kernel on {tracker.M} probe points: {label} ...")
            snapshot = tracker.reference(step=step)
        else:
            _load_state(model, state)
            _progress(f"[{index + 1}/{len(timeline)}] measuring {label} ...")
            snapshot = tracker.measure(step=step)
        _progress(f"    done in {time.perf_counter() - start:.1f} s")
        entries.append(TimelineEntry(label, step, snapshot))
    spectrum0 = tracker.spectrum0
    power = tracker.coefficients0.pow(2).sum(1)
    try:
        fit = spectrum0.power_law_fit(max(2, spectrum0.rank // 10), max(spectrum0.rank // 2, 3))
        power_law = PowerLaw(fit.c, fit.alpha, fit.r2)
    except InputError:
        power_law = None
    offdiagonal = None
    if args.mode == "full":
        if checkpoints:
            _load_state(model, checkpoints[0][1])
        K = empirical_ntk(model, x_probe, mode="full", method=args.kernel.method, params=args.kernel.params)
        diagonal = torch.diagonal(K, dim1=2, dim2=3)
        offdiagonal = float((K - torch.diag_embed(diagonal)).norm() / K.norm())
    distance = None
    if args.command == "audit" and len(entries) >= 2:
        distance = _distance_travelled(args, model, checkpoints, data, tracker, entries)
    n_max = args.n_max or 4 * max(train_size, tracker.M)
    curve = _learning_curve(tracker, args, n_max, args.n_points)
    last = tracker.history[-1]
    result = AuditResult(
        kind=args.command,
        command=args.command_line,
        versions=_versions(),
        created=datetime.datetime.now().isoformat(timespec="seconds"),
        model=ModelInfo(
            spec=args.model or args.lightning_module or "",
            num_params=sum(p.numel() for p in model.parameters()),
            num_outputs=tracker.num_outputs,
            device=args.device,
            kernel_method=args.kernel.method.value,
        ),
        probe=ProbeInfo(
            size=tracker.M, source=source, overlaps_training_data=overlaps, train_size=train_size, seed=args.seed
        ),
        options=AnalysisInfo(
            ridge=args.ridge, mode=args.mode, params=list(args.kernel.params or []) or None, top_k=args.analysis.top_k
        ),
        spectrum0=ReferenceSpectrum(
            eigenvalues=spectrum0.eigenvalues.tolist(),
            target_power=power.tolist(),
            effective_rank=spectrum0.effective_rank(),
            participation_ratio=spectrum0.participation_ratio(),
            power_law=power_law,
        ),
        timeline=entries if args.command == "audit" else [],
        verdict=Verdict(last.verdict) if args.command == "audit" and len(entries) > 1 and last.verdict else None,
        thresholds=tracker.thresholds,
        learning_curve=LearningCurve.from_dict(curve),
        self_check=None if tracker.self_check is None else SelfCheckCurve.from_dict(tracker.self_check.to_dict()),
        weight_distance=None if distance is None else WeightDistance.from_dict(distance),
        offdiagonal_fraction=offdiagonal,
        warnings=result_warnings,
    )
    return AuditRun(result, tracker)


WEIGHT_DISTANCE_MAX_POINTS = 4096
"""The audit computes the predicted distance travelled on training sets of at most this many points (an
``n x n`` float64 kernel)."""


def _distance_travelled(
    args: AuditSettings,
    model: nn.Module,
    checkpoints: list[tuple],
    data: dict[str, torch.Tensor],
    tracker: NTKTracker,
    entries: list[TimelineEntry],
) -> dict[str, Any]:
    """Predicted ``||w_inf - w_0||`` of the linearized network on the training data vs the measured distances."""
    x, y = data["x"], data["y"]
    n = int(x.shape[0])
    if n > WEIGHT_DISTANCE_MAX_POINTS:
        return {"note": f"not computed: {n} training points (at most {WEIGHT_DISTANCE_MAX_POINTS})"}
    _progress(f"distance travelled: kernel on the {n} training points ...")
    _load_state(model, checkpoints[0][1])
    K = empirical_ntk(model, x, method=args.kernel.method, params=args.kernel.params, dtype=torch.float64)
    target = NTKTracker(model, (x, y), n, kernel=args.kernel).target
    flags = [m.training for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            f0 = model(x.to(args.device)).detach().double().cpu().reshape(n, -1)
    finally:
        for m, flag in zip(model.modules(), flags, strict=True):
            m.training = flag
    predicted = weight_distance(K, target - f0, ridge=args.ridge)
    norm0 = math.sqrt(sum(float(p.double().pow(2).sum()) for p in tracker.params0.values()))
    measured = [
        (e.snapshot.parameter_change if math.isfinite(e.snapshot.parameter_change) else 0.0) * norm0 for e in entries
    ]
    return {
        "predicted": predicted,
        "measured": measured,
        "labels": [e.label for e in entries],
        "n": n,
        "ridge": args.ridge,
        "note": "the linearized network trained by gradient descent to convergence on the training data (or, with "
        "--ridge, to the ridge solution) travels sqrt((y - f0)^T K^-1 (y - f0)); a lazy network trained that long "
        "travels this far, one stopped early less",
    }


def write_tensorboard(tracker: NTKTracker, out: Path) -> None:
    """Replay the tracker's measurements into ``out/tensorboard`` (the callback's layout; figures once, at the end).

    Args:
        tracker: the tracker of an :class:`AuditRun`.
        out: the output folder.
    """
    from torch.utils.tensorboard import SummaryWriter

    from .tensorboard import TensorBoardSink

    writer = SummaryWriter(str(out / "tensorboard"))
    sink = TensorBoardSink(writer, figures_every=0, early_figures=False)  # figures once, at the end
    reference = tracker.reference_record
    try:
        for i, snapshot in enumerate(tracker.history):
            sink.log(snapshot, reference, final=i == len(tracker.history) - 1)
    finally:
        sink.close()
