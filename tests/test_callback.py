"""The Lightning callback: no effect on training, correct kernel, resume, loggers, failures, DDP."""

from __future__ import annotations

import copy
import csv
import json
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

import ntkmonitor
from ntkmonitor import NTKMonitor

from . import lightning_models as lm
from .tolerances import CALLBACK_KERNEL_RTOL, rel_err


def _fit(kind: str, callback=None, seed: int = 0, tmp_path=None, val: bool = True, **trainer_kwargs):
    pl.seed_everything(seed, verbose=False)
    module = lm.module(kind)
    initial = copy.deepcopy(module)
    train, val_loader = lm.loaders(kind)
    trainer = lm.trainer(tmp_path, callbacks=[callback] if callback else [], **trainer_kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*too few.*")
        trainer.fit(module, train, val_loader if val else None)
    return module, initial, trainer


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_training_is_bit_identical_with_and_without_the_callback(kind):
    plain, _, _ = _fit(kind)
    monitor = NTKMonitor(every_n_steps=3, probe_size=24)
    monitored, _, _ = _fit(kind, monitor)
    assert len(monitor.history) == 5  # reference + steps 3, 6, 9, 12
    state_a, state_b = plain.state_dict(), monitored.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), f"{name} differs"


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_callback_kernel_is_nonzero_and_matches_empirical_ntk(kind):
    monitor = NTKMonitor(every_n_steps=4, probe_size=20)
    trained, initial, _ = _fit(kind, monitor)
    tracker = monitor.tracker
    K0 = ntkmonitor.empirical_ntk(initial, tracker.x)
    assert torch.linalg.vector_norm(tracker.K0) > 0
    assert rel_err(tracker.K0, K0) <= CALLBACK_KERNEL_RTOL
    K_final = ntkmonitor.empirical_ntk(trained, tracker.x).double()
    final = monitor.history[-1]
    assert final.step == 12
    expected = torch.linalg.eigvalsh(K_final).flip(0)[: len(final.top_eigenvalues)] / K_final.shape[0]
    assert rel_err(torch.tensor(final.top_eigenvalues), expected) <= CALLBACK_KERNEL_RTOL
    assert final.kernel_distance > 0  # the network trained and its kernel moved
    k = min(len(final.top_eigenvalues), K_final.shape[0] - 1)
    overlap = ntkmonitor.drift.eigenspace_overlap(K0.double(), K_final, k)  # the tracker reuses its spectra
    assert final.eigenspace_overlap == pytest.approx(overlap, abs=CALLBACK_KERNEL_RTOL)


def test_probe_comes_from_validation_data_and_integer_labels_become_one_hot():
    monitor = NTKMonitor(every_n_steps=6, probe_size=16, seed=3)
    _fit("cnn", monitor)
    _, val = lm.image_data()
    index = torch.randperm(len(val), generator=torch.Generator().manual_seed(3))[:16]
    assert torch.equal(monitor.tracker.x, val.tensors[0][index])
    assert torch.equal(monitor.tracker.target, torch.nn.functional.one_hot(val.tensors[1][index], 3).double())
    assert monitor.tracker.train_size == 64


def test_probe_falls_back_to_training_data_with_a_warning():
    monitor = NTKMonitor(every_n_steps=6, probe_size=16)
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="inflated by memorization"):
        _fit("mlp", monitor, val=False)
    assert len(monitor.history) == 3


def test_gradient_accumulation_measures_on_optimizer_steps_once():
    monitor = NTKMonitor(every_n_steps=2, probe_size=16)
    _fit("mlp", monitor, max_steps=6, accumulate_grad_batches=3)
    assert [s.step for s in monitor.history] == [0, 2, 4, 6]


def test_default_arguments_work():
    monitor = NTKMonitor()
    _fit("mlp", monitor, max_steps=8)
    steps = [s.step for s in monitor.history]
    assert steps[0] == 0 and steps[-1] == 8 and steps == sorted(set(steps))


