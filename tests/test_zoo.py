"""The models researchers train, built from tiny configs (no downloads), through every kernel method.

Each model is checked against the independent float64 per-example autograd reference (:mod:`tests.reference`):
every method either matches it or is refused with an :class:`~ntkmonitor.NTKMonitorError` that names the way
around, and ``method="auto"`` always works (falling back, with a warning naming the method in use, where the
cheaper methods cannot run the model). Models that mix the examples of a batch are refused.
"""

from __future__ import annotations

import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
import transformers  # the dev extra installs it: these tests always run
from torch import nn

import ntkmonitor
from ntkmonitor import empirical_ntk
from ntkmonitor.kernel import method_report

from . import reference
from .tolerances import KERNEL_RTOL, rel_err

# torch.func falls back to a slow loop for some batching rules (LSTM, weight_norm) and says so
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

METHODS = ["jacobian", "ntk_vp", "structured", "jacobian_loop"]


# ---------------------------------------------------------------------------------------------------- models
def _ids(n: int, seq: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    mask[1, seq - 2 :] = 0  # a padded example
    return {"input_ids": ids, "attention_mask": mask}


def tiny_bert_config(**extra) -> transformers.BertConfig:
    """A one-layer BERT small enough for the tests (no download)."""
    return transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=12,
        **extra,
    )


def bert():
    torch.manual_seed(0)
    return transformers.BertModel(tiny_bert_config()), _ids(3, 6, 40, 1), lambda out: out.last_hidden_state[:, 0, :3]


def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=12, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2Model(config), _ids(3, 6, 40, 2), lambda out: out.last_hidden_state[:, -1, :3]


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(4, 6, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def recurrent(cell):
    def make():
        torch.manual_seed(0)
        return Recurrent(cell), torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(3)), None

    return make


def parametrized(kind: str):
    def make():
        torch.manual_seed(0)
        wrap = getattr(nn.utils.parametrizations, kind)
        model = nn.Sequential(wrap(nn.Linear(5, 8)), nn.Tanh(), wrap(nn.Linear(8, 2)))
        return model, torch.randn(3, 5, generator=torch.Generator().manual_seed(4)), None

    return make


class Block(nn.Module):
    """A torchvision-style basic residual block, with a stride-2 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.short(x))


def resnet():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, 1, 1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        Block(4, 6, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5)), None


class ViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 5, 8) * 0.1)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        return self.head(self.encoder(tokens)[:, 0])


def vit():
    torch.manual_seed(0)
    return ViT(), torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(6)), None


class Adapter(nn.Module):
    """A frozen base layer with a LoRA-style adapter whose ``B`` starts at zero."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(6, 3)
        self.base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(2, 6) * 0.3)
        self.B = nn.Parameter(torch.zeros(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.A.T @ self.B.T


def adapter():
    torch.manual_seed(0)
    return Adapter(), torch.randn(3, 6, generator=torch.Generator().manual_seed(7)), None


ZOO = {
    "bert_mask": bert,
    "gpt2_mask": gpt2,
    "rnn": recurrent(nn.RNN),
    "gru": recurrent(nn.GRU),
    "lstm": recurrent(nn.LSTM),
    "weight_norm": parametrized("weight_norm"),
    "spectral_norm": parametrized("spectral_norm"),
    "resnet": resnet,
    "vit": vit,
    "zero_adapter": adapter,
}


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ntkmonitor.NTKMonitorWarning)
        return fn()


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_the_reference_or_refuses_clearly(name, method):
    model, x, output_fn = ZOO[name]()
    expected = reference.kernel(model, x, output_fn=output_fn)
    try:
        K = empirical_ntk(model, x, method=method, output_fn=output_fn, dtype=torch.float64)
    except ntkmonitor.NTKMonitorError as err:  # refused: the message names the way around
        assert "method='auto'" in str(err) and "jacobian_loop" in str(err)
        assert method in ("jacobian", "structured", "ntk_vp")
        return
    assert rel_err(K, expected) <= KERNEL_RTOL[torch.float64], name


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_auto_always_works_and_keeps_its_reasons(name, dtype):
    model, x, output_fn = ZOO[name]()
    expected = reference.kernel(model, x, output_fn=output_fn)
    K = _quiet(lambda: empirical_ntk(model, x, output_fn=output_fn, dtype=dtype))
    assert K.dtype == dtype and float(K.abs().max()) > 0
    assert rel_err(K, expected) <= KERNEL_RTOL[dtype], name
    (choice,) = method_report(model)
    for skipped, why in choice.skipped.items():
        assert why, skipped  # every skipped method keeps its reason


@pytest.mark.parametrize(("name", "dtype"), [("lstm", torch.float32), ("weight_norm", torch.float64)])
def test_auto_warns_with_the_method_in_use_and_why(name, dtype):
    """Forward-mode AD has no rule for ``mkldnn_rnn_layer`` (float32 LSTM) or ``_weight_norm_interface``: auto
    skips ``ntk_vp`` and says so, once per model and kind of request."""
    model, x, output_fn = ZOO[name]()
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match=r"using '\w+'.*'ntk_vp' failed \(NotImplementedError"):
        empirical_ntk(model, x, output_fn=output_fn, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ntkmonitor.NTKMonitorWarning)
        empirical_ntk(model, x, output_fn=output_fn, dtype=dtype)


