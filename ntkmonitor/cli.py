"""The ``ntkmonitor`` command line: ``ntkmonitor audit`` and ``ntkmonitor predict``.

``audit`` measures a saved model (one or several checkpoints, the first being the reference) against NTK
theory on a probe, without training; ``predict`` gives the learning curve the theory predicts at
initialization. Both write ``report.html``, ``report.json`` (and, for ``audit``, TensorBoard event files in
the callback's layout) into ``--out`` and print a summary. This module only parses the arguments, checks ``--out``
and maps errors to exit codes; :mod:`ntkmonitor.audit` computes, :mod:`ntkmonitor.report` and
:mod:`ntkmonitor.summary` render.

Exit codes: 0 success, 2 bad input (a one-line message naming the argument and the fix), 1 internal error.
Nothing outside ``--out`` is written.

Example:
    >>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import InputError, ModelCallError, NTKMonitorError, NTKMonitorWarning, UsageError
from .options import NTKMethod

__all__ = ["main", "run", "build_parser", "UsageError"]


# ---------------------------------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a mistake raises :class:`UsageError` instead of printing the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}. Run '{self.prog} --help' for the flags.")


_MAX_COUNT = 2**53
"""Counts above this are refused (float64 holds every integer up to it exactly)."""


def _count(text: str) -> int:
    """An integer flag value: ``1000``, ``1e6`` or ``1_000``; refused when not integral or beyond ``2^53``."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, but got {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"expected an integer, but got {text!r}")
    if abs(value) > _MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected an integer of at most 2^53 (about 9e15), but got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ntkmonitor`` (subcommands ``audit`` and ``predict``).

    Returns:
        An ``argparse.ArgumentParser``.

    Example:
        >>> args = build_parser().parse_args(["predict", "--model", "m:f", "--data", "d.pt", "--out", "o"])
        >>> args.command, args.probe_size
        ('predict', 256)
    """
    parser = _Parser(prog="ntkmonitor", description="Audit a saved model against Neural Tangent Kernel theory.")
    parser.add_argument("--version", action="version", version=f"ntkmonitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
        p.add_argument("--model", help="MODULE:FACTORY (or path/to/file.py:FACTORY) returning an nn.Module")
        p.add_argument(
            "--lightning-module", help="MODULE:CLASS of a LightningModule, built from the checkpoint's hyperparameters"
        )
        p.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            help=checkpoint_help,
        )
        p.add_argument(
            "--data",
            required=True,
            help=".pt/.npz file with x, y (optionally x_probe, y_probe), or MODULE:FUNCTION returning them",
        )
        p.add_argument("--probe-size", type=_count, default=256, help="probe points M (default 256)")
        p.add_argument("--train-size", type=_count, help="training-set size n (default: the number of rows of x)")
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
        p.add_argument("--top-k", type=_count, default=10, help="modes reported per measurement (default 10)")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to compute (default cpu)")
        p.add_argument("--seed", type=_count, default=0, help="seed of the probe draw (default 0)")
        p.add_argument(
            "--trust-checkpoint",
            action="store_true",
            help="allow full unpickling of checkpoints (runs code stored in the file: only for files you trust)",
        )
        p.add_argument("--out", required=True, help="output directory (created; nothing is written elsewhere)")
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="replace the report and TensorBoard files of an earlier run in --out (default: refuse)",
        )

    audit = sub.add_parser(
        "audit",
        help="measure checkpoints against the NTK: drift, spectrum, learnability",
        description=textwrap.fill(
            "Measure saved checkpoints against Neural Tangent Kernel theory on a probe: the kernel's drift from the "
            "first checkpoint (the reference), its spectrum, and predicted vs measured learnability. Writes "
            "report.html, report.json and TensorBoard logs into --out. No training happens.",
            100,
        ),
        epilog=(
            "example:\n  python -m ntkmonitor audit --model examples/lightning_quickstart.py:make_net \\\n"
            "      --checkpoint ntk_runs/init.pt --checkpoint ntk_runs/final.pt --data ntk_runs/data.pt --out ntk_audit"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(audit, "a state_dict or Lightning checkpoint; repeat for a timeline (the first is the reference)")
    audit.add_argument(
        "--mode",
        default="trace",
        choices=["trace", "full"],
        help="trace (default); full also reports how far K_full is from K_trace (x) I at the reference",
    )
    predict = sub.add_parser(
        "predict",
        help="predicted learning curve at initialization",
        description=textwrap.fill(
            "Predict, from the kernel of a model at its given parameters (no checkpoint: the factory's "
            "initialization), how well kernel regression with it learns the task from n examples: the "
            "eigenlearning learning curve with its intervals. Writes report.html and report.json into --out.",
            100,
        ),
        epilog=(
            "example:\n  python -m ntkmonitor predict --model examples/lightning_quickstart.py:make_net "
            "--data ntk_runs/data.pt --out ntk_predict"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(predict, "a state_dict or Lightning checkpoint to predict from (default: the factory's initialization)")
    predict.add_argument("--n-max", type=_count, help="largest n of the learning curve (default 4 max(n, M))")
    predict.add_argument("--n-points", type=_count, default=25, help="points of the log grid (default 25)")
    return parser


def _settings(args: argparse.Namespace, command_line: str):  # noqa: ANN202 - an AuditSettings
    """The parsed flags as checked :class:`~ntkmonitor.audit.AuditSettings` (a mistake: :class:`UsageError`)."""
    from .audit import AuditSettings

    return AuditSettings(
        command=args.command,
        data=args.data,
        model=args.model,
        lightning_module=args.lightning_module,
        checkpoints=tuple(args.checkpoint),
        probe_size=args.probe_size,
        train_size=args.train_size,
        method=args.method,
        params=args.params,
        ridge=args.ridge,
        loss=args.loss,
        top_k=args.top_k,
        device=args.device,
        seed=args.seed,
        trust_checkpoint=args.trust_checkpoint,
        mode=getattr(args, "mode", "trace"),
        n_max=getattr(args, "n_max", None),
        n_points=getattr(args, "n_points", 25),
        command_line=command_line,
    )


_OUTPUTS = ("report.json", "report.html", "tensorboard")
"""What a run writes into ``--out``; an earlier run's are replaced only with ``--overwrite``."""


