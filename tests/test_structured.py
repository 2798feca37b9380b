"""``method="structured"`` against ``method="jacobian"`` on layers it factorizes and on its fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntkmonitor import empirical_ntk
from ntkmonitor._methods import attention as _attention
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


class AttentionNet(nn.Module):
    """``nn.MultiheadAttention`` in the ways models call it; inputs ``(n, L, 4)`` (plus masks in a dict).

    ``variant``: ``self`` (batch-first self-attention, ``need_weights`` default), ``seq_first``, ``cross`` (query
    and key/value from different tensors, one packed weight), ``kdim`` (separate projection weights), ``masks``
    (key padding and a causal bool mask), ``causal`` (``is_causal`` with its bool mask, no weights),
    ``weights`` (a causal float mask; the per-head attention weights feed the output).
    """

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        kdim = 3 if variant == "kdim" else None
        self.inp = nn.Linear(4, 4)
        self.kv = nn.Linear(4, 3 if variant == "kdim" else 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=variant != "seq_first", kdim=kdim, vdim=kdim)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        L = h.shape[1]
        v = self.variant
        if v == "seq_first":
            h = h.transpose(0, 1)
            out = self.attn(h, h, h)[0].transpose(0, 1)
        elif v in ("cross", "kdim"):
            kv = torch.tanh(self.kv(x))
            out = self.attn(h, kv, kv, need_weights=False)[0]
        elif v == "masks":
            causal = torch.ones(L, L, dtype=torch.bool).triu(1)
            out = self.attn(h, h, h, key_padding_mask=mask, attn_mask=causal)[0]
        elif v == "causal":
            causal = torch.ones(L, L, dtype=torch.bool).triu(1)
            out = self.attn(h, h, h, attn_mask=causal, is_causal=True, need_weights=False)[0]
        elif v == "weights":
            causal = nn.Transformer.generate_square_subsequent_mask(L, dtype=h.dtype)  # a float mask
            out, w = self.attn(h, h, h, attn_mask=causal, average_attn_weights=False)
            out = out + w.sum(1) @ h
        else:
            out = self.attn(h, h, h)[0]
        return self.head(torch.tanh(out)).mean(1)


class SDPANet(nn.Module):
    """Hand-written attention through ``F.scaled_dot_product_attention`` (as Hugging Face models call it), with an
    RMSNorm; ``variant``: ``mask`` (a boolean padding mask from the input), ``causal``, ``gqa`` (2 query heads share
    one key/value head)."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        kv = 2 if variant == "gqa" else 4
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, kv, bias=False), nn.Linear(4, kv)
        self.norm = nn.RMSNorm(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, L, _ = x.shape
        q = self.q(x).reshape(n, L, 2, 2).transpose(1, 2)
        k = self.k(x).reshape(n, L, -1, 2).transpose(1, 2)
        v = self.v(x).reshape(n, L, -1, 2).transpose(1, 2)
        if self.variant == "mask":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        elif self.variant == "causal":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
        else:
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.head(torch.tanh(self.norm(out.transpose(1, 2).reshape(n, L, 4)))).mean(1)


class MobileNetBlock(nn.Module):
    """MobileNet-style: 1x1 expansion, depthwise 3x3 (``groups = channels``), a grouped 3x3 conv (``groups=2``),
    BatchNorm in eval mode, a 1d depthwise convolution over rows."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(2, 4, 1)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.grouped = nn.Conv2d(4, 4, 3, stride=2, groups=2)
        self.row = nn.Conv1d(4, 8, 2, groups=4)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, 2, 5, 5)
        h = self.bn(self.depthwise(torch.tanh(self.expand(x))))
        h = torch.tanh(self.grouped(torch.relu(h)))  # (n, 4, 2, 2)
        return self.head(torch.tanh(self.row(h.flatten(2))).mean(-1))


class SharedPositions(nn.Module):
    """Position embeddings looked up with ids shared by every example, ``(1, L)`` (as Hugging Face models do);
    ``index=True`` then takes row 0 of the result, where a per-example lookup must not be assumed."""

    def __init__(self, index: bool) -> None:
        super().__init__()
        self.index = index
        self.tok, self.pos, self.head = nn.Embedding(10, 4), nn.Embedding(6, 4), nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = self.pos(torch.arange(ids.shape[1])[None])
        return self.head(torch.tanh(self.tok(ids) + (pos[0] if self.index else pos))).mean(1)


def _with_mask(x: torch.Tensor, g: torch.Generator) -> dict:
    """``{"x", "mask"}`` with a padding mask (``True``: padded) covering each sequence's tail."""
    n, L = x.shape[:2]
    lengths = torch.randint(2, L + 1, (n,), generator=g)
    return {"x": x, "mask": torch.arange(L)[None, :] >= lengths[:, None]}


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
    if kind.startswith("mha_"):
        variant = kind[4:]
        x1, x2 = torch.randn(5, 4, 4, generator=g), torch.randn(3, 4, 4, generator=g)
        if variant == "masks":
            x1, x2 = _with_mask(x1, g), _with_mask(x2, g)
        return AttentionNet(variant), x1, x2
    if kind.startswith("sdpa_"):
        variant = kind[5:]
        x1, x2 = torch.randn(5, 4, 4, generator=g), torch.randn(3, 4, 4, generator=g)
        if variant == "mask":  # SDPA's boolean mask: True = attended
            x1, x2 = _with_mask(x1, g), _with_mask(x2, g)
            x1["mask"], x2["mask"] = ~x1["mask"], ~x2["mask"]
        return SDPANet(variant), x1, x2
    if kind.startswith("positions"):
        ids = torch.randint(0, 10, (8, 6), generator=g)
        return SharedPositions(index=kind == "positions_indexed"), ids[:5], ids[5:]
    if kind == "mobilenet":
        model = MobileNetBlock()
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.5, 0.5, generator=g)
            model.bn.running_var.uniform_(0.5, 2.0, generator=g)
        return model.eval(), torch.randn(5, 2, 5, 5, generator=g), torch.randn(3, 2, 5, 5, generator=g)
    model, x1, x2, _, _ = models.make(kind)
    return model, x1, x2


