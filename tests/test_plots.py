"""``ntkmonitor.plots``: each figure builder's axes and lines, NaN handling, edge cases, no pyplot state."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
import torch

import ntkmonitor
from ntkmonitor import plots
from ntkmonitor.tracker import Snapshot

# matplotlib warnings (e.g. "no positive values to log-scale") are failures here
pytestmark = pytest.mark.filterwarnings("error")

NAN = math.nan


def _history(n: int = 4, modes: int = 5) -> list[Snapshot]:
    """Synthetic snapshots: the reference (zeros, nan where undefined), then growing drift and learning."""
    out = []
    for t in range(n):
        actual = [min(1.5, t * 0.4 / (1 + i)) for i in range(modes)]
        actual[modes - 1] = NAN  # a mode without target power
        out.append(
            Snapshot(
                step=10 * t,
                kernel_distance=0.01 * t,
                relative_kernel_change=0.05 * t,
                parameter_change=0.02 * t,
                linearization_error=NAN if t == 0 else 0.03 * t,
                verdict="lazy",
                learnability_actual=0.2 * t,
                learnability_predicted_init=0.25 * t,
                learnability_predicted_current=NAN if t == 0 else 0.22 * t,
                test_mse_actual=1.0 - 0.2 * t,
                test_mse_predicted_init=1.0 - 0.22 * t,
                test_mse_predicted_current=NAN,
                mode_indices=list(range(modes)),
                mode_learnability_predicted=[1 / (1 + i) for i in range(modes)],
                mode_learnability_actual=actual,
            )
        )
    return out


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.lines]


@pytest.fixture(autouse=True)
def no_new_pyplot_figures():
    """Builders never register figures with pyplot (checked only where pyplot imports)."""
    try:
        from matplotlib import pyplot
    except ImportError:  # pragma: no cover
        yield
        return
    before = pyplot.get_fignums()
    yield
    assert pyplot.get_fignums() == before


# ---------------------------------------------------------------------------------------------------- spectrum
def test_spectrum_figure_eigenvalues_target_power_and_kappa():
    lam = torch.tensor([4.0, 1.0, 0.25, 0.0], dtype=torch.float64)  # a clipped zero eigenvalue
    power = torch.tensor([0.5, 0.0, 0.3, 1e-20], dtype=torch.float64)
    fig = plots.spectrum_figure(lam, power, kappa=0.5)
    ax, twin = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == twin.get_yscale() == "log"
    eigen, kappa_line = ax.lines
    np.testing.assert_array_equal(eigen.get_xdata(), [1, 2, 3, 4])  # 1-based mode index
    np.testing.assert_array_equal(eigen.get_ydata(), [4.0, 1.0, 0.25, NAN])  # zero left out
    assert kappa_line.get_ydata()[0] == 0.5
    (markers,) = twin.lines
    np.testing.assert_array_equal(markers.get_ydata(), [0.5, NAN, 0.3, NAN])  # zero and round-off left out
    assert ax.get_xlabel() and ax.get_ylabel() and twin.get_ylabel() and ax.get_title()
    assert len(ax.get_legend().get_texts()) == 3


def test_spectrum_figure_without_target_power_or_positive_eigenvalues():
    assert len(plots.spectrum_figure([3.0, 2.0, 1.0]).axes) == 1
    fig = plots.spectrum_figure(np.zeros(3), np.zeros(3), kappa=NAN)
    assert len(fig.axes) == 2
    plots.figure_to_array(fig)
    with pytest.raises(ntkmonitor.InputError, match="1-D"):
        plots.spectrum_figure(torch.ones(2, 2))


# ---------------------------------------------------------------------------------------------------- modes
def test_mode_learnability_figure_leaves_out_nan_and_clips_off_scale_values():
    snap = Snapshot(
        step=5,
        mode_indices=[0, 1, 2, 3, 4],
        mode_learnability_predicted=[0.9, 0.8, 0.5, 0.3, 0.1],
        mode_learnability_actual=[0.95, NAN, 3.0, -2.0, 0.2],
    )
    (ax,) = plots.mode_learnability_figure(snap).axes
    assert _labels(ax) == ["predicted (K0)", "actual", "actual (off scale)", "_nolegend_"]
    predicted, actual, above, below = ax.lines
    np.testing.assert_array_equal(predicted.get_xdata(), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(actual.get_xdata(), [0, 4])  # NaN (mode 1) and off-scale values elsewhere
    np.testing.assert_array_equal(above.get_xdata(), [2])
    np.testing.assert_array_equal(below.get_xdata(), [3])
    low, high = ax.get_ylim()
    assert low <= below.get_ydata()[0] and above.get_ydata()[0] <= high
    assert "step 5" in ax.get_title()


def test_mode_learnability_figure_accepts_a_dict_and_rejects_mismatched_lengths():
    snap = _history()[-1]
    (ax,) = plots.mode_learnability_figure(snap.to_dict()).axes
    assert _labels(ax)[:2] == ["predicted (K0)", "actual"]
    (ax,) = plots.mode_learnability_figure(Snapshot(step=0)).axes  # no mode reported
    assert len(ax.lines) == 0
    bad = Snapshot(step=0, mode_indices=[0, 1], mode_learnability_predicted=[0.5], mode_learnability_actual=[0.5])
    with pytest.raises(ntkmonitor.InputError, match="one predicted and one actual"):
        plots.mode_learnability_figure(bad)


# ---------------------------------------------------------------------------------------------------- over time
def test_learnability_figure_two_panels_three_lines_each():
    history = _history()
    left, right = plots.learnability_figure(history).axes
    for ax in (left, right):
        assert _labels(ax) == ["actual", "predicted (K0)", "predicted (Kt)"]
        np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 10, 20, 30])
        assert ax.get_xlabel() == "step" and ax.get_ylabel() and ax.get_legend()
    np.testing.assert_allclose(left.lines[0].get_ydata(), [s.learnability_actual for s in history])
    assert np.isnan(right.lines[2].get_ydata()).all()


def test_drift_figure_metrics_and_thresholds():
    history = _history()
    fig = plots.drift_figure(history, ntkmonitor.DriftThresholds())
    left, right = fig.axes
    assert left.get_yscale() == right.get_yscale() == "log"
    assert _labels(left)[0] == "kernel distance" and _labels(left)[3] == "relative kernel change"
    assert _labels(right)[0] == "relative parameter change" and _labels(right)[1] == "linearization error"
    thresholds = [line.get_ydata()[0] for line in left.lines[1:3]] + [line.get_ydata()[0] for line in right.lines[2:]]
    assert thresholds == [0.05, 0.25, 0.1, 0.5]
    distance = left.lines[0].get_ydata()
    assert distance[0] == 0.01 and len(distance) == len(history) - 1  # the reference is left out
    assert list(left.lines[0].get_xdata()) == [s.step for s in history[1:]]


def test_drift_figure_leaves_out_a_reference_with_round_off_distance():
    """Regression (issue 16, item 6): the reference's kernel distance of 2.7e-14 squashed the log axis."""
    history = [Snapshot(step=0, kernel_distance=2.7e-14, parameter_change=0.0)] + _history()[1:]
    left, _ = plots.drift_figure(history).axes
    assert min(left.lines[0].get_ydata()) >= 1e-3
    assert [len(ax.lines) for ax in plots.drift_figure(history).axes] == [2, 2]


