"""``method="structured"`` against ``method="jacobian"`` on layers it factorizes and on its fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntkmonitor import empirical_ntk
from ntkmonitor._methods import structured as _structured

from . import models
from .tolerances import METHOD_AGREEMENT_RTOL, rel_err

MODES = ["trace", "diagonal", "full"]


class SeqLinear(nn.Module):
    """Linear over sequences ``(n, S, d)``, mean over positions."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x))).mean(1)


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3, padding=1)
        self.c2 = nn.Conv1d(3, 3, 3, stride=2, dilation=2, padding="valid", bias=False)
        self.norm = nn.GroupNorm(3, 3)
        self.head = nn.Linear(3 * 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, 2, 9)
        h = self.norm(self.c2(torch.tanh(self.c1(x))))
        return self.head(torch.tanh(h).flatten(1))


class Conv2dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding="same", dilation=2)
        self.c2 = nn.Conv2d(3, 2, (2, 3), stride=(2, 1), padding=(1, 0))
        self.ln = nn.LayerNorm([2, 3, 3])
        self.head = nn.Linear(2 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, 2, 5, 5)
        return self.head(torch.tanh(self.ln(self.c2(torch.sin(self.c1(x))))).flatten(1))


class EmbedNet(nn.Module):
    """Embedding with a padding index -> Linear over positions -> mean."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4, padding_idx=0)
        self.lin = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(self.embed(ids))).mean(1)


class RawAndTied(nn.Module):
    """A raw parameter in ``forward`` and an embedding tied to the output layer (both fall back)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.scale = nn.Parameter(torch.randn(4))
        self.mid = nn.Linear(4, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.mid(self.embed(ids) * self.scale)).mean(1)
        return F.linear(h, self.embed.weight)  # (n, 7)


def _make(kind: str):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    if kind == "seq_linear":
        return SeqLinear(), torch.randn(5, 4, 4, generator=g), torch.randn(3, 4, 4, generator=g)
    if kind == "conv1d":
        return Conv1dNet(), torch.randn(5, 2, 9, generator=g), torch.randn(3, 2, 9, generator=g)
    if kind == "conv2d":
        return Conv2dNet(), torch.randn(5, 2, 5, 5, generator=g), torch.randn(3, 2, 5, 5, generator=g)
    if kind == "embedding":
        ids = torch.randint(0, 10, (8, 6), generator=g)
        ids[0, :2] = 0  # padding positions get no gradient
        return EmbedNet(), ids[:5], ids[5:]
    if kind == "raw_and_tied":
        ids = torch.randint(0, 7, (8, 5), generator=g)
        return RawAndTied(), ids[:5], ids[5:]
    model, x1, x2, _, _ = models.make(kind)
    return model, x1, x2


KINDS = ["mlp", "cnn_bn_dropout", "transformer", "seq_linear", "conv1d", "conv2d", "embedding", "raw_and_tied"]


@pytest.fixture(params=["auto", "factored", "explicit"])
def weight_form(request, monkeypatch):
    """Force every weight to be contracted factored or explicit (``auto``: by the cost model)."""
    if request.param != "auto":
        decide = _structured._decide

        def forced(problem, an):
            decide(problem, an)
            for info in an.structured.values():
                info.factored = (
                    request.param == "factored" and info.role == "weight" and info.kind in (_structured._FACTORED_KINDS)
                )

        monkeypatch.setattr(_structured, "_decide", forced)
    return request.param


@pytest.mark.parametrize("symmetric", [True, False], ids=["x2=None", "x2!=x1"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_structured_equals_jacobian(kind, mode, symmetric, weight_form):
    model, x1, x2 = _make(kind)
    x2 = None if symmetric else x2
    a = empirical_ntk(model, x1, x2, mode=mode, method="jacobian", dtype=torch.float64)
    b = empirical_ntk(model, x1, x2, mode=mode, method="structured", dtype=torch.float64)
    assert rel_err(b, a) <= METHOD_AGREEMENT_RTOL[torch.float64]
    c = empirical_ntk(model, x1, x2, mode=mode, method="structured", dtype=torch.float64, chunk_size=2)
    assert rel_err(c, a) <= METHOD_AGREEMENT_RTOL[torch.float64]


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("mlp", ["0.weight", "4"]),
        ("transformer", ["embed", "encoder.layers.0.linear1.weight", "encoder.layers.0.self_attn.out_proj"]),
        ("conv2d", ["c1.weight", "ln"]),
        ("raw_and_tied", ["scale", "mid.bias"]),
    ],
)
@pytest.mark.parametrize("mode", ["trace", "full"])
def test_structured_equals_jacobian_on_parameter_subsets(kind, params, mode, weight_form):
    model, x1, x2 = _make(kind)
    a = empirical_ntk(model, x1, x2, mode=mode, method="jacobian", params=params, dtype=torch.float64)
    b = empirical_ntk(model, x1, x2, mode=mode, method="structured", params=params, dtype=torch.float64, chunk_size=2)
    assert rel_err(b, a) <= METHOD_AGREEMENT_RTOL[torch.float64]


def test_structured_float32_agrees():
    model, x1, x2 = _make("seq_linear")
    a = empirical_ntk(model, x1, x2, mode="full", method="jacobian")
    b = empirical_ntk(model, x1, x2, mode="full", method="structured")
    assert b.dtype == torch.float32
    assert rel_err(b, a) <= METHOD_AGREEMENT_RTOL[torch.float32]


def test_fallback_parameters_are_detected():
    """Which parameters are factorized and which fall back to per-example Jacobians."""
    from ntkmonitor._functional import FunctionalModel
    from ntkmonitor._methods.request import KernelRequest
    from ntkmonitor.options import KernelMode

    def analysis(kind):
        model, x1, _ = _make(kind)
        fm = FunctionalModel(model)
        with fm.measuring():
            profile = fm.profile(x1, x1.shape[0])
        problem = KernelRequest(fm, x1, None, x1.shape[0], x1.shape[0], KernelMode.TRACE, profile, None, 1 << 30)
        return _structured._analysis(problem)

    an = analysis("transformer")
    assert sorted(an.fallback) == sorted(
        f"encoder.layers.0.self_attn.{n}"
        for n in ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    )
    assert an.structured["embed.weight"].kind == "embedding"
    assert an.structured["encoder.layers.0.norm1.weight"].kind == "layer_norm"
    an = analysis("raw_and_tied")
    assert sorted(an.fallback) == ["embed.weight", "scale"]
    an = analysis("cnn_bn_dropout")
    assert an.fallback == [] and an.structured["bn.weight"].kind == "batch_norm"
