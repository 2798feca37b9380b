"""Lightning quickstart: train an MLP with ``NTKMonitor`` and watch it in TensorBoard.

Run:
    python examples/lightning_quickstart.py                 # under a minute on 2 CPU cores
    python examples/lightning_quickstart.py --quick         # seconds (smoke test)
    python -m tensorboard.main --logdir ntk_runs            # then open the printed URL

A student MLP learns a random teacher network (regression, 1 output) on synthetic 16-d data with
plain SGD. The callback draws a probe from the validation set (256 points, more if the kernel is cheap),
measures the empirical NTK on it at a cadence that keeps its overhead under 5 %, and logs drift from the
lazy regime and predicted vs actual learnability, each prediction with its 90 % interval. Try
``--width 64`` for a narrow network that leaves the lazy regime.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ntkmonitor


class Regressor(pl.LightningModule):
    """A 2-hidden-layer ReLU MLP trained with MSE and plain SGD."""

    def __init__(self, width: int = 512, d: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
        )
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Progress(pl.Callback):
    """Prints a line every tenth of the training: epoch, training loss, NTK measurements so far, latest verdict."""

    def __init__(self, monitor: ntkmonitor.NTKMonitor | None, epochs: int) -> None:
        self.monitor, self.epochs, self.every = monitor, epochs, max(1, epochs // 10)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch != self.epochs:
            return
        loss = trainer.callback_metrics.get("train_loss")
        history = self.monitor.history if self.monitor is not None else []
        ntk = f", {len(history)} NTK measurements, verdict {history[-1].verdict}" if history else ""
        loss_text = f", train loss {float(loss):.4f}" if loss is not None else ""
        elapsed = time.perf_counter() - self.start
        print(f"  epoch {epoch:>4}/{self.epochs} ({elapsed:5.1f} s){loss_text}{ntk}", flush=True)


def runnable(*args: str) -> str:
    """A command line that runs as printed: this Python (relative to here when inside), then ``args``."""
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else sys.executable
    return shlex.join([python, *args])


def make_net(width: int = 512, d: int = 16) -> nn.Module:
    """The regressor's network alone: the factory for ``ntkmonitor audit --model ...:make_net``."""
    return Regressor(width=width, d=d).net


def make_data(n_train: int = 2048, n_val: int = 512, d: int = 16, seed: int = 0):
    """Inputs on the sphere and a random teacher network's outputs (unit variance)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, d, generator=g)
    x = x / x.norm(dim=1, keepdim=True) * d**0.5
    w1 = torch.randn(d, 64, generator=g) / d**0.5
    w2 = torch.randn(64, 1, generator=g) / 8
    y = torch.tanh(x @ w1) @ w2
    y = (y - y.mean()) / y.std()
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def train(
    width: int = 512,
    epochs: int = 250,
    monitor: ntkmonitor.NTKMonitor | None = None,
    out: str | None = None,
    seed: int = 0,
    n_train: int = 2048,
    save_for_audit: bool = False,
    progress: bool = False,
) -> tuple[Regressor, pl.Trainer]:
    """Train the regressor (with ``monitor`` if given); logs to TensorBoard under ``out`` if given.

    With ``save_for_audit``, also writes ``init.pt`` and ``final.pt`` (the network's state dicts with their training
    steps, ``{"state_dict": ..., "global_step": step}``) and
    ``data.pt`` (``x``, ``y`` training data and ``x_probe``, ``y_probe`` held-out data) into ``out``.
    """
    pl.seed_everything(seed, verbose=False)
    train_set, val_set = make_data(n_train=n_train)
    model = Regressor(width=width)
    if save_for_audit:
        Path(out).mkdir(parents=True, exist_ok=True)
        init = {k: v.clone() for k, v in model.net.state_dict().items()}
        torch.save({"state_dict": init, "global_step": 0}, Path(out) / "init.pt")
        data = {"x": train_set.tensors[0], "y": train_set.tensors[1]}
        torch.save({**data, "x_probe": val_set.tensors[0], "y_probe": val_set.tensors[1]}, Path(out) / "data.pt")
    logger = pl.loggers.TensorBoardLogger(out, name=f"width{width}") if out else False
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=logger,
        callbacks=([monitor] if monitor is not None else []) + ([Progress(monitor, epochs)] if progress else []),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    trainer.fit(
        model,
        DataLoader(train_set, batch_size=64, shuffle=True),
        DataLoader(val_set, batch_size=256),
    )
    if save_for_audit:
        torch.save({"state_dict": model.net.state_dict(), "global_step": trainer.global_step}, Path(out) / "final.pt")
    return model, trainer


def _quiet_lightning() -> None:
    """Lightning's start-up banners (GPU/TPU available, tips) and its end-of-fit line say nothing about this run."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning internals
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")  # --quick has few batches


