"""The ``ntkmonitor`` command line: ``ntkmonitor audit`` and ``ntkmonitor predict``.

``audit`` measures a saved model (one or several checkpoints, the first being the reference) against NTK
theory on a probe, without training; ``predict`` gives the learning curve the theory predicts at
initialization. Both write ``report.html``, ``report.json`` (and, for ``audit``, TensorBoard event files in
the callback's layout) into ``--out`` and print a summary. They reuse :class:`~ntkmonitor.NTKTracker` and
the sinks; nothing here computes theory of its own.

Exit codes: 0 success, 2 bad input (a one-line message naming the argument and the fix), 1 internal error.
Nothing outside ``--out`` is written.

Example:
    >>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import math
import os
import pickle
import platform
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from ._problem import NTKMethod
from .errors import InputError, ModelCallError, NTKMonitorError, NTKMonitorWarning
from .kernel import empirical_ntk
from .theory import weight_distance
from .tracker import NTKTracker

__all__ = ["main", "run", "build_parser", "UsageError"]


class UsageError(InputError):
    """Bad command-line input; ``main`` prints it on one line and exits with status 2.

    Example:
        >>> str(UsageError("--data: file 'x.pt' does not exist. Pass an existing .pt or .npz file."))
        "--data: file 'x.pt' does not exist. Pass an existing .pt or .npz file."
    """


# ---------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ntkmonitor`` (subcommands ``audit`` and ``predict``).

    Returns:
        An ``argparse.ArgumentParser``.

    Example:
        >>> args = build_parser().parse_args(["predict", "--model", "m:f", "--data", "d.pt", "--out", "o"])
        >>> args.command, args.probe_size
        ('predict', 256)
    """
    parser = argparse.ArgumentParser(
        prog="ntkmonitor", description="Audit a saved model against Neural Tangent Kernel theory."
    )
    parser.add_argument("--version", action="version", version=f"ntkmonitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help="MODULE:FACTORY (or path/to/file.py:FACTORY) returning an nn.Module")
        p.add_argument(
            "--lightning-module", help="MODULE:CLASS of a LightningModule, built from the checkpoint's hyperparameters"
        )
        p.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            help="a state_dict or Lightning checkpoint; repeat for a timeline (the first is the reference)",
        )
        p.add_argument(
            "--data",
            required=True,
            help=".pt/.npz file with x, y (optionally x_probe, y_probe), or MODULE:FUNCTION returning them",
        )
        p.add_argument("--probe-size", type=int, default=256, help="probe points M (default 256)")
        p.add_argument("--train-size", type=int, help="training-set size n (default: the number of rows of x)")
        p.add_argument(
            "--method", default="auto", choices=[m.value for m in NTKMethod], help="eNTK method (default auto)"
        )
        p.add_argument("--params", action="append", help="parameter names / module prefixes (repeatable)")
        p.add_argument("--ridge", type=float, default=0.0, help="ridge delta of the predictions (default 0)")
        p.add_argument(
            "--loss",
            choices=["half_mse", "mse", "cross_entropy"],
            default="half_mse",
            help="the training loss: cross_entropy labels the MSE theory's predictions as such (default half_mse)",
        )
        p.add_argument("--top-k", type=int, default=10, help="modes reported per measurement (default 10)")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to compute (default cpu)")
        p.add_argument("--seed", type=int, default=0, help="seed of the probe draw (default 0)")
        p.add_argument(
            "--trust-checkpoint",
            action="store_true",
            help="allow full unpickling of checkpoints (runs code stored in the file: only for files you trust)",
        )
        p.add_argument("--out", required=True, help="output directory (created; nothing is written elsewhere)")

    audit = sub.add_parser("audit", help="measure checkpoints against the NTK: drift, spectrum, learnability")
    common(audit)
    audit.add_argument(
        "--mode",
        default="trace",
        choices=["trace", "full"],
        help="trace (default); full also reports how far K_full is from K_trace (x) I at the reference",
    )
    predict = sub.add_parser("predict", help="predicted learning curve at initialization")
    common(predict)
    predict.add_argument("--n-max", type=int, help="largest n of the learning curve (default 4 max(n, M))")
    predict.add_argument("--n-points", type=int, default=25, help="points of the log grid (default 25)")
    return parser


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


def _load_file(path: str, arg: str, trust: bool) -> Any:
    _existing_file(path, arg)
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
        raise UsageError(f"{arg}: cannot read {path!r} as a torch file ({type(err).__name__}: {err}).") from None