ATTENTION_KINDS = [f"mha_{v}" for v in ("self", "seq_first", "cross", "kdim", "masks", "causal", "weights")] + [
    f"sdpa_{v}" for v in ("mask", "causal", "gqa")
]
KINDS = [
    "mlp",
    "cnn_bn_dropout",
    "transformer",
    "seq_linear",
    "conv1d",
    "conv2d",
    "embedding",
    "raw_and_tied",
    "mobilenet",
    "positions",
    "positions_indexed",
    *ATTENTION_KINDS,
]


@pytest.fixture(params=["auto", "factored", "explicit"])
def weight_form(request, monkeypatch):
    """Force every weight to be contracted factored or explicit (``auto``: by the cost model)."""
    if request.param != "auto":
        decide = _structured._decide

        def forced(problem, an):
            decide(problem, an)
            for info in an.structured.values():
                info.factored = (
                    request.param == "factored"
                    and info.role == "weight"
                    and info.kind in (_structured._FACTORED_KINDS)
                    and info.groups == 1
                )

        monkeypatch.setattr(_structured, "_decide", forced)
    return request.param


@pytest.mark.parametrize("symmetric", [True, False], ids=["x2=None", "x2!=x1"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_structured_equals_jacobian(kind, mode, symmetric, weight_form):
    model, x1, x2 = _make(kind)
    x2 = None if symmetric else x2
    # attention: "jacobian" runs SDPA through the same plain-math rewrite under vmap; the loop runs torch's own
    reference = "jacobian_loop" if kind in ATTENTION_KINDS else "jacobian"
    a = empirical_ntk(model, x1, x2, mode=mode, method=reference, dtype=torch.float64)
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

    an = analysis("transformer")  # nn.MultiheadAttention's projections are linear maps, examples first
    assert an.fallback == []
    for name in ("in_proj_weight", "out_proj.weight"):
        assert an.structured[f"encoder.layers.0.self_attn.{name}"].kind == "linear"
    assert an.structured["encoder.layers.0.self_attn.in_proj_weight"].d_out == 3 * 8
    assert an.structured["embed.weight"].kind == "embedding"
    assert an.structured["encoder.layers.0.norm1.weight"].kind == "layer_norm"
    an = analysis("raw_and_tied")
    assert sorted(an.fallback) == ["embed.weight", "scale"]
    an = analysis("cnn_bn_dropout")
    assert an.fallback == [] and an.structured["bn.weight"].kind == "batch_norm"


@pytest.mark.parametrize("kind", ATTENTION_KINDS + ["mobilenet"])
def test_nothing_falls_back(kind):
    """Attention (both layouts, masks, SDPA), RMSNorm and grouped convolutions are all structured."""
    an = _analysis_of(kind)
    unused = [] if kind in ("mha_cross", "mha_kdim") or not kind.startswith("mha_") else ["kv.bias", "kv.weight"]
    if kind == "mha_kdim":  # separate q/k/v weights share one bias, sliced in three: that bias falls back
        unused = ["attn.in_proj_bias"]
    assert sorted(an.fallback) == unused
    if kind == "mobilenet":
        assert an.structured["depthwise.weight"].groups == 4 and an.structured["row.weight"].groups == 4
    if kind.startswith("sdpa_"):
        assert an.structured["norm.weight"].kind == "rms_norm"


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_rewritten_attention_keeps_the_output(kind):
    """The examples-first attention computes the model's own function (float64, to rounding)."""
    model, x1, _ = _make(kind)
    model = model.double()
    x = (
        {k: (v.double() if v.is_floating_point() else v) for k, v in x1.items()}
        if isinstance(x1, dict)
        else x1.double()
    )

    def call():  # noqa: ANN202
        return model(**x) if isinstance(x, dict) else model(x)

    with torch.no_grad():
        expected = call()
        with _structured._Capture({}, 5):  # no parameter named: only the attention rewrite applies
            got = call()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def _analysis_of(kind):
    from ntkmonitor._functional import FunctionalModel
    from ntkmonitor._methods.request import KernelRequest
    from ntkmonitor.options import KernelMode

    model, x1, _ = _make(kind)
    fm = FunctionalModel(model)
    n = 5
    with fm.measuring():
        profile = fm.profile(x1, n)
    problem = KernelRequest(fm, x1, None, n, n, KernelMode.TRACE, profile, None, 1 << 30)
    return _structured._analysis(problem)


def test_shared_position_ids_are_structured_unless_the_result_mixes_examples():
    assert "pos.weight" in _analysis_of("positions").structured
    assert "pos.weight" in _analysis_of("positions_indexed").fallback  # pos[0]: checked, and exact by fallback


@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_queries_match_torch(need_weights):
    """A query whose keys are all masked: torch's attention gives 0 (NaN when it computes the weights)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 1, 3, 3, dtype=torch.bool)
    mask[0, :, 1] = False
    expected = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    torch.testing.assert_close(_attention.scaled_dot_product_attention(q, q, q, attn_mask=mask), expected)
    mha = nn.MultiheadAttention(4, 2, batch_first=True).double()
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    padding = torch.tensor([[True, True, True], [False, False, True]])
    with torch.no_grad():
        ref = mha(x, x, x, key_padding_mask=padding, need_weights=need_weights)[0]
        with _structured._Capture({}, 2):
            got = mha(x, x, x, key_padding_mask=padding, need_weights=need_weights)[0]
    torch.testing.assert_close(got, ref, equal_nan=True)
    assert bool(got[0].isnan().all()) == need_weights
