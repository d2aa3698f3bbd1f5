"""E4 (construction vs gradient descent) on a tiny config: trials, rows, tables, figures."""

from __future__ import annotations

import json

import pytest
import torch

from normonly.experiments import registry
from normonly.experiments.e4 import EXPERIMENT, FIT_METHODS, E4Config, run_trial, trials
from normonly.experiments.runner import run_experiment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TINY = E4Config(
    target_widths=(2, 2, 2), overparams=(1.0,), seeds=(0, 1, 2), steps=4, n_train=64,
    n_val=16, n_test=32, adam_lrs=(0.01,), sgd_lrs=(0.01, 0.1), baseline_lrs=(0.01,),
    why_overparams=(1.0,), why_noise=(1e-8,), why_steps=3, gn_points=8,
)  # fmt: skip


def test_registered_and_presets_valid():
    assert registry.get("e4") is EXPERIMENT
    quick = E4Config.quick()
    keys = [t["key"] for t in trials(quick)]
    assert len(keys) == len(set(keys))
    assert len(quick.seeds) >= 3 and {"lbfgs", "adam"} <= set(quick.why_optimizers)
    methods = {t["method"] for t in trials(quick) if t["kind"] == "fit"}
    assert methods == set(FIT_METHODS)
    assert len(trials(E4Config.full())) > len(keys)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="learning rate"):
        TINY.replace(adam_lrs="0.01,-1")
    with pytest.raises(ValueError, match="why_overparams"):
        TINY.replace(why_overparams="4")
    with pytest.raises(ValueError, match="why_optimizers"):
        TINY.replace(why_optimizers="rmsprop")


def _trial(kind: str, **match) -> dict:
    return next(
        t
        for t in trials(TINY)
        if t["kind"] == kind and t["seed"] == 0 and all(t[k] == v for k, v in match.items())
    )


@pytest.mark.slow  # the first torch.func call imports functorch (~2 s)
def test_construction_row_is_exact_and_reports_conditioning():
    row = run_trial(TINY, _trial("construction"))
    eps = torch.finfo(torch.float64).eps
    assert row["test_rel_error"] < 1e3 * eps
    assert row["n_norm_params"] == 2 * (4 + 2 + 4 + 2) == len(row["gn_spectrum"])
    assert 0 < row["gn_rank"] < row["n_norm_params"]  # flat directions exist at θ*
    assert row["gn_cond"] == pytest.approx(row["gn_lambda_max"] / row["gn_lambda_min_nonzero"])
    json.dumps(row, allow_nan=False)


@pytest.mark.parametrize("method", FIT_METHODS)
def test_fit_rows_have_histories_and_counts(method):
    row = run_trial(TINY, _trial("fit", method=method))
    assert len(row["hist_step"]) == len(row["hist_time_s"]) == len(row["hist_test_rel"])
    assert row["hist_step"][-1] == TINY.steps == row["steps_done"]
    expected = {"all_weights": 24 + 2 * 4 + 4 * 2 + 2 * 4 + 4 * 2, "last_layer": 4 * 2}
    assert row["n_trainable"] == expected.get(method, 24)
    json.dumps(row, allow_nan=False)


def test_why_row_lbfgs_lowers_the_error_from_a_perturbed_solution():
    row = run_trial(TINY, _trial("why", optimizer="lbfgs"))
    assert row["start_distance"] == pytest.approx(1e-8)
    assert row["test_rel_error"] <= row["start_test_rel_error"]


@pytest.mark.slow  # 30 tiny trials plus three matplotlib figures: a few seconds
def test_runner_writes_rows_table_sentence_and_figures(tmp_path):
    rows = run_experiment(EXPERIMENT, TINY, tmp_path, progress=False)
    assert len(rows) == len(trials(TINY)) == 3 * (1 + 7 + 2)
    figs = sorted((tmp_path / "E4").glob("*/figures/*.png"))
    assert [f.name for f in figs] == [
        "e4_error_vs_steps.png", "e4_error_vs_time.png", "e4_final.png", "e4_why.png"
    ]  # fmt: skip
    assert all(f.read_bytes().startswith(PNG_MAGIC) for f in figs)
    table, sentence = EXPERIMENT.summarize(TINY, rows)
    for name in ("construction", *FIT_METHODS):
        assert f"| {name} |" in table
    assert "| 3 |" in table  # seeds per method
    assert "the best gradient method" in sentence and "Hessian" in sentence
    # the lr of norm_sgd was chosen on validation data: the lower median validation error wins
    sgd = [r for r in rows if r.get("method") == "norm_sgd"]
    med = {lr: sorted(r["val_rel_error"] for r in sgd if r["lr"] == lr)[1] for lr in TINY.sgd_lrs}
    best = min(med, key=med.get)
    assert f"| norm_sgd | sgd | 0.01, 0.1 | {best:g} |" in table
    assert "float64" in sentence and "3 seeds" in sentence


def _doctor(rows, method, factor):
    """Rows with ``method``'s test and validation errors scaled by ``factor``."""
    out = []
    for r in rows:
        if r.get("method") == method:
            r = {**r, "test_rel_error": r["test_rel_error"] * factor,
                 "val_rel_error": r["val_rel_error"] * factor}  # fmt: skip
        out.append(r)
    return out


@pytest.mark.slow
def test_doctored_rows_change_the_conclusion(tmp_path):
    from normonly.experiments.e4 import conclusion

    rows = run_experiment(EXPERIMENT, TINY, tmp_path, progress=False)
    base = conclusion(rows)
    better = conclusion(_doctor(rows, "last_layer", 1e-6))
    assert better != base and "best gradient method is last_layer" in better
    # restarts that end above their start: the optimizer 'drifts away'
    drift = [{**r, "test_rel_error": 10 * r["start_test_rel_error"]} if r["kind"] == "why"
             else r for r in rows]  # fmt: skip
    assert conclusion(drift).count("drifts away") == 2 > base.count("drifts away")