def _state_from_checkpoint(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], int | None, dict[str, Any]]:
    """``(state_dict, global_step, hyperparameters)`` of a plain or Lightning checkpoint."""
    if isinstance(obj, nn.Module):
        return obj.state_dict(), None, {}
    if isinstance(obj, dict):
        if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # Lightning
            return obj["state_dict"], obj.get("global_step"), dict(obj.get("hyper_parameters") or {})
        for key in ("model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return obj[key], obj.get("global_step", obj.get("step")), {}
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, None, {}
    raise UsageError(
        f"--checkpoint: {path!r} is not a state_dict, a Lightning checkpoint, or a dict with 'state_dict', "
        "'model_state_dict' or 'model'. Save it with torch.save(model.state_dict(), path)."
    )


def _build_model(args: argparse.Namespace, first: tuple | None) -> nn.Module:
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
        model = factory()
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model: expected the factory to return an nn.Module, but got {type(model).__name__}.")
    return model


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UsageError(
            f"--checkpoint: {path!r} does not match the model (missing keys {result.missing_keys[:5]}, unexpected "
            f"keys {result.unexpected_keys[:5]}). Pass the --model / --lightning-module the checkpoint was saved from."
        )


def _load_data(spec: str) -> dict[str, torch.Tensor]:
    if spec.endswith((".pt", ".pth")):
        data = _load_file(spec, "--data", trust=False)
    elif spec.endswith(".npz"):
        _existing_file(spec, "--data", ".pt or .npz file")
        with np.load(spec, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    elif ":" in spec:
        data = _import_object(spec, "--data")()
    else:
        raise UsageError(f"--data: expected a .pt or .npz file or MODULE:FUNCTION, but got {spec!r}.")
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        data = dict(zip(("x", "y", "x_probe", "y_probe"), data, strict=False))
    if not isinstance(data, dict) or "x" not in data or "y" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"--data: expected keys 'x' and 'y' (optionally 'x_probe', 'y_probe'), but found {found}.")
    out = {}
    for key in ("x", "y", "x_probe", "y_probe"):
        if key in data:
            value = torch.as_tensor(np.asarray(data[key])) if not isinstance(data[key], torch.Tensor) else data[key]
            out[key] = value
    for xk, yk in (("x", "y"), ("x_probe", "y_probe")):
        if (xk in out) != (yk in out):
            raise UsageError(f"--data: '{xk}' and '{yk}' must come together, but only one of them is there.")
        if xk in out and out[xk].shape[0] != out[yk].shape[0]:
            raise UsageError(
                f"--data: '{xk}' has {out[xk].shape[0]} rows but '{yk}' has {out[yk].shape[0]}; they must match."
            )
    return out


def _probe(data: dict[str, torch.Tensor], size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str, bool]:
    generator = torch.Generator().manual_seed(seed)
    if "x_probe" in data:
        x, y = data["x_probe"], data["y_probe"]
        index = torch.randperm(x.shape[0], generator=generator)[:size]
        return x[index], y[index], f"x_probe ({min(size, x.shape[0])} of {x.shape[0]} points)", False
    x, y = data["x"], data["y"]
    index = torch.randperm(x.shape[0], generator=generator)[:size]
    return x[index], y[index], f"drawn from x ({min(size, x.shape[0])} of {x.shape[0]} points)", True


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


def _learning_curve(tracker: NTKTracker, args: argparse.Namespace, n_max: int, points: int) -> dict[str, Any]:
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


def _check_args(args: argparse.Namespace) -> None:
    """Every flag a mistake can be caught in without loading anything: one line, exit 2, before any kernel work."""
    if args.probe_size < 3:  # as NTKMonitor(probe_size=...): a smaller probe gives no spectrum or prediction
        raise UsageError(f"--probe-size: expected an int >= 3, but got {args.probe_size}. Use a few hundred points.")
    if args.train_size is not None and args.train_size < 1:
        raise UsageError(f"--train-size: expected a positive int, but got {args.train_size}.")
    if not math.isfinite(args.ridge) or args.ridge < 0:
        raise UsageError(f"--ridge: expected a finite number >= 0, but got {args.ridge}.")
    if args.top_k < 1:
        raise UsageError(f"--top-k: expected a positive int (modes reported per checkpoint), but got {args.top_k}.")
    if getattr(args, "n_points", 2) < 2:
        raise UsageError(f"--n-points: expected an int >= 2 (points of the learning curve), but got {args.n_points}.")
    if getattr(args, "n_max", None) is not None and args.n_max < 1:
        raise UsageError(f"--n-max: expected a positive int, but got {args.n_max}.")
    for flag, spec in (("--model", args.model), ("--lightning-module", args.lightning_module)):
        if spec is not None and (":" not in spec or not spec.rpartition(":")[0] or not spec.rpartition(":")[2]):
            raise UsageError(
                f"{flag}: expected MODULE:NAME with both parts (e.g. mypkg.models:make_net or "
                f"path/to/file.py:make_net), but got {spec!r}."
            )
    _check_out(args.out)


def _check_out(out: str) -> None:
    """``--out`` must name a directory that can be created or written, never the current one by accident."""
    if not out or not out.strip():
        raise UsageError("--out: expected a directory name, but got an empty string. Pass --out DIR.")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out: {out!r} is an existing file, not a directory. Pass a new or existing directory.")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out: {out!r} lies below the file {str(parent)!r}. Pass a directory path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out: {str(parent)!r} is not writable. Pass a directory you can write to.")