def test_failed_measurement_warns_and_training_continues():
    monitor = NTKMonitor(every_n_steps=3, params=["no_such_layer"])
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="failed and was skipped.*no_such_layer"):
        plain_module, _, trainer = _fit("mlp", monitor)
    assert trainer.global_step == 12 and monitor.history == []


def test_strict_mode_raises():
    monitor = NTKMonitor(every_n_steps=3, params=["no_such_layer"], strict=True)
    with pytest.raises(ntkmonitor.ParameterSelectionError):
        _fit("mlp", monitor)


def test_diverged_training_is_reported_not_fatal():
    class Diverging(lm.MLPModule):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e6)

    monitor = NTKMonitor(every_n_steps=2, probe_size=16)
    pl.seed_everything(0, verbose=False)
    train, val = lm.loaders("mlp")
    trainer = lm.trainer(callbacks=[monitor], max_steps=8)
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="failed and was skipped"):
        trainer.fit(Diverging(), train, val)
    assert trainer.global_step == 8


def test_csv_logger_receives_the_scalars(tmp_path):
    monitor = NTKMonitor(every_n_steps=4, probe_size=16)
    _fit("mlp", monitor, tmp_path=tmp_path, logger=CSVLogger(tmp_path, name="csv"))
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    measured = [r for r in rows if r.get("ntk/drift/kernel_distance")]
    assert [int(r["step"]) for r in measured] == [0, 4, 8, 12]
    for key in ("ntk/learnability/actual", "ntk/learnability/predicted_init", "ntk/test_mse/actual"):
        assert all(r[key] != "" for r in measured), key
    history = json.loads(next(tmp_path.rglob("ntk_history.json")).read_text())
    assert [h["step"] for h in history["history"]] == [0, 4, 8, 12]


def test_logger_false_keeps_history_in_memory_only(tmp_path):
    monitor = NTKMonitor(every_n_steps=6, probe_size=16)
    _fit("mlp", monitor, tmp_path=tmp_path, logger=False)
    assert len(monitor.history) == 3
    assert not list(tmp_path.rglob("*.json"))


def test_resume_from_checkpoint_continues_against_the_same_reference(tmp_path):
    def run(max_steps, ckpt=None, callback=None):
        pl.seed_everything(0, verbose=False)
        module = lm.MLPModule()
        module.net[2].p = 0.0  # deterministic without RNG restore on resume
        train, val = lm.loaders("mlp", shuffle=False)
        trainer = lm.trainer(tmp_path, callbacks=[callback], max_steps=max_steps, enable_checkpointing=True)
        trainer.fit(module, train, val, ckpt_path=ckpt)
        return trainer

    full = NTKMonitor(every_n_steps=3, probe_size=16)
    run(12, callback=full)
    first = NTKMonitor(every_n_steps=3, probe_size=16)
    trainer = run(6, callback=first)
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = NTKMonitor(every_n_steps=3, probe_size=999)  # the probe comes from the checkpoint
    run(12, ckpt=str(ckpt), callback=resumed)
    assert [s.step for s in resumed.history] == [s.step for s in full.history] == [0, 3, 6, 9, 12]
    assert torch.equal(resumed.tracker.K0, full.tracker.K0)
    for a, b in zip(resumed.history, full.history, strict=True):
        for key, value in b.scalars().items():
            if key != "ntk/time/measure_seconds":
                assert a.scalars()[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (b.step, key)


def test_bad_arguments_are_rejected_early():
    with pytest.raises(ntkmonitor.InputError, match="every_n_steps"):
        NTKMonitor(every_n_steps=0)
    with pytest.raises(ntkmonitor.InputError, match="probe"):
        NTKMonitor(probe=torch.randn(3, 2))
    with pytest.raises(ntkmonitor.InputError, match="max_overhead"):
        NTKMonitor(max_overhead=0)
    with pytest.raises(ntkmonitor.InputError, match="lr"):
        NTKMonitor(lr=-1)
    with pytest.raises(ntkmonitor.InputError, match="top_k"):  # tracker options are checked early too
        NTKMonitor(top_k=0)
    with pytest.raises(ntkmonitor.InputError, match="loss"):
        NTKMonitor(loss="l1")


def test_module_selects_a_submodule_and_lr_auto_reads_plain_sgd():
    monitor = NTKMonitor(every_n_steps=6, probe_size=16, module="net", lr="auto")
    _fit("mlp", monitor)
    assert monitor.tracker.model is not None and monitor.tracker.lr == 0.05
    assert monitor.history[1].ridge == pytest.approx(ntkmonitor.effective_ridge(96, 0.05, 6))


class _Recorder(pl.Callback):
    """After the monitor's hooks, on every rank: the weights at each measured step, the probe and what ran."""

    def __init__(self, monitor, out) -> None:
        self.monitor, self.out = monitor, str(out)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self._save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module)
        tracker = self.monitor.tracker
        if tracker is None:
            return
        torch.save(
            {
                "steps": [s.step for s in tracker.history],
                "shared": tracker.ntk.options.distributed,
                "probe": (tracker.x, tracker.y),
                "train_size": tracker.train_size,
                "M": tracker.M,
            },
            f"{self.out}/rank{trainer.global_rank}.pt",
        )

    def on_train_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module)

    def _save(self, trainer, pl_module) -> None:
        history = self.monitor.tracker.history if self.monitor.tracker is not None else []
        if trainer.global_rank == 0 and history and history[-1].step == trainer.global_step:
            weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            torch.save(weights, f"{self.out}/weights{trainer.global_step}.pt")