def test_auto_falls_back_when_a_method_passes_the_trial_but_fails_the_request(monkeypatch):
    from ntkmonitor import kernel
    from ntkmonitor.options import NTKMethod

    model, x, _ = ZOO["resnet"]()
    reference_kernel = reference.kernel(model, x)
    calls = []

    class Fragile:
        def __init__(self, impl):
            self.impl = impl

        def cost(self, problem):
            return 0.0  # always the cheapest

        def compute(self, problem):
            calls.append(problem.n1)
            if problem.n1 > 2:
                raise RuntimeError("fails beyond two examples")
            return self.impl.compute(problem)

    monkeypatch.setitem(kernel._METHODS, NTKMethod.JACOBIAN, Fragile(kernel._METHODS[NTKMethod.JACOBIAN]))
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="'jacobian' failed"):
        K = empirical_ntk(model, x, dtype=torch.float64)
    assert calls == [2, 3]  # passed the two-example trial, failed on all three examples
    assert rel_err(K, reference_kernel) <= KERNEL_RTOL[torch.float64]
    (choice,) = method_report(model)
    assert choice.method is not NTKMethod.JACOBIAN and "beyond two examples" in choice.skipped["jacobian"]


class SequenceFirstAttention(nn.Module):
    """``nn.MultiheadAttention(batch_first=False)`` called on ``(batch, seq, d)``: attends across the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0].mean(1)


class Centering(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x - x.mean(0))


@pytest.mark.parametrize(
    ("model", "x"), [(SequenceFirstAttention(), torch.randn(3, 5, 8)), (Centering(), torch.randn(4, 4))]
)
@pytest.mark.parametrize("method", ["auto", *METHODS])
def test_a_model_that_mixes_examples_is_refused(model, x, method):
    with pytest.raises(ntkmonitor.ModelOutputError, match="independent.*batch dimension comes first"):
        empirical_ntk(model, x, method=method)


def test_zoo_models_have_no_side_effects():
    for name, make in ZOO.items():
        model, x, output_fn = make()
        model.train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        flags = [m.training for m in model.modules()]
        rng = torch.get_rng_state()
        _quiet(lambda model=model, x=x, output_fn=output_fn: empirical_ntk(model, x, output_fn=output_fn))
        assert torch.equal(torch.get_rng_state(), rng), name
        assert [m.training for m in model.modules()] == flags, name
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), (name, key)
        assert all(p.grad is None for p in model.parameters()), name


def test_tracker_on_a_zero_initialized_adapter_measures_with_nan_where_undefined():
    """Parameters that are all zero at init (LoRA's B): the relative parameter change is undefined (nan), and
    the measurement goes on."""
    model, x, _ = adapter()
    tracker = ntkmonitor.NTKTracker(model, (x, x[:, :3]), train_size=50, params=["B"])
    snap = tracker.reference()
    assert math.isnan(snap.parameter_change) and snap.kernel_distance == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        model.B.add_(0.1)
    later = tracker.measure(step=1)
    assert math.isnan(later.parameter_change)
    assert later.kernel_distance >= 0


# ---------------------------------------------------------------------------------------------------- compile
def _compiled_training(measure: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 2))
    model = torch.compile(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 2, generator=g)
    K = None
    for step in range(8):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if measure and step % 3 == 0:
            K = empirical_ntk(model, x[:6])  # the compiled wrapper, as a user passes it
    if measure:
        K = empirical_ntk(model, x[:6])  # at the final weights
    return [p.detach().clone() for p in net.parameters()], K


def test_a_compiled_model_trains_bit_identically_while_its_kernel_is_measured():
    """Measuring ``torch.compile(net)`` runs ``net`` eagerly: the compiled graphs training uses are untouched
    (before, the weights differed by 3e-8 after 10 steps) and the kernel is the uncompiled network's."""
    plain, _ = _compiled_training(measure=False)
    measured, K = _compiled_training(measure=True)
    for a, b in zip(plain, measured, strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    twin = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 2))
    for p, value in zip(twin.parameters(), measured, strict=True):
        p.data.copy_(value)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))[:6]
    assert rel_err(K, reference.kernel(twin, x)) <= KERNEL_RTOL[torch.float32]