def main(argv: list[str] | None = None) -> ntkmonitor.NTKMonitor:
    """Train with the callback, print a summary and the TensorBoard command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--out", default="ntk_runs", help="TensorBoard log directory (default ntk_runs)")
    parser.add_argument("--width", type=int, default=512, help="hidden width (default 512)")
    parser.add_argument("--epochs", type=int, default=250, help="training epochs (default 250)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    _quiet_lightning()
    width, epochs, n_train = (args.width, args.epochs, 2048) if not args.quick else (64, 2, 256)
    if "OMP_NUM_THREADS" not in os.environ:
        # a small model on a few shared cores: one thread is several times faster than torch's default pool
        torch.set_num_threads(1)
    monitor = ntkmonitor.NTKMonitor(lr="auto", loss="mse")
    print(f"training a width-{width} MLP for {epochs} epochs with NTKMonitor ({torch.get_num_threads()} thread(s))")
    start = time.perf_counter()
    train(
        width=width, epochs=epochs, monitor=monitor, out=args.out, n_train=n_train, save_for_audit=True, progress=True
    )
    seconds = time.perf_counter() - start
    last = monitor.history[-1]
    measured = sum(s.seconds for s in monitor.history)
    print(f"trained width {width} for {epochs} epochs in {seconds:.1f} s; {len(monitor.history)} NTK measurements")
    print(
        f"  measurements took {measured:.1f} s ({100 * measured / seconds:.1f}% of the run), figures "
        f"{monitor.figure_seconds:.1f} s ({100 * monitor.figure_seconds / seconds:.1f}%)"
    )
    print(f"  verdict at step {last.step}: {last.verdict} (kernel distance {last.kernel_distance:.3g})")
    print(
        f"  learnability on the {monitor.tracker.M}-point probe: actual {last.learnability_actual:.3f}; predicted "
        f"from the initial kernel {last.learnability_predicted_init:.3f} "
        f"[{last.learnability_predicted_init_lower:.3f}, {last.learnability_predicted_init_upper:.3f}], "
        f"from the current kernel {last.learnability_predicted_current:.3f}"
    )
    print(
        f"  test MSE on the probe: actual {last.test_mse_actual:.4f}; predicted {last.test_mse_predicted_init:.4f} "
        f"[{last.test_mse_predicted_init_lower:.4f}, {last.test_mse_predicted_init_upper:.4f}] (90 % interval)"
    )
    print(f"  how: {last.prediction_note}")
    print(
        f"  ridge of the predictions: {last.ridge:.3g} (finite-time, from the learning rate and the step; "
        "`ntkmonitor audit` predicts the converged network, --ridge 0, so its predicted numbers differ)"
    )
    tensorboard = runnable("-m", "tensorboard.main", "--logdir", args.out)
    print(f"\nSee it in TensorBoard (then open http://localhost:6006):\n  {tensorboard}")
    audit = [
        "-m",
        "ntkmonitor",
        "audit",
        "--model",
        "examples/lightning_quickstart.py:make_net",
        "--checkpoint",
        f"{args.out}/init.pt",
        "--checkpoint",
        f"{args.out}/final.pt",
        "--data",
        f"{args.out}/data.pt",
        "--out",
        "ntk_audit",
    ]
    print(f"Audit the saved checkpoints without training:\n  {runnable(*audit)}")
    return monitor


if __name__ == "__main__":
    main()
