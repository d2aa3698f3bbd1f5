"""E3 (sparsity threshold) on a tiny config: rows, thresholds, law fits, figures, summary, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from normonly.cli import main
from normonly.experiments import registry
from normonly.experiments.e3 import EXPERIMENT as E3
from normonly.experiments.e3 import LAWS, E3Config, curves, law_fits, threshold, trials
from normonly.experiments.e3.stats import earlier_thresholds, p_star
from normonly.experiments.references import load_references
from normonly.linalg.full_rank_probability import estimate_full_rank_probability

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny():
    cfg = E3Config(
        ds=(3, 7),
        overparams=(1, 4),
        draws=12,
        draws_per_trial=6,
        grid_points=16,
        recon_ds=(4,),
        recon_overparams=(1, 4),
        recon_factors=(0.4, 2.0),
        n_points=200,
    )
    return cfg, E3.run(cfg)


def test_trials_split_draws_and_have_unique_keys():
    cfg = E3Config.full()
    ts = trials(cfg)
    assert len({t["key"] for t in ts}) == len(ts)
    rank = [t for t in ts if t["kind"] == "rank"]
    assert {(t["d"], t["overparam"]) for t in rank if t["d"] > 64} == {(96, 4), (128, 4)}
    for d, q in {(t["d"], t["overparam"]) for t in rank}:
        blocks = [t for t in rank if (t["d"], t["overparam"]) == (d, q)]
        assert sum(t["draws"] for t in blocks) == cfg.draws
    with pytest.raises(ValueError, match="ds"):
        E3Config(ds=(1, 4))


def test_threshold_interpolates_in_log_density():
    grid = [0.1, 0.2, 0.4]
    assert threshold(grid, [0.0, 0.8, 1.0], 0.9) == pytest.approx(math.sqrt(0.2 * 0.4))
    assert threshold(grid, [0.95, 1.0, 1.0], 0.9) == 0.1
    assert math.isnan(threshold(grid, [0.0, 0.5, 0.8], 0.9))


def test_tiny_sweep_curves_match_the_estimator(tiny):
    cfg, rows = tiny
    cs = curves(rows)
    assert set(cs) == {(d, q) for d in cfg.ds for q in cfg.overparams}
    c = cs[(7, 1)]
    assert c["draws"] == 12 and c["counts"] == sorted(c["counts"])
    # the two draw blocks are the draws 0-5 and 6-11 of the estimator's seeded sequence
    seed = next(r["seed"] for r in rows if r["key"] == "rank-d7-q1-b0")
    i = len(c["densities"]) - 3
    est = estimate_full_rank_probability(7, 49, c["densities"][i], trials=12, seed=seed)
    assert est["full"] == c["counts"][i]
    # overparameterization lowers the threshold
    for d in cfg.ds:
        p1, p4 = (
            threshold(cs[(d, q)]["densities"], [k / 12 for k in cs[(d, q)]["counts"]], 0.9)
            for q in (1, 4)
        )
        assert p4 < p1


def test_tiny_reconstructions_are_exact_or_refused(tiny):
    cfg, rows = tiny
    recon = [r for r in rows if r["kind"] == "recon"]
    assert len(recon) == 4
    for r in recon:
        assert r["frozen_nonzero"] <= r["frozen"]
        if r["ok"]:
            assert r["passed"] and r["max_rel_error"] <= 1e-9
        else:
            assert r["rank"] < r["needed"] and "what would work" in r["error"]
    assert any(r["ok"] for r in recon)


@pytest.mark.slow
def test_law_fits_figures_and_summary(tiny, tmp_path):
    cfg, rows = tiny
    fits = law_fits(rows, cfg.level)
    assert set(fits) == {1, 4}
    for f in fits.values():
        assert f["slope"] < 0 and f["slope_ci"][0] <= f["slope"] <= f["slope_ci"][1]
        assert set(f["laws"]) == set(LAWS) and set(f["fitting"]) <= set(LAWS)
    paths = E3.figures(cfg, rows, tmp_path)
    assert [p.name for p in paths] == [
        "e3_full_rank_vs_density.png",
        "e3_threshold_vs_width.png",
        "e3_reconstruction.png",
    ]
    assert all(p.read_bytes().startswith(PNG) for p in paths)
    table, sentence = E3.summarize(cfg, rows)
    assert "non-zeros/params at p*" in table and "log-log slope" in table and "built/tried" in table
    assert "earlier p*" in table and earlier_thresholds()[1] in table
    assert sentence.startswith("E3: exact-rank sweeps at d = 3, 7, m = 1/4·d², 12 draws")
    assert "at m = 1·d² (d = 3, 7)" in sentence and "fits best" not in sentence


@pytest.mark.slow
def test_cli_runs_e3(tmp_path):
    assert registry.get("E3") is E3
    sets = [
        "ds=3,4",
        "overparams=2",
        "draws=4",
        "draws_per_trial=4",
        "grid_points=8",
        "recon_ds=3",
        "recon_overparams=2",
        "recon_factors=2",
        "n_points=100",
    ]
    argv = ["run", "E3", "--out", str(tmp_path), "--no-progress", "-q"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    run = next((tmp_path / "E3").iterdir())
    assert (run / "rows.jsonl").read_text().count("\n") == 3
    assert len(list((run / "figures").glob("*.png"))) == 3


# ---- doctored rows: the sentence follows the data -------------------------------------------


def _synthetic_rows(ds=(4, 8, 16, 32, 64), q=1, draws=40, seed=0):
    """Rank rows whose draws become full rank around the middle of a fine geometric grid."""
    rng = np.random.default_rng(seed)
    grid = [float(x) for x in np.geomspace(0.01, 1.0, 48)]
    rows = []
    for d in ds:
        ff = [int(x) for x in np.clip(24 + rng.integers(-3, 4, size=draws), 0, len(grid))]
        rows.append(
            {
                "key": f"rank-d{d}-q{q}-b0",
                "kind": "rank",
                "d": d,
                "overparam": q,
                "first_draw": 0,
                "draws": draws,
                "m": q * d * d,
                "densities": grid,
                "first_full": ff,
                "full_counts": [sum(f <= i for f in ff) for i in range(len(grid))],
                "checks": {k: {"count": draws, "seconds": 0.0} for k in ("dense", "cascade")},
            }
        )
    return rows


def _doctor(rows, target, level=0.9):
    """Scale each row's grid so that its p* becomes ``target(d)`` exactly (log interpolation)."""
    cs = curves(rows)
    out = []
    for r in rows:
        s = target(r["d"]) / p_star(cs[(r["d"], r["overparam"])], level)
        out.append({**r, "densities": [x * s for x in r["densities"]]})
    return out