class CompiledModule(pl.LightningModule):
    """A LightningModule whose network is ``torch.compile``'d (a nested compiled submodule)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.compile(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_a_compiled_lightning_module_trains_bit_identically_with_the_callback():
    from . import lightning_models as lm

    def fit(callback):
        pl.seed_everything(0, verbose=False)
        module = CompiledModule()
        train, val = lm.loaders("mlp")
        trainer = lm.trainer(None, callbacks=[callback] if callback else [], max_steps=8)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            trainer.fit(module, train, val)
        return module

    plain = fit(None)
    monitor = ntkmonitor.NTKMonitor(every_n_steps=3, probe_size=16)
    monitored = fit(monitor)
    assert [s.step for s in monitor.history] == [0, 3, 6, 8] and monitor.history[-1].kernel_distance > 0
    for name, value in plain.state_dict().items():
        assert torch.equal(value, monitored.state_dict()[name]), name


@pytest.mark.parametrize(
    ("x", "y"),
    [(torch.randn(12, 4), torch.ones(12)), (torch.randn(3, 4), torch.randn(3))],
    ids=["constant_target", "three_point_probe"],
)
def test_undefined_metrics_are_nan_never_a_failed_measurement(x, y):
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    tracker = ntkmonitor.NTKTracker(model, (x, y), train_size=20)
    tracker.reference()
    with torch.no_grad():
        model[2].bias.add_(0.5)
    snap = tracker.measure(step=1)  # no exception
    if float(y.std()) == 0:
        assert math.isnan(snap.kernel_alignment)
    assert snap.kernel_distance >= 0 and math.isfinite(snap.learnability_actual)


# ---------------------------------------------------------------------------------------------------- callback
class TokenDataset(torch.utils.data.Dataset):
    """Hugging Face-style items: dicts with ``input_ids``, ``attention_mask`` and ``labels``."""

    def __init__(self, n: int, seed: int) -> None:
        self.items = _ids(n, 6, 40, seed)
        self.items["attention_mask"][:, -1] = torch.arange(n) % 2  # some padded examples
        self.labels = self.items["input_ids"][:, 0] % 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> transformers.BatchEncoding:  # what a tokenizer returns: a Mapping
        item = {"input_ids": self.items["input_ids"][i], "attention_mask": self.items["attention_mask"][i]}
        return transformers.BatchEncoding({**item, "labels": self.labels[i]})


class BertClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = transformers.BertForSequenceClassification(tiny_bert_config(num_labels=3))

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        return nn.functional.cross_entropy(logits, batch["labels"])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_callback_on_a_bert_classifier_with_dict_batches_logs_scale_free_numbers(tmp_path):
    """Hugging Face-style dict batches, attention masks, cross-entropy: the callback measures (auto falls back
    where vmap cannot batch), logs the ntk/ keys, and labels the MSE theory for what it is."""
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from . import lightning_models as lm

    monitor = ntkmonitor.NTKMonitor(every_n_steps=4, loss="cross_entropy", strict=True)
    trainer = lm.trainer(tmp_path, callbacks=[monitor], max_steps=8, logger=CSVLogger(tmp_path, name="csv"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.simplefilter("ignore", ntkmonitor.NTKMonitorWarning)  # auto's fallback notice
        trainer.fit(BertClassifier(), DataLoader(TokenDataset(32, 1), batch_size=8), DataLoader(TokenDataset(24, 2)))
    history = monitor.history
    assert [s.step for s in history] == [0, 4, 8] and monitor.tracker.M == 24
    last = history[-1]
    assert -1 <= last.function_alignment <= 1 and last.kernel_distance > 0
    assert "cross-entropy" in last.prediction_note and "function_alignment" in last.prediction_note
    (metrics,) = tmp_path.rglob("metrics.csv")
    header = metrics.read_text().splitlines()[0]
    assert "ntk/learnability/function_alignment" in header and "ntk/drift/kernel_distance" in header


def test_outputs_at_the_wrong_scale_for_a_squared_loss_are_explained():
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    x, labels = torch.randn(20, 4), torch.randint(0, 2, (20,))
    tracker = ntkmonitor.NTKTracker(model, (x, labels), train_size=100)
    tracker.reference()
    with torch.no_grad():
        model[2].weight.mul_(40.0)  # logits far beyond the one-hot targets, as cross-entropy makes them
    snap = tracker.measure(step=5)
    assert "larger than the target" in snap.prediction_note and "loss='cross_entropy'" in snap.prediction_note


def test_a_bad_request_raises_once_and_leaves_the_method_choice_alone():
    """Regression (review): an input every method fails on beyond the two-example trial (a token id out of range
    in the third example) made auto alternate between methods forever."""
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(16, 2))
    good = torch.randint(0, 10, (4, 2), generator=torch.Generator().manual_seed(0))
    _quiet(lambda: empirical_ntk(model, good))
    (before,) = method_report(model)
    bad = good.clone()
    bad[3, 0] = 10
    with pytest.raises(ntkmonitor.NTKMonitorError, match="every method that runs two of its examples failed"):
        _quiet(lambda: empirical_ntk(model, bad))
    assert method_report(model) == [before]


def test_batch_dependent_output_shapes_are_refused_with_the_shape():
    class Squeezing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x).squeeze()  # (n,) for n > 1, () for n = 1

    class Padding(nn.Module):  # pads to the longest example in the batch
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x[:, : int((x != 0).sum(1).max()), None]).flatten(1)

    with pytest.raises(ntkmonitor.ModelOutputError):
        empirical_ntk(Squeezing(), torch.randn(4, 3))
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0], [2.0, 1.0, 0.0]])
    with pytest.raises(ntkmonitor.ModelOutputError, match="one shape whatever the batch size"):
        empirical_ntk(Padding(), x)


def test_compiled_model_with_its_own_parameter_names():
    """Regression (review): a user's parameter dict of torch.compile(net) carries '_orig_mod.' names."""
    torch.manual_seed(0)
    model = torch.compile(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
    x = torch.randn(6, 4)
    p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    pt = {n: p + 0.01 for n, p in p0.items()}
    plain = (
        {k.removeprefix("_orig_mod."): v for k, v in p0.items()},
        {k.removeprefix("_orig_mod."): v for k, v in pt.items()},
    )
    expected = ntkmonitor.linearization_error(model._orig_mod, *plain, x)
    assert ntkmonitor.linearization_error(model, p0, pt, x) == pytest.approx(expected, rel=1e-12)
    _quiet(lambda: empirical_ntk(model, x))
    assert len(method_report(model)) == 1


def test_per_mode_relative_learnability_is_scale_free():
    """Per mode, (v_hat_i / v_i) / L: the same when the learned function is scaled, as cross-entropy scales logits
    (checked against the projections computed here)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 2))
    x, labels = torch.randn(40, 4), torch.randint(0, 2, (40,))
    tracker = ntkmonitor.NTKTracker(model, (x, labels), train_size=100, loss="cross_entropy", top_k=4)
    tracker.reference()
    with torch.no_grad():
        model[2].weight.add_(0.3 * torch.randn(2, 32))
    snap = tracker.measure(step=1)
    with torch.no_grad():
        f_hat = model(x).double() - tracker.f0
    y = tracker.target
    v, v_hat = tracker.spectrum0.project(y), tracker.spectrum0.project(f_hat)
    overall = float((y * f_hat).sum() / y.pow(2).sum())
    for i, value in zip(snap.mode_indices, snap.mode_learnability_relative, strict=True):
        expected = float((v_hat[i] * v[i]).sum() / v[i].pow(2).sum()) / overall
        assert value == pytest.approx(expected, rel=1e-6) or (math.isnan(value) and v[i].norm() < 0.01 * v.norm())


def test_auto_ranks_by_the_cost_of_each_request_not_the_first_one():
    """Regression: the tracker's warm-up on two examples fixed the method for every later request, so the probe's
    256-point kernels ran 10x slower (ntk_vp instead of structured)."""
    from ntkmonitor.options import NTKMethod

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 1))
    x = torch.randn(256, 16)
    empirical_ntk(model, x[:2])
    small = method_report(model)[0].method
    empirical_ntk(model, x)
    assert method_report(model)[0].method is NTKMethod.STRUCTURED  # the cost model's pick at n = 256
    assert small is not None
