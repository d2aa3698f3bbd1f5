"""E3 (sparsity threshold) on a tiny config: rows, thresholds, law fits, figures, summary, CLI."""

from __future__ import annotations

import math

import pytest

from normonly.cli import main
from normonly.experiments import registry
from normonly.experiments.e3 import EXPERIMENT as E3
from normonly.experiments.e3 import E3Config, curves, law_fits, threshold, trials
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
        assert f["slope"] < 0 and f["best"] in f["laws"]
        assert min(v["rms"] for v in f["laws"].values()) == f["laws"][f["best"]]["rms"]
    paths = E3.figures(cfg, rows, tmp_path)
    assert [p.name for p in paths] == [
        "e3_full_rank_vs_density.png",
        "e3_threshold_vs_width.png",
        "e3_reconstruction.png",
    ]
    assert all(p.read_bytes().startswith(PNG) for p in paths)
    table, sentence = E3.summarize(cfg, rows)
    assert "non-zeros/params at p*" in table and "fitted slope" in table and "built/tried" in table
    assert sentence.startswith("E3: at m = 1·d²") and "fits best" in sentence


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