def _summary(rows):
    cfg = E3Config(ds=(4,), overparams=(1,), draws=40, recon_ds=())
    return E3.summarize(cfg, rows)


def _assert_probabilities(fits):
    for f in fits.values():
        assert all(0 < p <= 1 for p in f["p_star"].values())
        for name, v in f["laws"].items():
            assert all(v["c"] * LAWS[name](d) <= 1.0 for d in v["ds"])


@pytest.mark.parametrize(
    ("law", "c", "phrase"),
    [
        ("√(ln d/d)", 0.8, "only √(ln d/d) fits (p* ≈ 0.80"),
        ("ln d/d", 2.0, "consistent with 2 ln d/d as stated"),
    ],
)
def test_sentence_names_the_law_that_fits_exactly(law, c, phrase):
    rows = _doctor(_synthetic_rows(), lambda d: c * LAWS[law](d))
    fits = law_fits(rows, 0.9)
    assert fits[1]["laws"][law]["chi2"] == pytest.approx(0.0, abs=1e-9)
    assert fits[1]["laws"][law]["c"] == pytest.approx(c)
    lo, hi = fits[1]["laws"][law]["c_ci"]
    assert lo <= c <= hi
    _assert_probabilities(fits)
    _, sentence = _summary(rows)
    assert phrase in sentence and "none of the three laws" not in sentence
    assert "d = 4, 8, 16, 32, 64" in sentence and "40 draws per cell" in sentence


def test_sentence_says_none_fits_when_thresholds_are_random():
    rng = np.random.default_rng(3)
    ds = (4, 8, 16, 32, 64)
    # random thresholds, alternately high and low so that no monotone law can follow them
    noise = {d: float(np.exp(rng.uniform(0.6, 1.2) * (-1) ** i)) for i, d in enumerate(ds)}
    rows = _doctor(_synthetic_rows(ds), lambda d: min(0.95, 0.15 * noise[d]))
    fits = law_fits(rows, 0.9)
    assert fits[1]["fitting"] == []
    _assert_probabilities(fits)
    table, sentence = _summary(rows)
    assert "none of the three laws fits within the bootstrap spread" in sentence
    assert "fits best" not in sentence


def test_fitted_predictions_above_one_leave_their_width_out():
    # p* = 0.97 at d = 4 and 3·ln d/d elsewhere: a free c·ln d/d would predict > 1 at d = 4
    ds = (4, 8, 16, 32, 64)
    rows = _doctor(_synthetic_rows(ds), lambda d: 0.97 if d == 4 else 3.0 * math.log(d) / d)
    fits = law_fits(rows, 0.9)
    v = fits[1]["laws"]["ln d/d"]
    assert 4 in v["excluded"] and v["c"] == pytest.approx(3.0)
    _assert_probabilities(fits)
    table, _ = _summary(rows)
    assert "left out: 4" in table


def test_references_are_a_data_file_with_sources():
    refs = load_references()
    for name in ("e3_earlier_thresholds", "e6_cifar10_resnet34_bn_only", "e6_mnist1d_baselines"):
        assert refs[name]["source"] and refs[name]["what"]
    cifar = refs["e6_cifar10_resnet34_bn_only"]
    assert len(cifar["kept_fraction"]) == len(cifar["test_accuracy_percent"])
    earlier, source = earlier_thresholds()
    assert earlier[(16, 2)] == 0.14 and "earlier independent measurement" in source