def _fit_ddp(tmp_path, monitor=None, val=None):
    pl.seed_everything(0, verbose=False)
    module = lm.MLPModule()
    train, default_val = lm.loaders("mlp")
    val = default_val if val is None else val
    callbacks = [] if monitor is None else [monitor, _Recorder(monitor, tmp_path)]
    trainer = lm.trainer(
        tmp_path, callbacks=callbacks, max_steps=4, devices=2, strategy="ddp_spawn", logger=CSVLogger(tmp_path, "ddp")
    )
    trainer.fit(module, train, val)
    return module


def test_ddp_shares_the_kernel_logs_once_and_equals_a_single_process_history(tmp_path):
    """Two gloo ranks each compute a share of every kernel; rank 0 logs once; its history equals a single process
    measuring the same weights; and the weights equal those of the same DDP run without the monitor."""
    monitor = NTKMonitor(every_n_steps=2, probe_size=16)
    trained = _fit_ddp(tmp_path / "with", monitor)
    out = tmp_path / "with"
    histories = list(out.rglob("ntk_history.json"))
    assert len(histories) == 1, "only rank 0 writes"
    history = json.loads(histories[0].read_text())["history"]
    assert [h["step"] for h in history] == [0, 2, 4]
    # regression (issue 14, item 12): the calling process's monitor.history was empty after ddp_spawn
    assert [s.to_dict() for s in monitor.history] == history
    rows = [r for r in csv.DictReader(open(next(out.rglob("metrics.csv")))) if r.get("ntk/drift/kernel_distance")]
    assert [int(r["step"]) for r in rows] == [0, 2, 4], "each measurement logged once"
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    assert [r["steps"] for r in ranks] == [[0, 2, 4]] * 2, "both ranks measured, at the same steps"
    assert all(r["shared"] for r in ranks)

    # the same weights measured by one process give the same history
    x, y = ranks[0]["probe"]
    replay = lm.MLPModule()
    tracker = ntkmonitor.NTKTracker(replay, (x, y), ranks[0]["train_size"])
    for entry in history:
        replay.load_state_dict(torch.load(out / f"weights{entry['step']}.pt"))
        snap = tracker.reference(step=0) if entry["step"] == 0 else tracker.measure(entry["step"])
        expected = ntkmonitor.Snapshot.from_dict(entry).scalars()
        for key, value in snap.scalars().items():
            if key != "ntk/time/measure_seconds":
                # the test-MSE predictions solve with small eigenvalues: float32 kernels summed in a different
                # order (bands on two ranks) move them by up to ~1e-4; the spectrum itself agrees to ~1e-6
                assert expected[key] == pytest.approx(value, rel=1e-3, abs=1e-7), (entry["step"], key)
        assert rel_err(torch.tensor(snap.top_eigenvalues), torch.tensor(entry["top_eigenvalues"])) <= 1e-5

    # the single-process float64 kernel of the initial weights
    _, val_set = lm.regression_data()
    probe = val_set.tensors[0][torch.randperm(len(val_set), generator=torch.Generator().manual_seed(0))[:16]]
    pl.seed_everything(0, verbose=False)
    K = ntkmonitor.empirical_ntk(lm.MLPModule(), probe, dtype=torch.float64)
    expected = torch.linalg.eigvalsh(K).flip(0)[:10] / 16
    assert rel_err(torch.tensor(history[0]["top_eigenvalues"], dtype=torch.float64), expected) <= CALLBACK_KERNEL_RTOL

    plain = _fit_ddp(tmp_path / "without")
    for name, value in plain.state_dict().items():
        assert torch.equal(value, trained.state_dict()[name]), f"{name} differs with the monitor under DDP"