@pytest.mark.parametrize("builder", [plots.learnability_figure, plots.drift_figure, plots.mode_heatmap_figure])
def test_over_time_figures_handle_a_single_reference_snapshot_and_an_empty_history(builder):
    reference = _history(n=1)
    for history in (reference, [], [Snapshot(step=0)]):
        fig = builder(history)
        assert plots.figure_to_array(fig).shape[1] == 800
    with pytest.raises(ntkmonitor.InputError, match="sequence of Snapshots"):
        builder(reference[0])


def test_mode_heatmap_rows_are_modes_columns_are_measurements():
    history = _history(n=3, modes=4)
    history.append(Snapshot(step=40, mode_indices=[0, 6], mode_learnability_actual=[0.5, 0.7]))  # a new mode
    fig = plots.mode_heatmap_figure(history)
    ax, colorbar = fig.axes
    (image,) = ax.images
    data = image.get_array()
    assert data.shape == (5, 4)  # modes 0, 1, 2, 3, 6 x 4 measurements
    assert data.mask[3].all()  # mode 3 has no target power: NaN everywhere, masked (grey)
    assert data.mask[4, :3].all() and data[4, 3] == 0.7
    assert data[0, 2] == pytest.approx(history[2].mode_learnability_actual[0])
    assert image.get_clim() == plots.HEATMAP_RANGE
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "10", "20", "40"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2", "3", "6"]
    assert colorbar.get_ylabel()


