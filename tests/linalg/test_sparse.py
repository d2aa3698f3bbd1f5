"""Sparse random networks (Theorem 3): masks, exact rank decisions, P(full rank)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from normonly.api import reconstruct
from normonly.construct.layout import wide_widths
from normonly.errors import RankDeficientError
from normonly.linalg.full_rank_probability import (
    critical_density_draws,
    estimate_full_rank_probability,
    necessary_density,
    wilson_interval,
)
from normonly.linalg.modular import cascade, dense_rank, reduce_mod
from normonly.linalg.rank import full_row_rank, modular_rank
from normonly.linalg.sparse_check import dead_unit_free_probability, require_full_row_rank
from normonly.nets.io import load_network
from normonly.nets.layers import MaskedLinear
from normonly.nets.target import TargetMLP
from normonly.nets.wide import NormNet


def _widths(target: TargetMLP, overparam: float) -> list[int]:
    return wide_widths(target, overparam=overparam, width=None, uniform_width=False)


def _masked(d_out, d_in, m, p, g):
    A = torch.randn(d_out, m, generator=g, dtype=torch.float64)
    B = torch.randn(m, d_in, generator=g, dtype=torch.float64)
    A *= torch.rand(d_out, m, generator=g, dtype=torch.float64) < p
    B *= torch.rand(m, d_in, generator=g, dtype=torch.float64) < p
    return A, B


# --- masks ---------------------------------------------------------------------------------


def test_masks_reproducible_from_seed_and_saved(tmp_path):
    a = NormNet([5, 40, 5, 30, 3], density=0.3, seed=11)
    b = NormNet([5, 40, 5, 30, 3], density=0.3, seed=11)
    c = NormNet([5, 40, 5, 30, 3], density=0.3, seed=12)
    assert all(isinstance(lin, MaskedLinear) for lin in a.linears)
    for la, lb, lc in zip(a.linears, b.linears, c.linears, strict=True):
        assert torch.equal(la.mask, lb.mask) and torch.equal(la.weight, lb.weight)
        assert not torch.equal(la.mask, lc.mask)
        assert torch.equal(la.weight, la.weight * la.mask)  # pruned entries are exact zeros
    assert "linears.0.mask" in a.state_dict()
    a.save(tmp_path / "net.safetensors")
    back = load_network(tmp_path / "net.safetensors")
    for la, lb in zip(a.linears, back.linears, strict=True):
        assert torch.equal(la.mask, lb.mask) and torch.equal(la.weight, lb.weight)


def test_frozen_nonzero_counts_the_kept_weights():
    net = NormNet([6, 50, 6], density=0.25, seed=3)
    counts = net.parameter_counts()
    kept = sum(int(lin.mask.sum()) for lin in net.linears)
    assert counts["frozen_nonzero"] == kept < counts["frozen"] == 6 * 50 * 2
    assert 0.15 < kept / counts["frozen"] < 0.35
    dense = NormNet([6, 50, 6], seed=3).parameter_counts()
    assert dense["frozen_nonzero"] == dense["frozen"]


def test_dense_mask_is_the_dense_construction():
    f = TargetMLP.random([4, 5, 3], seed=2)
    dense = reconstruct(f, radius=1.0, overparam=2, seed=4, n_points=200)
    ones = reconstruct(f, radius=1.0, overparam=2, seed=4, density=1.0, n_points=200)
    sd, so = dense.net.state_dict(), ones.net.state_dict()
    assert sd.keys() == so.keys()
    assert all(torch.equal(sd[k], so[k]) for k in sd)  # byte-identical weights, γ and β
    # the weights are drawn before the mask: a sparse net's first layer is the dense one, masked
    sparse = NormNet(dense.net.widths, density=0.5, seed=4)
    assert torch.equal(sparse.weight(0), dense.net.weight(0) * sparse.linears[0].mask)


# --- the pre-check of the construction ---------------------------------------------------------


def test_forced_dead_unit_raises_with_the_message():
    f = TargetMLP.random([4, 4, 3], seed=0)
    net = NormNet(_widths(f, 1.0), density=0.9, seed=1)
    with torch.no_grad():  # wide unit 5 of layer 0 sees no input: a zero row of B
        net.linears[0].weight[5] = 0.0
        net.linears[0].mask[5] = 0.0
    with pytest.raises(
        RankDeficientError,
        match=r"rank 15, but an exact solve needs full row "
        r"rank 16.*1 dead wide unit.*what would work: .*density >= 0\.\d\d",
    ) as e:
        reconstruct(f, radius=1.0, density=0.9, net=net, n_points=100)
    assert (e.value.rank, e.value.needed) == (15, 16)
    assert isinstance(e.value, ValueError)


def test_too_low_density_raises_before_solving():
    f = TargetMLP.random([6, 6, 6], seed=0)
    with pytest.raises(
        RankDeficientError,
        match=r"has rank \d+, but .* full row rank 36.*"
        r"zero row\(s\) of K.*overparam 2 \(width 72\) with density >= ",
    ):
        reconstruct(f, radius=1.0, density=0.05, seed=0, n_points=100)


def test_require_full_row_rank_passes_full_and_skips_too_large():
    g = torch.Generator().manual_seed(0)
    A, B = _masked(3, 3, 18, 0.7, g)
    assert require_full_row_rank(A, B).full is True
    assert require_full_row_rank(A, B, max_work=0) is None  # undecided: the solver judges


@given(
    widths=st.lists(st.integers(3, 4), min_size=2, max_size=3),
    overparam=st.sampled_from([2.0, 4.0]),
    density=st.floats(0.8, 1.0),
    seed=st.integers(0, 10_000),
)
def test_property_sparse_reconstruction_is_exact(widths, overparam, density, seed):
    # P(full rank) = 1 in 3000 exact draws for every layer shape here (safely above threshold)
    f = TargetMLP.random(widths, seed=seed)
    rec = reconstruct(f, radius=1.0, density=density, overparam=overparam, seed=seed, n_points=300)
    assert rec.certificate.passed
    assert rec.certificate.max_rel_error <= 1e-9


@pytest.mark.slow
def test_width16_density_half_overparam2_is_exact():
    for s in range(3):
        rec = reconstruct(
            TargetMLP.random([16, 16, 16], seed=s), density=0.5, overparam=2, seed=s,
            n_points=2000, radius=1.0,
        )
        assert rec.certificate.passed and rec.certificate.max_rel_error <= 1e-9


# --- exact rank ------------------------------------------------------------------------------


def test_modular_rank_matches_svd_rank_on_integer_matrices():
    rng = np.random.default_rng(0)
    for _ in range(60):
        R, C = rng.integers(1, 30, 2)
        r = int(rng.integers(0, min(R, C) + 1))
        M = rng.integers(-4, 5, (R, r)) @ rng.integers(-4, 5, (r, C))  # rank <= r by design
        assert modular_rank(M) == np.linalg.matrix_rank(M.astype(float))
    M = rng.integers(-3, 4, (300, 40)) @ rng.integers(-3, 4, (40, 280))  # several 256-blocks
    assert modular_rank(M) == 40
    assert modular_rank(np.array([[1, 2], [2, 4]])) == 1


def test_dense_rank_early_exit_and_residues():
    x = reduce_mod(np.array([3.0 * 8_388_593 + 5, -8_388_593 - 1, 2.0**52]))
    assert np.all(np.abs(x) <= 8_388_593 / 2 + 2)
    assert x[0] == 5 and x[1] == -1
    M = reduce_mod(np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]))
    assert dense_rank(M) == 1 and dense_rank(M, early=True) is None


def test_cascade_hand_case():
    # K = [[x, y, 0], [0, z, 0], [0, 0, w]]: column 0 and rows 1, 2 are singletons -> rank 3
    rows, cols = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    pivots, live_r, live_c, empty = cascade(rows, cols, 3, 3, stop_on_empty=False)
    assert (pivots, live_r.sum(), live_c.sum(), empty) == (3, 0, 0, 0)
    # two rows that only unit 0 reaches: dependent, one becomes empty
    rows, cols = np.array([0, 1]), np.array([0, 0])
    assert cascade(rows, cols, 2, 1, stop_on_empty=True) is None
    assert cascade(rows, cols, 2, 1, stop_on_empty=False)[0] == 1


def test_exact_rank_agrees_with_svd_on_masked_gaussian_instances():
    g = torch.Generator().manual_seed(1)
    for d_out, d_in, m, p in [
        (3, 3, 9, 0.6),
        (4, 3, 12, 0.5),
        (4, 4, 32, 0.3),
        (5, 4, 20, 0.8),
        (2, 5, 6, 0.9),
        (6, 6, 72, 0.25),
        (4, 4, 16, 1.0),
    ]:
        for _ in range(4):
            A, B = _masked(d_out, d_in, m, p, g)
            exact, svd = full_row_rank(A, B, method="exact"), full_row_rank(A, B, method="svd")
            assert exact.rank == svd.rank, (d_out, d_in, m, p)
            assert full_row_rank(A, B, method="gram").rank == svd.rank
    # a duplicated unit is a coincidence of values, not of the mask: the exact check judges the
    # mask (generic rank 9), the float check this instance (rank 8); the solver catches it
    A, B = _masked(3, 3, 9, 1.0, g)
    A[:, 8], B[8] = A[:, 7], B[7]
    assert (full_row_rank(A, B).rank, full_row_rank(A, B, method="svd").rank) == (9, 8)
    # deficient by the mask: a dead unit
    A, B = _masked(3, 3, 9, 1.0, g)
    A[:, 2] = 0.0
    report = full_row_rank(A, B)
    assert (report.rank, report.dead_units, report.full) == (8, 1, False)
    assert report.sigma_min_rel is not None and report.sigma_min_rel < 1e-12


# --- P(full rank) --------------------------------------------------------------------------


def test_probability_estimator_sanity():
    dense = estimate_full_rank_probability(5, 25, 1.0, trials=8, seed=0)
    assert dense["p_full"] == 1.0 and dense["wilson_low"] > 0.6
    tiny = estimate_full_rank_probability(5, 50, 0.01, trials=8, seed=0)
    assert tiny["p_full"] == 0.0 and tiny["decided_by"]["bounds"] == 8
    svd = estimate_full_rank_probability(4, 32, 0.5, trials=10, seed=3, method="svd")
    assert svd["full"] == estimate_full_rank_probability(4, 32, 0.5, trials=10, seed=3)["full"]
    with pytest.raises(ValueError, match="method"):
        estimate_full_rank_probability(4, 16, 0.5, trials=1, seed=0, method="qr")


def test_critical_draws_agree_with_the_estimator_and_the_bounds():
    grid = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0]
    res = critical_density_draws(5, 25, grid, draws=12, seed=4)
    for i in (1, 3, 5, 7):
        est = estimate_full_rank_probability(5, 25, grid[i], trials=12, seed=4)
        assert est["full"] == res["full_counts"][i]
    assert res["full_counts"] == sorted(res["full_counts"]) and res["full_counts"][-1] == 12
    from normonly.linalg.full_rank_probability import _draw

    for t in range(5):  # at the necessary density the masks are deficient by the bounds
        UA, UB, _ = _draw(5, 5, 25, 4, t)
        p_lo = necessary_density(UA, UB)
        A = torch.from_numpy(UA * (UA < p_lo))
        B = torch.from_numpy(UB * (UB < p_lo))
        assert full_row_rank(A, B).full is False


def test_dead_unit_formula_and_wilson():
    # the dead-unit estimate predicts 0.53 at d = 12, p = 0.4, m = d²
    assert dead_unit_free_probability(12, 12, 144, 0.4) == pytest.approx(0.53, abs=0.01)
    assert dead_unit_free_probability(12, 12, 144, 0.4) == pytest.approx(
        math.exp(-2 * 144 * 0.6**12), rel=0.01
    )
    lo, hi = wilson_interval(9, 10)
    assert 0.55 < lo < 0.9 < hi <= 1.0
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