def _check_out(out: str, overwrite: bool = False) -> None:
    """``--out`` must name a directory that can be created or written, never the current one by accident, and
    must not hold an earlier run's report unless ``--overwrite`` says to replace it."""
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
    for name in _OUTPUTS[:2]:
        if (path / name).is_dir() and not (path / name).is_symlink():
            raise UsageError(f"--out: {str(path / name)!r} is a directory where the report goes. Move it away.")
    earlier = [name for name in _OUTPUTS if os.path.lexists(path / name)]
    if earlier and not overwrite:
        raise UsageError(
            f"--out: {out!r} already holds {', '.join(earlier)} from an earlier run. Pass --overwrite to replace "
            "them, or a new --out directory."
        )


def _clear_previous(out: Path) -> None:
    """With ``--overwrite``: remove an earlier run's TensorBoard events (a link is removed, never followed).

    The report files are replaced atomically when written, so a run that fails keeps the earlier report.
    """
    board = out / "tensorboard"
    if board.is_symlink() or board.is_file():
        board.unlink()
    elif board.is_dir():
        for event in board.rglob("events.out.tfevents.*"):
            if event.is_file() or event.is_symlink():
                event.unlink()


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
    except SystemExit as exit_:  # --help, --version
        return int(exit_.code or 0)
    except UsageError as err:
        name = next((a for a in argv if a in ("audit", "predict")), "")
        print(f"ntkmonitor{' ' + name if name else ''}: error: {err}", file=sys.stderr)
        return 2
    command = "ntkmonitor " + shlex.join(argv)
    out = Path(args.out)
    mpl_dir = None
    try:
        if "MPLCONFIGDIR" not in os.environ:  # matplotlib's cache must not land outside --out
            mpl_dir = tempfile.TemporaryDirectory()
            os.environ["MPLCONFIGDIR"] = mpl_dir.name
        with warnings.catch_warnings():
            warnings.simplefilter("always", NTKMonitorWarning)
            _check_out(args.out, args.overwrite)
            settings = _settings(args, command)
            from .audit import run_audit, write_tensorboard

            audit = run_audit(settings)
            out.mkdir(parents=True, exist_ok=True)
            from .report import write_report
            from .summary import format_summary

            if args.overwrite:
                _clear_previous(out)
            if args.command == "audit":
                write_tensorboard(audit.tracker, out)
            paths = write_report(audit.result, out)
        print(format_summary(audit.result))
        print(f"\nreport: {paths['html']}\nnumbers: {paths['json']}")
        if args.command == "audit":
            board = shlex.join([sys.executable, "-m", "tensorboard.main", "--logdir", str(out / "tensorboard")])
            print(f"tensorboard: {board}")
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
