"""``ntkmonitor.tensorboard``: real event files from a real NTKTracker run, read back with TensorBoard's reader."""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import ntkmonitor
from ntkmonitor import tensorboard as ntb
from ntkmonitor.record import DESCRIPTIONS, OVERLAY_RUNS, OVERVIEW_VERDICT, Reference
from ntkmonitor.tracker import MODE_KEY, SCALAR_KEYS, NTKTracker, Snapshot

ROOT = Path(__file__).resolve().parent.parent

SCALAR_FLOAT32_RTOL = 1e-6
"""Event files store scalars as float32: a written value matches the snapshot's float64 to float32 round-off."""

FIGURES_EVERY = 2
"""Figure cadence of the module's run: figures at measurement 2 (not at the reference), plus the final call."""


def _accumulator(logdir: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    guidance = {kind: 0 for kind in (ea.SCALARS, ea.IMAGES, ea.HISTOGRAMS, ea.TENSORS, ea.COMPRESSED_HISTOGRAMS)}
    return ea.EventAccumulator(str(logdir), size_guidance=guidance).Reload()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny MLP trained with SGD, measured 4 times (reference + 3), written with a TensorBoardSink."""
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    x_train, x_probe = torch.randn(32, 4), torch.randn(24, 4)
    y_train, y_probe = torch.sin(2 * x_train[:, 0]), torch.sin(2 * x_probe[:, 0])
    tracker = NTKTracker(model, (x_probe, y_probe), train_size=32, lr=0.5, top_k=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    logdir = tmp_path_factory.mktemp("tb")
    writer = SummaryWriter(str(logdir))
    sink = ntb.TensorBoardSink(writer, figures_every=FIGURES_EVERY)
    tracker.reference()
    tracker.publish(sink)
    for step in range(1, 16):
        optimizer.zero_grad()
        (0.5 * (model(x_train).squeeze(-1) - y_train).pow(2).mean()).backward()
        optimizer.step()
        if step % 5 == 0:
            tracker.measure(step)
            tracker.publish(sink)
            tracker.publish(sink)  # the same snapshot again: written once
            ntb.register_layout(writer, [0, 1, 2, 3])  # already registered: nothing written
    tracker.publish(sink, final=True)
    writer.close()
    return tracker, sink, _accumulator(logdir)


def test_every_scalar_is_written_once_at_its_step_with_the_snapshots_value(run):
    tracker, sink, acc = run
    assert sink.measurements == len(tracker.history) == 4
    written = set(acc.Tags()["scalars"])
    expected: dict[str, dict[int, float]] = {}
    for snap in tracker.history:
        for key, value in snap.scalars().items():
            expected.setdefault(key, {})[snap.step] = value
        expected.setdefault(OVERVIEW_VERDICT, {})[snap.step] = snap.verdict_code  # the overview's copy
    assert set(expected) == written
    for key, by_step in expected.items():
        events = acc.Scalars(key)
        assert [e.step for e in events] == list(by_step), key
        for event in events:
            assert math.isfinite(event.value)
            assert event.value == pytest.approx(by_step[event.step], rel=SCALAR_FLOAT32_RTOL, abs=1e-30), key


def test_run_covers_every_scalar_key_pattern(run):
    tracker, _, acc = run
    written = set(acc.Tags()["scalars"])
    assert set(SCALAR_KEYS) <= written  # every key is defined at some measurement of this run
    last = tracker.history[-1]
    for index in last.mode_indices:
        assert MODE_KEY.format(index=index, kind="predicted") in written
    assert {f"ntk/params/{name}/relative_change" for name in last.parameter_change_per_tensor} <= written


def _layouts(acc):
    from tensorboard.plugins.custom_scalar import layout_pb2

    assert "custom_scalars__config__" in acc.PluginTagToContent("custom_scalars")
    events = acc.Tensors("custom_scalars__config__")
    return [layout_pb2.Layout.FromString(e.tensor_proto.string_val[0]) for e in events]


def test_custom_scalars_layout_is_registered_once_and_every_chart_tag_matches_one_written_key(run):
    tracker, sink, acc = run
    layouts = _layouts(acc)
    assert len(layouts) == 1
    (category,) = layouts[0].category
    assert category.title == ntb.LAYOUT_CATEGORY
    titles = [chart.title for chart in category.chart]
    modes = tracker.history[-1].mode_indices
    expected = [ntb.LEARNABILITY_CHART, ntb.TEST_MSE_CHART, ntb.DRIFT_CHART, ntb.CHANGE_CHART, *ntb.MARGIN_CHARTS]
    assert titles == expected + [ntb.MODE_CHART.format(index=i) for i in modes]
    logdir = Path(sink.writer.get_logdir())
    runs = {"": acc} | {run: _accumulator(logdir / run) for run in OVERLAY_RUNS.values()}
    written = {name: set(a.Tags()["scalars"]) for name, a in runs.items()}
    every_tag = set().union(*written.values())
    charts = {chart.title: list(chart.multiline.tag) for chart in category.chart if chart.HasField("multiline")}
    margins = {chart.title: chart.margin.series[0] for chart in category.chart if chart.HasField("margin")}
    assert set(margins) == set(ntb.MARGIN_CHARTS)
    for series in margins.values():  # exact tags, all written
        assert {series.value, series.lower, series.upper} <= written[""]
    for title, regexes in charts.items():
        for regex in regexes:
            matches = [tag for tag in every_tag if re.match(regex, tag)]
            assert len(matches) == 1, (title, regex, matches)
    # the overlays: one tag, a line per run, in the colours TensorBoard gives runs
    overlay = {"ntk/0_overview/learnability", "ntk/0_overview/log10_test_mse"}
    for tag in overlay:
        assert [name for name in written if tag in written[name]] == list(OVERLAY_RUNS.values()), tag
    mode_tag = f"ntk/overlay/mode_{modes[-1]:02d}_learnability"
    assert mode_tag in written["ntk_actual"] and mode_tag in written["ntk_predicted_K0"]
    last = tracker.history[-1]
    value = runs["ntk_actual"].Scalars("ntk/0_overview/learnability")[-1].value
    assert value == pytest.approx(last.learnability_actual, rel=1e-6)
    value = runs["ntk_predicted_K0"].Scalars("ntk/0_overview/log10_test_mse")[-1].value
    assert value == pytest.approx(math.log10(last.test_mse_predicted_init), rel=1e-6)


def test_described_tags_carry_their_description(run):
    from tensorboard.backend.event_processing import event_file_loader

    _, sink, _ = run
    logdir = Path(sink.writer.get_logdir())
    descriptions = {}
    for path in [*logdir.glob("events.out.tfevents*"), *(logdir / "ntk_actual").glob("events.out.tfevents*")]:
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.summary_description:
                    descriptions[value.tag] = value.metadata.summary_description
    assert set(DESCRIPTIONS) <= set(descriptions)
    assert "ntk_predicted_K0" in descriptions["ntk/0_overview/learnability"]


def test_spectrum_histogram_per_measurement(run):
    tracker, _, acc = run
    events = acc.Histograms(ntb.HISTOGRAM_TAG)
    assert [e.step for e in events] == [s.step for s in tracker.history]
    lam = tracker.last_spectrum.eigenvalues
    log_lam = torch.log10(lam[lam > 0])
    last = events[-1].histogram_value
    assert last.num == len(log_lam)
    assert last.min == pytest.approx(float(log_lam.min()), rel=1e-6)
    assert last.max == pytest.approx(float(log_lam.max()), rel=1e-6)


def test_figures_are_written_as_pngs_at_the_cadence(run):
    from PIL import Image

    tracker, _, acc = run
    steps = [s.step for s in tracker.history]
    assert set(acc.Tags()["images"]) == set(ntb.FIGURE_TAGS)
    for tag in ntb.FIGURE_TAGS:
        events = acc.Images(tag)
        # the first measurement after the reference, then measurement 4 (figures_every=2), which is also the
        # final one: the final call adds nothing
        assert [e.step for e in events] == [steps[1], steps[3]], tag
        for event in events:
            assert len(event.encoded_image_string) > 0
            image = Image.open(io.BytesIO(event.encoded_image_string))
            assert image.format == "PNG"
            assert image.size == (event.width, event.height)
            assert image.size[0] == 800


def test_text_summary_per_measurement(run):
    tracker, _, acc = run
    events = acc.Tensors(ntb.SUMMARY_TAG + "/text_summary")
    assert [e.step for e in events] == [s.step for s in tracker.history]
    first = events[0].tensor_proto.string_val[0].decode()
    last = events[-1].tensor_proto.string_val[0].decode()
    assert tracker.history[0].prediction_note in first
    snap = tracker.history[-1]
    assert f"Step {snap.step}: {snap.verdict}" in last
    assert f"| kernel distance | {snap.kernel_distance:.4g} |" in last
    assert f"| learnability: actual | {snap.learnability_actual:.4g} |" in last
    assert (
        f"| learnability: predicted from K0 | {snap.learnability_predicted_init:.4g} "
        f"[{snap.learnability_predicted_init_lower:.4g}, {snap.learnability_predicted_init_upper:.4g}] |"
    ) in last


# ---------------------------------------------------------------------------------------------------- fakes
class RecordingWriter:
    """Records every call; the SummaryWriter methods the sink uses."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if not name.startswith("add_") and name not in ("flush", "close"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def tags(self, method):
        return [args[0] for name, args, _ in self.calls if name == method]


class SlottedWriter:
    """A writer that accepts neither weak references nor new attributes."""

    __slots__ = ("calls",)

    def __init__(self):
        self.calls = 0

    def add_custom_scalars(self, layout):
        self.calls += 1


class BrokenWriter:
    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise OSError("disk full")

        return fail


def _snapshot(step=3):
    return Snapshot(
        step=step,
        kernel_distance=0.02,
        verdict="lazy",
        learnability_actual=0.3,
        mode_indices=[0, 1],
        mode_learnability_predicted=[0.9, 0.5],
        mode_learnability_actual=[0.8, math.nan],
    )


def test_register_layout_once_per_writer_including_writers_without_weakrefs():
    first, second, slotted = RecordingWriter(), RecordingWriter(), SlottedWriter()
    assert ntb.register_layout(first, [0, 1]) is True
    assert ntb.register_layout(first, [0, 1, 2]) is False
    assert ntb.register_layout(second, [0]) is True
    assert len(first.tags("add_custom_scalars")) == len(second.tags("add_custom_scalars")) == 1
    assert ntb.register_layout(slotted) and not ntb.register_layout(slotted)
    assert slotted.calls == 1


def test_layout_regexes_are_anchored():
    charts = ntb.custom_scalars_layout([3])[ntb.LAYOUT_CATEGORY]
    regex = charts[ntb.MODE_CHART.format(index=3)][1][0]
    assert re.match(regex, "ntk/overlay/mode_03_learnability")
    assert not re.match(regex, "ntk/overlay/mode_03_learnability_extra")
    assert {kind for kind, _ in charts.values()} == {"Multiline", "Margin"}


def test_margin_charts_name_a_logged_value_and_both_ends_of_its_interval():
    charts = ntb.custom_scalars_layout()[ntb.LAYOUT_CATEGORY]
    margins = {title: tags for title, (kind, tags) in charts.items() if kind == "Margin"}
    assert set(margins) == set(ntb.MARGIN_CHARTS) and len(margins) == 4
    for value, lower, upper in margins.values():
        assert value in SCALAR_KEYS and lower == value + "_lower" and upper == value + "_upper"
        assert {lower, upper} <= set(SCALAR_KEYS)


def test_log_snapshot_writes_layout_scalars_histogram_text():
    writer, snap = RecordingWriter(), _snapshot()
    ntb.log_snapshot(writer, snap, eigenvalues=torch.tensor([2.0, 1.0, 0.0]))
    assert sorted(writer.tags("add_scalar")) == sorted(snap.scalars())
    assert writer.tags("add_histogram") == [ntb.HISTOGRAM_TAG]
    (values,) = [args[1] for name, args, _ in writer.calls if name == "add_histogram"]
    assert values.tolist() == pytest.approx([math.log10(2.0), 0.0])
    assert writer.tags("add_text") == [ntb.SUMMARY_TAG]
    assert [name for name, *_ in writer.calls].count("add_custom_scalars") == 1


def test_histogram_skips_a_spectrum_without_positive_eigenvalues():
    writer = RecordingWriter()
    assert ntb.log_spectrum_histogram(writer, [0.0, 0.0], step=1) is False
    assert writer.calls == []


def test_a_failing_figure_warns_and_the_others_are_written(monkeypatch):
    from ntkmonitor import plots

    def broken(*args, **kwargs):
        raise ValueError("cannot draw")

    monkeypatch.setattr(plots, "drift_figure", broken)
    writer = RecordingWriter()
    with pytest.warns(ntkmonitor.NTKMonitorWarning, match="ntk/figures/drift.*cannot draw"):
        tags = ntb.log_figures(writer, [_snapshot()], step=3)  # no spectrum: eigenvalues0 is None
    assert tags == [ntb.MODE_FIGURE_TAG, ntb.LEARNABILITY_FIGURE_TAG, ntb.HEATMAP_FIGURE_TAG]
    assert writer.tags("add_image") == tags
    for _, args, kwargs in writer.calls:
        assert kwargs == {"global_step": 3, "dataformats": "HWC"}
        assert args[1].ndim == 3 and args[1].shape[2] == 3


def test_a_broken_writer_never_raises():
    writer = BrokenWriter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ntb.log_snapshot(writer, _snapshot(), eigenvalues=[1.0])
        sink = ntb.TensorBoardSink(writer, figures_every=0)
        sink.flush()
        sink.close()
    messages = [str(w.message) for w in caught if issubclass(w.category, ntkmonitor.NTKMonitorWarning)]
    assert len(messages) == 7  # the overlay runs' directory, layout, scalars, histogram, text, flush, close
    assert all("disk full" in m for m in messages)


def test_sink_validates_its_arguments():
    reference = Reference(eigenvalues=[1.0], target_power=[1.0])
    with pytest.raises(ntkmonitor.InputError, match="figures_every"):
        ntb.TensorBoardSink(RecordingWriter(), figures_every=-1)
    with pytest.raises(ntkmonitor.InputError, match="Expected snapshot to be a Snapshot.*tracker.publish"):
        ntb.TensorBoardSink(RecordingWriter()).log({"step": 1}, reference)
    with pytest.raises(ntkmonitor.InputError, match="Expected reference to be a Reference"):
        ntb.TensorBoardSink(RecordingWriter()).log(_snapshot(), None)
    with pytest.raises(ntkmonitor.InputError, match="Expected a Snapshot"):
        ntb.log_scalars(RecordingWriter(), {"step": 1})


def test_publishing_before_the_reference_is_a_clear_error():
    model = torch.nn.Linear(3, 1)
    tracker = NTKTracker(model, (torch.randn(8, 3), torch.randn(8)), train_size=4)
    writer = RecordingWriter()
    with pytest.raises(ntkmonitor.InputError, match="Call reference"):
        tracker.publish(ntb.TensorBoardSink(writer))
    assert writer.calls == []


def test_the_sink_modules_do_not_import_the_kernel_engine():
    code = (
        "import sys, ntkmonitor.tensorboard, ntkmonitor.plots, ntkmonitor.report, ntkmonitor.sinks; "
        "engine = ('ntkmonitor.kernel', 'ntkmonitor.tracker', 'ntkmonitor._functional', 'ntkmonitor.drift'); "
        "bad = [m for m in sys.modules if m in engine or m.startswith('ntkmonitor._methods')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_modules_do_not_import_tensorboard_or_matplotlib():
    code = (
        "import sys, ntkmonitor.tensorboard, ntkmonitor.plots; "
        "bad = [m for m in ('tensorboard', 'torch.utils.tensorboard', 'matplotlib') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _doc_example(section: str) -> str:
    text = (ROOT / "docs" / "callback.md").read_text()
    block = re.search(rf"## {section}\n.*?```python\n(.*?)```", text, re.S)
    assert block, f"docs/callback.md needs a python block under '## {section}'"
    return block.group(1)


def test_logged_keys_are_all_documented():
    text = (ROOT / "docs" / "callback.md").read_text()
    section = text.split("## Logged keys", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", section, re.M))
    assert set(SCALAR_KEYS) <= documented
    patterns = {
        "ntk/mode_NN/learnability_predicted",
        "ntk/mode_NN/learnability_actual",
        "ntk/mode_NN/learnability_relative",
        "ntk/mode_NN/learnability_predicted_lower",
        "ntk/mode_NN/learnability_predicted_upper",
        "ntk/params/<name>/relative_change",
    }
    assert patterns <= documented
    assert {ntb.HISTOGRAM_TAG, ntb.SUMMARY_TAG, *ntb.FIGURE_TAGS} <= documented
    charts = {ntb.LEARNABILITY_CHART, ntb.TEST_MSE_CHART, ntb.DRIFT_CHART, ntb.CHANGE_CHART}
    charts.add(ntb.MODE_CHART.replace("{index}", "i"))
    assert charts <= documented
    assert {
        "ntk/0_overview/learnability",
        "ntk/0_overview/log10_test_mse",
        "ntk/overlay/mode_NN_learnability",
    } <= documented
    assert set(OVERLAY_RUNS.values()) <= documented


def test_plain_loop_example_in_the_docs_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_doc_example("Plain PyTorch loop"), "docs/callback.md", "exec"), {"__name__": "__main__"})
    assert "step 200:" in capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs").iterdir()
    acc = _accumulator(run_dir)
    assert "ntk/learnability/actual" in acc.Tags()["scalars"]
    # the first measurement after the reference, then the final one (the run lasts under a minute)
    assert [e.step for e in acc.Images(ntb.SPECTRUM_FIGURE_TAG)] == [20, 200]
    assert {p.name for p in run_dir.iterdir() if p.is_dir()} == set(OVERLAY_RUNS.values())


def test_overlay_writers_are_closed_at_the_end(tmp_path):
    """Regression (review of issue 16): the overlay writers stayed open after training (three threads per fit)."""
    import threading

    from torch.utils.tensorboard import SummaryWriter

    baseline = threading.active_count()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(12, 3)
    tracker = NTKTracker(model, (x, x[:, 0]), train_size=20, ridge=1e-3)
    writer = SummaryWriter(str(tmp_path / "logs"))
    sink = ntb.TensorBoardSink(writer)
    tracker.reference()
    tracker.publish(sink)
    tracker.measure(step=1)
    tracker.publish(sink, final=True)
    writer.close()
    assert threading.active_count() == baseline
    assert {p.name for p in (tmp_path / "logs").iterdir() if p.is_dir()} == set(OVERLAY_RUNS.values())
