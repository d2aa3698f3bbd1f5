"""E2 (residual construction, width vs depth) on tiny configs: rows, figures, summary."""

from __future__ import annotations

import json
import math

import pytest

from normonly.cli import main
from normonly.experiments import registry
from normonly.experiments.e2_residual import EXPERIMENT as E2
from normonly.experiments.e2_residual import E2Config, parse_widths, partition_sizes, trials

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny():
    cfg = E2Config(targets=("4-4-3", "3-5-2"), radii=(1.0, 10.0), seeds=(0,), n_points=300)
    return cfg, E2.run(cfg)


def test_partition_sizes_run_from_d_in_down_to_one():
    assert partition_sizes([8, 8, 8, 8]) == [8, 4, 2, 1]
    assert partition_sizes([6, 10, 8, 3]) == [10, 8, 4, 2, 1]
    assert partition_sizes([5, 2]) == [5, 4, 2, 1]
    assert partition_sizes([1, 3]) == [1]


def test_trials_have_unique_keys_and_every_k():
    cfg = E2Config.full()
    ts = trials(cfg)
    assert len({t["key"] for t in ts}) == len(ts)
    for target in cfg.targets:
        ks = sorted({t["k"] for t in ts if t["target"] == target})
        assert ks == sorted(partition_sizes(parse_widths(target)))
    assert {t["radius"] for t in ts} == {1.0, 10.0}


@pytest.mark.parametrize("bad", ["8", "8-0-2", "a-b", ""])
def test_bad_target_text_raises(bad):
    with pytest.raises(ValueError, match="at least two positive widths separated by dashes"):
        parse_widths(bad)


def test_tiny_sweep_is_exact_and_counts_follow_the_formula(tiny):
    cfg, rows = tiny
    assert len(rows) == len(trials(cfg)) == 2 * (3 + 4)  # k in {4, 2, 1} and {5, 4, 2, 1}, 2 radii
    for r in rows:
        assert r["passed"] and r["max_rel_error"] <= 1e-9, r["key"]
        widths = r["target_widths"]
        ks = [min(r["k"], a) for a in widths[:-1]]
        assert r["n_blocks"] == sum(math.ceil(a / k) for a, k in zip(widths[:-1], ks, strict=True))
        # overparam 1: the frozen count is 4 r Σ d_in d_out whatever k is
        pairs = zip(widths[:-1], widths[1:], strict=True)
        assert r["frozen"] == 2 * r["stream_width"] * sum(a * b for a, b in pairs)
        assert r["dtype"] == "float64" and r["n_points"] == 300
    by_k = {r["k"]: r for r in rows if r["target"] == "4-4-3" and r["radius"] == 1.0}
    assert by_k[4]["hidden_width"] == by_k[4]["wide_width"] == 16  # k = d_in: wide width
    assert (by_k[1]["hidden_width"], by_k[1]["n_blocks"]) == (4, 8)


def test_figures_and_summary_come_from_the_rows(tiny, tmp_path):
    cfg, rows = tiny
    table, sentence = E2.summarize(cfg, rows)
    assert "| target | k | R |" in table and table.count("\n") == len(rows) + 1
    assert f": {len(rows)} of {len(rows)} residual reconstructions passed" in sentence
    assert "4-4-3 (k = 4 to 1): hidden width 16 → 4, depth 2 → 8 blocks" in sentence
    # a failed row must show up in the sentence and the figure (marked, not hidden)
    broken = [dict(rows[0], passed=False, max_rel_error=0.5)] + rows[1:]
    _, sentence = E2.summarize(cfg, broken)
    assert f": {len(rows) - 1} of {len(rows)} residual" in sentence and "5.0e-01" in sentence
    paths = E2.figures(cfg, broken, tmp_path)  # exact and not-exact markers both drawn
    assert len(paths) == 2 and all(p.read_bytes().startswith(PNG) for p in paths)


def test_e2_is_registered_and_runs_from_the_cli(tmp_path):
    assert registry.get("E2") is E2
    code = main([
        "-q", "run", "E2", "--out", str(tmp_path), "--no-progress", "--set", "targets=3-2",
        "--set", "radii=2", "--set", "seeds=0", "--set", "n_points=50",
    ])  # fmt: skip
    assert code == 0
    (rows_file,) = tmp_path.glob("E2/*/rows.jsonl")
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    assert sorted(r["k"] for r in rows) == [1, 2, 3]
    assert all(r["passed"] and r["radius"] == 2.0 for r in rows)
