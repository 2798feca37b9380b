"""Tiny LightningModules and data for the callback tests (CPU, a few seconds each)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def regression_data(n: int = 96, d: int = 6, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Train and validation sets of a smooth 2-output regression problem."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 48, d, generator=g)
    y = torch.stack([torch.sin(x[:, 0]), torch.cos(x[:, 1] * x[:, 2])], dim=1)
    return TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:])


def image_data(n: int = 64, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Tiny 1x6x6 images with integer labels in 0..2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 32, 1, 6, 6, generator=g)
    labels = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return TensorDataset(x[:n], labels[:n]), TensorDataset(x[n:], labels[n:])


class MLPModule(pl.LightningModule):
    """MLP with dropout, MSE loss, SGD."""

    def __init__(self, lr: float = 0.05, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, width), nn.Tanh(), nn.Dropout(0.2), nn.Linear(width, 2))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class CNNModule(pl.LightningModule):
    """Conv + BatchNorm + dropout classifier, cross-entropy, SGD with momentum."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Flatten(),
            nn.Linear(4 * 36, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loaders(kind: str, batch_size: int = 16, shuffle: bool = True) -> tuple[DataLoader, DataLoader]:
    train, val = regression_data() if kind == "mlp" else image_data()
    return DataLoader(train, batch_size=batch_size, shuffle=shuffle), DataLoader(val, batch_size=32)


def module(kind: str) -> pl.LightningModule:
    return MLPModule() if kind == "mlp" else CNNModule()


def trainer(tmp_path=None, **kwargs) -> pl.Trainer:
    """A quiet CPU Trainer."""
    options = dict(
        accelerator="cpu",
        devices=1,
        max_steps=12,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path) if tmp_path is not None else None,
    )
    options.update(kwargs)
    return pl.Trainer(**options)
