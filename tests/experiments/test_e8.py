"""E8: the random-CNN trial runs, the figure is drawn from rows, the prose follows the rows."""

from __future__ import annotations

import pytest

from normonly.experiments import registry
from normonly.experiments.e8_cnn import E8Config, figures, run_trial, summarize, trials


def _digits_row(**kw) -> dict:
    row = {"kind": "digits", "seed": 0, "overparam": 2.0, "target_widths": [64, 256, 128, 10],
           "widths": [72, 576, 640], "burkholz_count": [36, 288, 320],
           "mlp_count": [16384, 32768, 1280], "mlp_frozen": 36004864, "trainable": 2620,
           "frozen": 53160, "identical_predictions": 1.0, "max_logit_error_test": 7.9e-13,
           "max_rel_error": 1.4e-14, "bound_rel": 1.2e-10, "passed": True, "radius": 4.81,
           "test_acc_original": 0.94, "max_abs_error": 1e-13, "error_bound": 1e-9}  # fmt: skip
    return {**row, **kw}


def test_registered_and_config_validates():
    assert registry.get("e8").name == "E8"
    with pytest.raises(ValueError, match="overparam"):
        E8Config(overparam=0.5)
    keys = [t["key"] for t in trials(E8Config.quick())]
    assert keys[0] == "digits-s0" and len(keys) == len(set(keys))


def test_random_trial_row_and_figure(tmp_path):
    cfg = E8Config(channels=(2,), sweep_overparams=(2.0,), n_points=100)
    trial = next(t for t in trials(cfg) if t["kind"] == "random")
    row = run_trial(cfg, trial)
    assert row["passed"] and row["widths"] == [2 * 18, 2 * 320]
    assert row["burkholz_count"] == [18, 320]
    assert row["mlp_count"] == [128 * 64, 10 * 128]  # the pool is folded into the Linear
    rows = [_digits_row(), row]
    paths = figures(cfg, rows, tmp_path)
    assert [p.name for p in paths] == ["e8_cnn.png"]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_summary_sentences_follow_the_rows():
    cfg = E8Config.quick()
    sweep = {"kind": "random", "overparam": 1.0, "seed": 0, "passed": False, "max_rel_error": 2e-12,
             **{k: v for k, v in _digits_row().items() if k not in ("kind", "passed",
                "max_rel_error", "identical_predictions", "max_logit_error_test")}}  # fmt: skip
    _, text = summarize(cfg, [_digits_row(), sweep])
    assert "every test prediction is identical" in text and "1 of 1 certificates passed" in text
    assert "78x more" in text and "for overparam in none" in text
    _, text = summarize(cfg, [_digits_row(identical_predictions=0.99, passed=False)])
    assert "99.00% of the test images" in text and "0 of 1 certificates passed" in text
    assert summarize(cfg, [])[1] == "No E8 trials were run."
