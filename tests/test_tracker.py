"""``NTKTracker``'s probe checks: bad data is named where it is, not where it surfaces in a kernel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkmonitor
from ntkmonitor import NTKTracker


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("x", "Expected probe x to be finite, but it has 1 NaN/inf value(s), the first in row 4, column 1 (nan)"),
        ("y", "Expected probe y to be finite, but it has 1 NaN/inf value(s), the first in row 2, column 0 (inf)"),
        ("x_dict", "Expected probe x['a'] to be finite, but it has 1 NaN/inf value(s), the first in row 4, column 1"),
    ],
)
def test_non_finite_probe_data_is_named_with_row_and_column(where, message, dtype):
    """Regression (issue 14, item 10): NaN in x surfaced as 'Expected K to be finite (a diverged model...)'
    and NaN in y as 'Expected g to be finite'."""
    x, y = torch.randn(6, 3, dtype=dtype), torch.randn(6, 2, dtype=dtype)
    model = _model().to(dtype)
    if where == "y":
        y[2, 0] = float("inf")
    else:
        x[4, 1] = float("nan")
    if where == "x_dict":

        class Keyword(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = model

            def forward(self, a):
                return self.net(a)

        model, x = Keyword(), {"a": x}
    with pytest.raises(ntkmonitor.InputError) as info:
        NTKTracker(model, (x, y), train_size=100)
    assert message in str(info.value) and "Remove or impute" in str(info.value)


def test_complex_probe_targets_are_refused_by_name():
    with pytest.raises(ntkmonitor.InputError, match="Expected real numbers in probe y"):
        NTKTracker(_model(), (torch.randn(6, 3), torch.randn(6, 2, dtype=torch.complex64)), train_size=100)


def test_integer_inputs_and_labels_pass_the_finite_check():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = nn.Embedding(10, 4), nn.Linear(4, 3)

        def forward(self, ids):
            return self.out(self.emb(ids).mean(1))

    tracker = NTKTracker(Tokens(), (torch.randint(0, 10, (8, 5)), torch.randint(0, 3, (8,))), train_size=50)
    assert tracker.target.shape == (8, 3)


def test_infinite_values_survive_the_json_round_trip():
    """Regression (review of issue 15): a tensor that starts at zero has an infinite relative change, which came
    back from JSON (history file, checkpoints, report.json) as nan."""
    import json

    from ntkmonitor.record import Snapshot

    snap = Snapshot(step=3, parameter_change_per_tensor={"0.bias": float("inf"), "0.weight": 0.5}, ridge=float("inf"))
    back = Snapshot.from_dict(json.loads(json.dumps(snap.to_dict(), allow_nan=False)))
    assert back.parameter_change_per_tensor == {"0.bias": float("inf"), "0.weight": 0.5}
    assert back.ridge == float("inf")