def test_ddp_auto_probe_size_is_decided_once_for_every_rank(tmp_path):
    """With probe_size="auto" (the default) and a validation set larger than the pilot probe, sizing the probe
    computes a kernel (a collective) on every rank, and rank 0's size holds on all (regression: it deadlocked)."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(3)
    x = torch.randn(600, 6, generator=g)
    val = DataLoader(TensorDataset(x, x[:, :2].clone()), batch_size=64)  # MLPModule: 6 inputs, 2 outputs
    monitor = NTKMonitor(every_n_steps=2)
    _fit_ddp(tmp_path, monitor, val=val)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["M"] == ranks[1]["M"] >= 256
    assert ranks[0]["steps"] == ranks[1]["steps"] == [0, 2, 4]


def _fails_on_rank_one(batch):
    import torch.distributed as dist

    if dist.get_rank() == 1:
        raise ValueError("rank 1 cannot read this batch")
    return batch[0], batch[1]


def test_ddp_a_rank_failing_to_start_stops_no_rank(tmp_path):
    """A failure on one rank before the kernel's collectives (the probe) makes every rank skip the monitor, warned,
    instead of leaving the others waiting in a collective; training completes."""
    monitor = NTKMonitor(every_n_steps=2, probe_size=16, batch_to_xy=_fails_on_rank_one)
    trained = _fit_ddp(tmp_path / "with", monitor)
    assert monitor.history == []
    plain = _fit_ddp(tmp_path / "without")
    for name, value in plain.state_dict().items():
        assert torch.equal(value, trained.state_dict()[name])


def test_trainer_with_tensorboard_logger_writes_every_documented_output(tmp_path):
    import math
    import re

    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    from ntkmonitor import tensorboard as ntb
    from ntkmonitor.tracker import SCALAR_KEYS

    monitor = NTKMonitor(every_n_steps=4, probe_size=16, figures_every=2)
    _fit("mlp", monitor, tmp_path=tmp_path, logger=TensorBoardLogger(tmp_path, name="tb"))
    event_file = next(p for p in tmp_path.rglob("events.out.tfevents*") if p.parent.name.startswith("version_"))
    runs = {p.parent.name for p in tmp_path.rglob("events.out.tfevents*")} - {event_file.parent.name}
    assert runs == {"ntk_actual", "ntk_predicted_K0", "ntk_predicted_Kt"}  # the overlay runs
    acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    steps = [s.step for s in monitor.history]
    assert steps == [0, 4, 8, 12]
    at_reference = {"ntk/self_check/learnability_gap", "ntk/self_check/mse_ratio"}
    after_reference = {  # undefined at the reference: nothing has moved yet
        "ntk/drift/kernel_velocity",
        "ntk/drift/linearization_error",
        "ntk/learnability/function_alignment",
    }
    always_defined = set(SCALAR_KEYS) - after_reference - at_reference
    for key in always_defined:  # undefined only at the reference
        assert [e.step for e in acc.Scalars(key)] == steps, key
        assert all(math.isfinite(e.value) for e in acc.Scalars(key)), key
    for key in at_reference:  # the self-check runs once, on K0
        assert [e.step for e in acc.Scalars(key)] == [0], key
    for key in after_reference:
        assert [e.step for e in acc.Scalars(key)] == steps[1:], key
    assert any(re.fullmatch(r"ntk/mode_\d\d/learnability_predicted", t) for t in tags["scalars"])
    assert any(re.fullmatch(r"ntk/params/net\.0\.weight/relative_change", t) for t in tags["scalars"])
    (layout_event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    titles = {chart.title for chart in layout.category[0].chart}
    assert {ntb.LEARNABILITY_CHART, ntb.TEST_MSE_CHART, ntb.DRIFT_CHART} <= titles
    assert ntb.HISTOGRAM_TAG in tags["histograms"]
    for tag in ntb.FIGURE_TAGS:
        images = acc.Images(tag)
        assert images and images[-1].step == 12 and len(images[-1].encoded_image_string) > 1000, tag
    assert any(t.startswith(ntb.SUMMARY_TAG) for t in tags["tensors"])


def test_works_with_a_lightning_pytorch_trainer():
    """The unified ``lightning`` package has its own Callback class; lightning_callback_class builds on it."""
    import lightning.pytorch as L

    from ntkmonitor.callback import lightning_callback_class

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = lm.MLPModule().net

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    monitor = lightning_callback_class(L.Callback)(every_n_steps=3, probe_size=16)
    assert isinstance(monitor, L.Callback)
    train, _ = lm.loaders("mlp")
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
    )
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="training set"):  # no validation data given
        trainer.fit(Module(), train)
    assert [s.step for s in monitor.history] == [0, 3, 6]


def _fit_with_large_validation_set(callback, val_points: int) -> pl.LightningModule:
    from torch.utils.data import DataLoader, TensorDataset

    pl.seed_everything(0, verbose=False)
    module = lm.module("mlp")
    train, _ = lm.regression_data()
    x = torch.randn(val_points, 6, generator=torch.Generator().manual_seed(9))
    val = TensorDataset(x, torch.stack([torch.sin(x[:, 0]), torch.cos(x[:, 1] * x[:, 2])], dim=1))
    trainer = lm.trainer(None, callbacks=[callback] if callback else [])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=64))
    return module


def test_auto_probe_grows_within_its_time_budget_without_touching_training():
    generous = NTKMonitor(every_n_steps=6, probe_seconds=60.0, max_probe_size=512)
    monitored = _fit_with_large_validation_set(generous, 700)
    tight = NTKMonitor(every_n_steps=6, probe_seconds=1e-9)
    _fit_with_large_validation_set(tight, 700)
    whole = NTKMonitor(every_n_steps=6, probe_seconds=60.0)
    _fit_with_large_validation_set(whole, 300)
    assert (generous.tracker.M, tight.tracker.M, whole.tracker.M) == (512, 256, 300)
    assert torch.equal(generous.tracker.x[:256], tight.tracker.x)  # one private permutation: larger contains smaller
    plain = _fit_with_large_validation_set(None, 700)
    for name, value in plain.state_dict().items():
        assert torch.equal(value, monitored.state_dict()[name]), name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probe_size": 2}, "probe_size >= 3"),
        ({"probe_size": "big"}, "probe_size"),
        ({"probe_seconds": 0}, "probe_seconds"),
        ({"max_probe_size": 100}, "max_probe_size"),
    ],
)
def test_probe_options_are_checked_at_construction(kwargs, match):
    with pytest.raises(ntkmonitor.InputError, match=match):
        NTKMonitor(**kwargs)


class _InterruptedMLP(lm.MLPModule):
    def __init__(self, error: type[BaseException]) -> None:
        super().__init__()
        self.error = error

    def training_step(self, batch, batch_idx):
        if self.global_step == 7:
            raise self.error("stopped at step 7")  # KeyboardInterrupt is what Ctrl+C raises in the loop
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(
    ("error", "raised"), [(KeyboardInterrupt, SystemExit), (RuntimeError, RuntimeError)], ids=["ctrl-c", "error"]
)
def test_history_file_is_written_when_training_stops_early(tmp_path, error, raised):
    """Regression (issue 14, item 12): after Ctrl+C, ntk_history.json was not written."""
    import signal

    monitor = NTKMonitor(every_n_steps=3, probe_size=16)
    pl.seed_everything(0, verbose=False)
    train, val = lm.loaders("mlp")
    trainer = lm.trainer(tmp_path, callbacks=[monitor], logger=CSVLogger(tmp_path, name="int"))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(raised):  # Lightning turns Ctrl+C into sys.exit(1) after its graceful shutdown
            trainer.fit(_InterruptedMLP(error), train, val)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl+C from then on
    assert trainer.interrupted
    (path,) = tmp_path.rglob("ntk_history.json")
    assert [h["step"] for h in json.loads(path.read_text())["history"]] == [0, 3, 6]
    assert [s.step for s in monitor.history] == [0, 3, 6]


def test_fast_dev_run_writes_no_history_file(tmp_path, monkeypatch):
    """Regression (issue 14, item 12): with fast_dev_run the history file still landed in default_root_dir."""
    monkeypatch.chdir(tmp_path)
    monitor = NTKMonitor(every_n_steps=1, probe_size=16)
    _fit("mlp", monitor, default_root_dir=str(tmp_path), fast_dev_run=2, logger=CSVLogger(tmp_path, name="dry"))
    assert [s.step for s in monitor.history] == [0, 1, 2]  # it still measures: the dry run exercises it
    assert list(tmp_path.rglob("ntk_history.json")) == []


def test_the_default_schedule_is_log_spaced_and_the_same_every_run():
    """Regression (issue 16, item 5): the number of measurements varied run to run (8, 31, 6, 11)."""
    import numpy as np

    runs = []
    for _ in range(2):
        monitor = NTKMonitor(probe_size=16, min_measurements=10, max_measurements=10)
        _fit("mlp", monitor, max_steps=200)
        runs.append([s.step for s in monitor.history])
    assert runs[0] == runs[1]
    steps = runs[0]
    assert steps[0] == 0 and steps[-1] == 200 and 10 <= len(steps) - 1 <= 11  # reference + 10 planned (+ last)
    ratios = np.diff(np.log(steps[1:]))
    assert ratios.max() < 4 * ratios.mean()  # log-spaced: dense early, sparse late
    assert steps[2] - steps[1] < steps[-1] - steps[-2]


@pytest.mark.parametrize(("low", "high"), [(3, 3), (5, 40)])
def test_the_default_schedule_respects_its_bounds(low, high):
    monitor = NTKMonitor(probe_size=16, min_measurements=low, max_measurements=high)
    _fit("mlp", monitor, max_steps=120)
    planned = len(monitor.history) - 1  # without the reference
    assert low <= planned <= high + 1  # the last step is always measured


def test_schedule_bounds_are_checked():
    with pytest.raises(ntkmonitor.InputError, match="max_measurements >= min_measurements"):
        NTKMonitor(min_measurements=10, max_measurements=5)