def _audit(args: argparse.Namespace, command: str) -> dict[str, Any]:
    _check_args(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device: cuda was asked for but torch sees no CUDA device. Use --device cpu.")
    checkpoints = []
    for path in args.checkpoint:
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
    timeline = checkpoints or [("initial model (--model factory)", None, {}, 0)]
    if checkpoints:
        _load_state(model, checkpoints[0][1], checkpoints[0][0])
    try:
        tracker = NTKTracker(
            model,
            (x_probe, y_probe),
            train_size,
            method=args.method,
            params=args.params,
            top_k=args.top_k,
            ridge=args.ridge,
            loss=args.loss,
        )
    except ModelCallError as err:
        raise UsageError(
            f"--data: the model from --model fails on the inputs of --data (x of shape {tuple(x_probe.shape)}): "
            f"{err.__cause__ or err}. Check that the data's feature size matches the model."
        ) from None
    entries = []
    for index, (path, state, _, step) in enumerate(timeline):
        step = int(step) if step is not None else index
        label = Path(path).name if state is not None else path
        start = time.perf_counter()
        if index == 0:
            _progress(f"[1/{len(timeline)}] reference kernel on {tracker.M} probe points: {label} ...")
            snapshot = tracker.reference(step=step)
        else:
            _load_state(model, state, path)
            _progress(f"[{index + 1}/{len(timeline)}] measuring {label} ...")
            snapshot = tracker.measure(step=step)
        _progress(f"    done in {time.perf_counter() - start:.1f} s")
        entries.append({"label": label, "step": step, "snapshot": snapshot.to_dict()})
    spectrum0 = tracker.spectrum0
    power = tracker.coefficients0.pow(2).sum(1)
    try:
        fit = spectrum0.power_law_fit(max(2, spectrum0.rank // 10), max(spectrum0.rank // 2, 3))
        power_law = {"c": fit.c, "alpha": fit.alpha, "r2": fit.r2}
    except InputError:
        power_law = None
    full_kernel = None
    if getattr(args, "mode", "trace") == "full":
        if checkpoints:
            _load_state(model, checkpoints[0][1], checkpoints[0][0])
        K = empirical_ntk(model, x_probe, mode="full", method=args.method, params=args.params)
        diagonal = torch.diagonal(K, dim1=2, dim2=3)
        full_kernel = {"offdiagonal_fraction": float((K - torch.diag_embed(diagonal)).norm() / K.norm())}
    distance = None
    if args.command == "audit" and len(entries) >= 2:
        distance = _distance_travelled(args, model, checkpoints, data, tracker, entries)
    n_max = getattr(args, "n_max", None) or 4 * max(train_size, tracker.M)
    curve = _learning_curve(tracker, args, n_max, getattr(args, "n_points", 25))
    last = tracker.history[-1]
    return {
        "kind": args.command,
        "command": command,
        "versions": _versions(),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": {
            "spec": args.model or args.lightning_module,
            "num_params": sum(p.numel() for p in model.parameters()),
            "num_outputs": tracker.num_outputs,
            "device": args.device,
            "kernel_method": args.method,
        },
        "probe": {"size": tracker.M, "source": source, "overlaps_training_data": overlaps, "train_size": train_size},
        "options": {
            "ridge": args.ridge,
            "mode": getattr(args, "mode", "trace"),
            "params": args.params,
            "top_k": args.top_k,
        },
        "spectrum0": {
            "eigenvalues": spectrum0.eigenvalues.tolist(),
            "target_power": power.tolist(),
            "effective_rank": spectrum0.effective_rank(),
            "participation_ratio": spectrum0.participation_ratio(),
            "power_law": power_law,
        },
        "timeline": entries if args.command == "audit" else [],
        "verdict": (last.verdict or None) if args.command == "audit" and len(entries) > 1 else None,
        "learning_curve": curve,
        "self_check": None if tracker.self_check is None else tracker.self_check.to_dict(),
        "weight_distance": distance,
        "full_kernel": full_kernel,
        "warnings": result_warnings,
        "_tracker": tracker,
    }


WEIGHT_DISTANCE_MAX_POINTS = 4096
"""The audit computes the predicted distance travelled on training sets of at most this many points (an
``n x n`` float64 kernel)."""


def _distance_travelled(
    args: argparse.Namespace,
    model: nn.Module,
    checkpoints: list[tuple],
    data: dict[str, torch.Tensor],
    tracker: NTKTracker,
    entries: list[dict[str, Any]],
) -> dict[str, Any]:
    """Predicted ``||w_inf - w_0||`` of the linearized network on the training data vs the measured distances."""
    x, y = data["x"], data["y"]
    n = int(x.shape[0])
    if n > WEIGHT_DISTANCE_MAX_POINTS:
        return {"note": f"not computed: {n} training points (at most {WEIGHT_DISTANCE_MAX_POINTS})"}
    _progress(f"distance travelled: kernel on the {n} training points ...")
    _load_state(model, checkpoints[0][1], checkpoints[0][0])
    K = empirical_ntk(model, x, method=args.method, params=args.params, dtype=torch.float64)
    target = NTKTracker(model, (x, y), n, method=args.method, params=args.params).target
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
    measured = [float(e["snapshot"]["parameter_change"] or 0.0) * norm0 for e in entries]
    return {
        "predicted": predicted,
        "measured": measured,
        "labels": [e["label"] for e in entries],
        "n": n,
        "ridge": args.ridge,
        "note": "the linearized network trained by gradient descent to convergence on the training data (or, with "
        "--ridge, to the ridge solution) travels sqrt((y - f0)^T K^-1 (y - f0)); a lazy network trained that long "
        "travels this far, one stopped early less",
    }


def _write_tensorboard(tracker: NTKTracker, out: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from .tensorboard import TensorBoardSink

    history = list(tracker.history)
    writer = SummaryWriter(str(out / "tensorboard"))
    sink = TensorBoardSink(writer, figures_every=0)
    try:
        for i in range(len(history)):
            tracker.history = history[: i + 1]
            sink.log(tracker, final=i == len(history) - 1)
    finally:
        tracker.history = history
        writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ntkmonitor`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Args:
        argv: command-line arguments without the program name.

    Returns:
        0 on success, 2 on bad input (a one-line message on stderr), 1 on an internal error.

    Example:
        >>> main(["audit", "--model", "no_such_module:make", "--data", "x.pt", "--out", "out"])  # doctest: +SKIP
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    command = "ntkmonitor " + shlex.join(argv)
    out = Path(args.out)
    mpl_dir = None
    try:
        if "MPLCONFIGDIR" not in os.environ:  # matplotlib's cache must not land outside --out
            mpl_dir = tempfile.TemporaryDirectory()
            os.environ["MPLCONFIGDIR"] = mpl_dir.name
        with warnings.catch_warnings():
            warnings.simplefilter("always", NTKMonitorWarning)
            result = _audit(args, command)
            tracker = result.pop("_tracker")
            out.mkdir(parents=True, exist_ok=True)
            from .report import format_summary, write_report

            if args.command == "audit":
                _write_tensorboard(tracker, out)
            paths = write_report(result, out)
        print(format_summary(result))
        print(f"\nreport: {paths['html']}\nnumbers: {paths['json']}")
        if args.command == "audit":
            print(f"tensorboard --logdir {out / 'tensorboard'}")
        return 0
    except UsageError as err:
        print(f"ntkmonitor {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (InputError, ModelCallError) as err:
        message = str(err).splitlines()[0]
        print(f"ntkmonitor {args.command}: error: {message}", file=sys.stderr)
        return 2
    except NTKMonitorError as err:
        print(f"ntkmonitor {args.command}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - an internal error: report it, exit 1
        import traceback

        traceback.print_exc()
        print(f"ntkmonitor {args.command}: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if mpl_dir is not None:
            os.environ.pop("MPLCONFIGDIR", None)
            mpl_dir.cleanup()


def run() -> None:
    """Console-script entry point: ``sys.exit(main())``."""
    sys.exit(main())
