"""Small models of every kind the kernel must handle, and their inputs.

Each factory returns ``(model, x1, x2, output_fn)`` with a fixed seed; ``x1`` has 5 examples and
``x2`` 3. Model kinds: MLP, CNN with BatchNorm and dropout, a Transformer encoder over token ids,
a scalar-output model, a model with frozen layers, a model with tied weights, tuple and dict inputs,
and a dict output selected with ``output_fn``.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(seed: int = 0, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, k))


class CNN(nn.Module):
    """Conv -> BatchNorm -> ReLU -> Dropout -> Linear; running statistics made non-trivial."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.head(h.flatten(1))


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = CNN()
    model.train()
    with torch.no_grad():  # move the running statistics away from (0, 1)
        for _ in range(3):
            model(torch.randn(8, 2, 5, 5) * 2 + 1)
    return model


class TokenTransformer(nn.Module):
    """Embedding -> one TransformerEncoderLayer (with dropout) -> mean pool -> Linear(2)."""

    def __init__(self, vocab: int = 20, d: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=16, dropout=0.1, batch_first=True),
            num_layers=1,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(d, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)).mean(1))


class ScalarNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)  # (n,)


class TiedNet(nn.Module):
    """The same Linear used twice: its gradient is the sum of both uses."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.inp(torch.tanh(self.inp(x)))))


class TiedPaddingLM(nn.Module):
    """Token embedding with ``padding_idx``, tied to the bias-free output layer (a language model's head).

    The backward pass gives the padding row no gradient through the embedding, but the forward pass reads it:
    forward- and reverse-mode derivatives differ unless the padding positions carry no tangent.
    """

    def __init__(self, vocab: int = 5, dim: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mix(self.emb(ids)))).mean(1)


class TwoInputNet(nn.Module):
    """``forward(a, b)``: positional inputs (a tuple batch) or keywords (a dict batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(2, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.a(a) + self.b(b)))


class DictOutputNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> dict:
        h = torch.sin(self.body(x))
        return {"logits": h, "count": torch.tensor(3)}


def _x(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g)


def make(kind: str):
    """``(model, x1, x2, output_fn, params)`` for a model kind."""
    g = torch.Generator().manual_seed(1)
    if kind == "mlp":
        return mlp(), _x(5, 1), _x(3, 2), None, None
    if kind == "cnn_bn_dropout":
        return cnn(), torch.randn(5, 2, 5, 5, generator=g), torch.randn(3, 2, 5, 5, generator=g), None, None
    if kind == "transformer":
        torch.manual_seed(0)
        return (
            TokenTransformer(),
            torch.randint(0, 20, (5, 7), generator=g),
            torch.randint(0, 20, (3, 7), generator=g),
            None,
            None,
        )
    if kind == "scalar":
        torch.manual_seed(0)
        return ScalarNet(), _x(5, 1), _x(3, 2), None, None
    if kind == "frozen":
        model = mlp()
        model[0].requires_grad_(False)
        return model, _x(5, 1), _x(3, 2), None, None
    if kind == "subset":
        return mlp(), _x(5, 1), _x(3, 2), None, ["0", "4.weight"]
    if kind == "tied":
        torch.manual_seed(0)
        return TiedNet(), _x(5, 1), _x(3, 2), None, None
    if kind == "tied_padding":
        torch.manual_seed(0)
        ids = torch.randint(1, 5, (8, 4), generator=g)
        ids[::2, -1] = 0  # padding at the end of every other sequence
        ids[1, 0] = 0
        return TiedPaddingLM(), ids[:5], ids[5:], None, None
    if kind == "tuple_input":
        torch.manual_seed(0)
        a, b = torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)
        return TwoInputNet(), (a[:5], b[:5]), (a[5:], b[5:]), None, None
    if kind == "dict_input":
        torch.manual_seed(0)
        a, b = torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)
        return TwoInputNet(), {"a": a[:5], "b": b[:5]}, {"a": a[5:], "b": b[5:]}, None, None
    if kind == "dict_output":
        torch.manual_seed(0)
        return DictOutputNet(), _x(5, 1), _x(3, 2), (lambda out: out["logits"]), None
    raise KeyError(kind)


KINDS = [
    "mlp",
    "cnn_bn_dropout",
    "transformer",
    "scalar",
    "frozen",
    "subset",
    "tied",
    "tied_padding",
    "tuple_input",
    "dict_input",
    "dict_output",
]