# ---------------------------------------------------------------------------------------------------- learning curve
def test_learning_curve_figure_two_log_x_panels_and_the_train_size_marker():
    n = [10, 100, 1000, 10000]
    fig = plots.learning_curve_figure(n, [0.1, 0.4, 0.8, 0.95], [0.9, 0.6, 0.2, 0.05], train_size=500)
    left, right = fig.axes
    assert left.get_xscale() == right.get_xscale() == right.get_yscale() == "log"
    assert left.get_yscale() == "linear" and left.get_ylim() == pytest.approx((-0.02, 1.02))
    for ax, values in ((left, [0.1, 0.4, 0.8, 0.95]), (right, [0.9, 0.6, 0.2, 0.05])):
        curve, marker = ax.lines
        np.testing.assert_array_equal(curve.get_xdata(), n)
        np.testing.assert_array_equal(curve.get_ydata(), values)
        np.testing.assert_array_equal(marker.get_xdata(), [500, 500])
        assert marker.get_label() == "train size n = 500"
        assert "log" in ax.get_xlabel() and ax.get_ylabel()
    assert fig.get_suptitle() and len(fig.legends) == 1  # one legend below both panels
    assert [len(ax.lines) for ax in plots.learning_curve_figure(n, [0.5] * 4, [1.0] * 4).axes] == [1, 1]


def test_learning_curve_figure_draws_bands_reach_and_measured_points():
    n = [10, 100, 1000]
    fig = plots.learning_curve_figure(
        n,
        [0.2, 0.5, 0.8],
        [0.9, 0.5, 0.2],
        learnability_band=([0.1, 0.4, 0.6], [0.3, 0.6, 0.9]),
        test_mse_band=([0.8, 0.4, 0.1], [1.0, 0.6, 0.4]),
        reach=300,
        measured=([10, 100], [0.25, 0.45], [0.85, 0.55]),
    )
    for ax, column in zip(fig.axes, (1, 2), strict=True):
        curve, points, reach = ax.lines
        (band,) = [c for c in ax.collections if c.get_label() == "interval (90 %)"]
        band = band.get_paths()[0].vertices
        assert band[:, 1].min() == pytest.approx([0.1, 0.1][column - 1]) and band[:, 1].max() == pytest.approx(
            [0.9, 1.0][column - 1]
        )
        np.testing.assert_array_equal(points.get_xdata(), [10, 100])
        np.testing.assert_array_equal(points.get_ydata(), [[0.25, 0.45], [0.85, 0.55]][column - 1])
        np.testing.assert_array_equal(reach.get_xdata(), [300, 300])
    with pytest.raises(ntkmonitor.InputError, match="learnability_band"):
        plots.learning_curve_figure(n, [0.2, 0.5, 0.8], [0.9, 0.5, 0.2], learnability_band=([0.1], [0.3]))


def test_learning_curve_figure_leaves_out_nonpositive_n_and_undefined_values():
    n = [0, 10, 100, 1000]  # n = 0 cannot be drawn on a log axis
    left, right = plots.learning_curve_figure(n, [0.0, 0.3, None, 0.9], [1.0, 0.7, NAN, -1.0]).axes
    np.testing.assert_array_equal(left.lines[0].get_xdata(), [10, 100, 1000])
    np.testing.assert_array_equal(left.lines[0].get_ydata(), [0.3, NAN, 0.9])  # None (from JSON) -> gap
    np.testing.assert_array_equal(right.lines[0].get_ydata(), [0.7, NAN, NAN])  # a non-positive MSE -> gap
    fig = plots.learning_curve_figure([1, 2], [None, None], [None, None], train_size=2)
    assert [len(ax.lines) for ax in fig.axes] == [0, 0] and right.get_yscale() == "log"
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "linear"]
    plots.figure_to_array(fig)
    assert [len(ax.lines) for ax in plots.learning_curve_figure([], [], []).axes] == [0, 0]
    with pytest.raises(ntkmonitor.InputError, match="one learnability and one test MSE"):
        plots.learning_curve_figure([1, 2, 3], [0.1, 0.2], [0.5, 0.4, 0.3])


# ---------------------------------------------------------------------------------------------------- output
def test_figure_to_png_and_array():
    fig = plots.learnability_figure(_history(n=2))
    png = plots.figure_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    image = plots.figure_to_array(fig)
    assert image.dtype == np.uint8 and image.shape == (height, width, 3) and width == 800
    assert image.min() < 128 < image.max()  # something was drawn on the white background


def test_figure_to_array_keeps_a_foreign_canvas():
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1), dpi=50)
    canvas = FigureCanvasBase(fig)
    assert plots.figure_to_array(fig).shape == (50, 100, 3)
    assert fig.canvas is canvas
    assert len(io.BytesIO(plots.figure_to_png(fig)).getvalue()) > 0
