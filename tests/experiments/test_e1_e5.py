"""E1 and E5 on tiny configs: rows, figures, summaries computed from the rows."""

from __future__ import annotations

from normonly.experiments.e1_exact import EXPERIMENT as E1
from normonly.experiments.e1_exact import E1Config
from normonly.experiments.e5_width import EXPERIMENT as E5
from normonly.experiments.e5_width import E5Config

PNG = b"\x89PNG\r\n\x1a\n"


def test_e1_tiny_sweep_is_exact(tmp_path):
    cfg = E1Config(widths=(2, 5), depths=(1, 2), overparams=(1.0, 2.0), seeds=(0,), n_points=300)
    rows = E1.run(cfg)
    assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
    assert all(r["passed"] and r["max_rel_error"] <= 1e-9 for r in rows)
    assert all(r["dtype"] == "float64" and r["radius"] == 1.0 for r in rows)
    for p in E1.figures(cfg, rows, tmp_path):
        assert p.read_bytes().startswith(PNG)
    table, sentence = E1.summarize(cfg, rows)
    assert "| width | depth |" in table and "8 of 8" in sentence
    assert all(r["cond2_method"] == "svd" and r["cond2"] >= 1 for r in rows)


def test_e5_rank_is_min_m_n_and_exact_only_from_n(tmp_path):
    cfg = E5Config(shapes=("3x2",), ratios=(0.5, 1.0, 1.5), seeds=(0,), n_points=300)
    rows = E5.run(cfg)
    assert [r["m"] for r in rows] == [3, 6, 9]
    assert [r["rank"] for r in rows] == [3, 6, 6]
    assert [r["passed"] for r in rows] == [False, True, True]
    assert rows[0]["max_rel_error"] > 1e-3
    assert E5.figures(cfg, rows, tmp_path)[0].read_bytes().startswith(PNG)
    table, sentence = E5.summarize(cfg, rows)
    assert "none is exact" in sentence and "sharp step between m = 3 and 6" in sentence
