"""The E1, E2, E5 and E7 sentences are computed from the rows: doctored rows change them."""

from __future__ import annotations

import re

import pytest

from normonly.experiments.e1_exact import EXPERIMENT as E1
from normonly.experiments.e1_exact import E1Config
from normonly.experiments.e2_residual import EXPERIMENT as E2
from normonly.experiments.e2_residual import E2Config
from normonly.experiments.e5_width import EXPERIMENT as E5
from normonly.experiments.e5_width import E5Config
from normonly.experiments.e7_classifier import E7Config
from normonly.experiments.e7_classifier import summarize as e7_summarize

NUM = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def _sane(sentence: str) -> None:
    """No 'from X to X', no 'X → X', no percentage above 100, nothing outside the repo."""
    for a, b in re.findall(rf"from ({NUM}) to ({NUM})", sentence):
        assert a != b, sentence
    for a, b in re.findall(rf"({NUM}) → ({NUM})", sentence):
        assert a != b, sentence
    for p in re.findall(rf"({NUM})%", sentence):
        assert float(p) <= 100, sentence
    assert "docs/" not in sentence and "http" not in sentence


def _count(sentence: str, phrase: str) -> tuple[int, int]:
    m = re.search(rf"(\d+) of (\d+) {phrase}", sentence)
    assert m, sentence
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def e1():
    cfg = E1Config(widths=(2, 3), depths=(1, 2), overparams=(1.0, 2.0), seeds=(0,), n_points=200)
    return cfg, E1.run(cfg)


@pytest.fixture(scope="module")
def e2():
    cfg = E2Config(targets=("3-3-2",), radii=(1.0,), seeds=(0, 1), n_points=200)
    return cfg, E2.run(cfg)


@pytest.fixture(scope="module")
def e5():
    cfg = E5Config(shapes=("3x2",), ratios=(0.5, 1.0, 1.5), seeds=(0, 1), n_points=200)
    return cfg, E5.run(cfg)


def _e7_rows() -> list[dict]:
    """Two synthetic E7 rows with every key the summary reads."""
    base = {
        "seed": 0, "method": "wide", "target_widths": [4, 3, 2], "radius": 2.0, "trainable": 10,
        "frozen": 100, "test_acc_original": 0.9, "test_acc_reconstructed": 0.9,
        "identical_predictions": 1.0, "max_logit_error_test": 1e-13, "max_abs_error": 2e-13,
        "max_rel_error": 1e-14, "passed": True, "dtype": "float64", "n_points": 200,
    }  # fmt: skip
    other = dict(base, dataset="mnist1d", key="mnist1d-wide-s0", max_logit_error_test=3e-13)
    return [dict(base, dataset="digits", key="digits-wide-s0"), other]


def test_e1_sentence_follows_the_rows(e1):
    cfg, rows = e1
    _, s = E1.summarize(cfg, rows)
    _sane(s)
    assert _count(s, "reconstructions passed") == (len(rows), len(rows))
    assert "custom profile" in s and "depths 1, 2" in s and "float64" in s
    assert "2-norm (SVD)" in s and "LAPACK" not in s and "7-23x" not in s
    none = [dict(r, passed=False) for r in rows]
    _, s2 = E1.summarize(cfg, none)
    _sane(s2)
    assert _count(s2, "reconstructions passed") == (0, len(rows)) and "not passed:" in s2
    worse = [dict(r, max_rel_error=r["max_rel_error"] * 1e8 + 1e-8) for r in rows]
    _, s3 = E1.summarize(cfg, worse)
    assert s3 != s
    # equal conditions at both ends: no "fell from X to X"
    flat = [dict(r, cond2=5.0) for r in rows]
    _, s4 = E1.summarize(cfg, flat)
    _sane(s4)
    assert "stayed at 5" in s4


def test_e1_old_rows_name_the_estimator_per_solver(e1):
    cfg, rows = e1
    old = [{k: v for k, v in r.items() if k not in ("cond2", "cond2_method")} for r in rows]
    old = [dict(r, solvers=["lu"] if r["overparam"] == 1.0 else ["svd"]) for r in old]
    table, s = E1.summarize(cfg, old)
    _sane(s)
    assert "lu: LAPACK 1-norm estimate" in table.splitlines()[0]
    assert "(lu: LAPACK 1-norm estimate)" in s and "(svd: 2-norm (SVD))" in s


def test_e2_sentence_follows_the_rows(e2):
    cfg, rows = e2
    _, s = E2.summarize(cfg, rows)
    _sane(s)
    n = len(rows)
    assert _count(s, "residual reconstructions passed") == (n, n)
    assert "frozen parameters unchanged at" in s  # overparam 1: the frozen count does not move
    _, s2 = E2.summarize(cfg, [dict(r, passed=False, max_rel_error=0.3) for r in rows])
    _sane(s2)
    assert _count(s2, "residual reconstructions passed") == (0, n)
    assert f"0 of {n} had a measured" in s2 and "3.0e-01 in every trial" in s2


def test_e5_threshold_is_located_from_the_rows(e5):
    cfg, rows = e5
    _, s = E5.summarize(cfg, rows)
    _sane(s)
    assert "none is exact" in s and "sharp step between m = 3 and 6" in s
    # every trial exact: no threshold can be located, and nothing says "none is exact"
    _, s2 = E5.summarize(cfg, [dict(r, passed=True) for r in rows])
    _sane(s2)
    assert "none is exact" not in s2 and "do not locate a threshold" in s2
    # no trial exact: no threshold
    _, s3 = E5.summarize(cfg, [dict(r, passed=False) for r in rows])
    assert "no threshold" in s3 and "0 of" in s3
    # the step shifted to the widest m
    shifted = [dict(r, passed=r["m"] == 9) for r in rows]
    _, s4 = E5.summarize(cfg, shifted)
    assert "from m = 9 on" in s4 and "between m = 6 and 9" in s4 and "at m = n" not in s4
    # one seed exact below the step: not called sharp
    leaky = [dict(r, passed=r["passed"] or (r["m"] == 3 and r["seed"] == 0)) for r in rows]
    _, s5 = E5.summarize(cfg, leaky)
    assert "some seeds exact below" in s5 and "sharp" not in s5 and "1 of 2 are exact" in s5


def test_e7_sentence_follows_the_rows():
    cfg = E7Config.quick()
    rows = _e7_rows()
    _, s = e7_summarize(cfg, rows)
    _sane(s)
    assert "quick profile" in s and "equals the original's in 2 of 2" in s
    assert "every test prediction is identical" in s and "2 of 2 certificates passed" in s
    bad = [dict(r, identical_predictions=0.99999, test_acc_reconstructed=0.8, passed=False)
           for r in rows]  # fmt: skip
    table, s2 = e7_summarize(cfg, bad)
    _sane(s2)
    _sane(table)
    assert "100.00%" not in s2 and ">99.99%" in s2 and "every test prediction" not in s2
    assert "equals the original's in 0 of 2" in s2 and "0 of 2 certificates passed" in s2
