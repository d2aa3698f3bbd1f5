"""The proven bound handled over blocks of wide units, and the blocked forward it relies on."""

import math

import pytest
import torch

from normonly import reconstruct
from normonly.certificate import forms as forms_mod
from normonly.certificate.bound import error_bound
from normonly.certificate.forms import Forms, _selection
from normonly.certificate.verify import POINTS_MAX, POINTS_MIN, default_points
from normonly.nets.target import TargetMLP
from normonly.nets.wide import NormNet


def _rec(widths, seed, **kw):
    f = TargetMLP.random(widths, seed=seed)
    return f, reconstruct(f, radius=1.5, overparam=2, n_points=300, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bound_over_blocks_agrees_with_one_block(seed, monkeypatch):
    f, rec = _rec([4, 6, 3], seed)
    whole = error_bound(rec.net, f, 1.5)
    original = Forms.wide_pair

    def tiny_blocks(self, *a, **kw):  # 7 units per block instead of all of them
        kw["budget_bytes"] = 8 * (self.T.shape[1] + 1) * 7
        return original(self, *a, **kw)

    monkeypatch.setattr(Forms, "wide_pair", tiny_blocks)
    blocks = error_bound(rec.net, f, 1.5)
    # both are proven; they differ only in the bound's own rounding allowances (a short
    # product per block plus one rounding per block, against one summation tree)
    assert whole.bound / 1.5 <= blocks.bound <= whole.bound * 1.5
    x = torch.randn(3000, 4, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * 1.5
    with torch.no_grad():
        err = float((rec.net(x) - f(x)).abs().max())
    assert err <= min(blocks.bound, whole.bound)
    assert [e["on"] for e in blocks.relu] == [e["on"] for e in whole.relu]
    margins = [e["margin"] for e in whole.relu]
    assert [e["margin"] for e in blocks.relu] == pytest.approx(margins, nan_ok=True)


def test_selection_is_recognised_only_for_exact_pickers():
    eye = torch.eye(3, dtype=torch.float64)
    rows, cols = _selection(eye)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1, 2]
    picker = torch.zeros(5, 2, dtype=torch.float64)
    picker[3, 0] = picker[1, 1] = 1.0
    assert _selection(picker) is not None
    assert _selection(eye * 0.5) is None
    two_in_a_column = torch.zeros(3, 1, dtype=torch.float64)
    two_in_a_column[:2] = 1.0
    assert _selection(two_in_a_column) is None


def test_blocked_sums_give_a_much_smaller_bound_than_one_long_sum(monkeypatch):
    """The narrow layer sums m terms; summed in blocks its rounding depth is ~2√m, not m."""
    f, rec = _rec([40, 40], 4)  # m = 3,200: depth 269 instead of 3,200
    blocked = error_bound(rec.net, f, 1.5)
    monkeypatch.setattr(forms_mod, "summation_depth", lambda n: n)  # pretend: one long sum
    long_sum = error_bound(rec.net, f, 1.5)
    assert long_sum.rounding > 4 * blocked.rounding
    x = torch.randn(2000, 40, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * 1.5
    with torch.no_grad():
        err = float((rec.net(x) - f(x)).abs().max())
    assert err <= blocked.bound


def test_default_points_shrink_only_for_very_wide_networks():
    assert default_points(NormNet([3, 18, 3], seed=0)) == POINTS_MAX
    wide = NormNet([64, 8192, 64], seed=0)
    assert POINTS_MIN < default_points(wide) < POINTS_MAX
    assert default_points(NormNet([128, 32768, 128], seed=0)) == POINTS_MIN


def test_reconstruct_reports_its_steps():
    _, rec = _rec([3, 4, 2], 0)
    t = rec.timings
    assert set(t) == {"checks", "frozen_weights", "solve", "build", "measure", "bound", "total"}
    assert all(v >= 0 and math.isfinite(v) for v in t.values())
    parts = sum(v for k, v in t.items() if k != "total")
    assert parts <= t["total"] * 1.001
    assert t["solve"] == pytest.approx(sum(layer.wall_time_s for layer in rec.layers))
    assert t["bound"] == rec.certificate.bound_time_s
