"""solve_scales: every solver gives the minimum-norm scales; auto's choice; rank and accuracy."""

from __future__ import annotations

import math

import pytest
import torch

from normonly.errors import RankDeficientError
from normonly.linalg.cgne import cgne
from normonly.linalg.khatri_rao import KhatriRaoOperator, khatri_rao
from normonly.linalg.solve import (
    ITERATIVE_MIN_RATIO,
    SVD_MAX_ENTRIES,
    SolveInfo,
    choose_solver,
    solve_scales,
)

EPS = torch.finfo(torch.float64).eps


def _system(d_out, d_in, m, seed=0, device="cpu"):
    """Gaussian A, B, W scaled as in a NormNet (N(0, 1/fan_in))."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d_out, m, generator=g, dtype=torch.float64) / math.sqrt(m)
    B = torch.randn(m, d_in, generator=g, dtype=torch.float64) / math.sqrt(d_in)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / math.sqrt(d_in)
    return A.to(device), B.to(device), W.to(device)


def _min_norm(A, B, W):
    return torch.linalg.pinv(khatri_rao(A, B)) @ W.reshape(-1)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("solver", ["svd", "qr", "mixed", "cg", "lsqr", "auto"])
def test_every_solver_gives_the_minimum_norm_solution(solver):
    A, B, W = _system(4, 5, 40, seed=1)
    gamma, info = solve_scales(A, B, W, solver=solver)
    assert isinstance(info, SolveInfo) and info.shape == (20, 40)
    assert gamma.dtype == torch.float64 and gamma.shape == (40,)
    assert info.rel_residual <= 64 * EPS
    assert _rel(gamma, _min_norm(A, B, W)) <= 1e-10
    assert info.rank in (20, None) and info.cond >= 1.0 and info.wall_time_s >= 0


@pytest.mark.parametrize("solver", ["lu", "qr", "svd"])
def test_square_systems_have_the_unique_solution(solver):
    A, B, W = _system(4, 5, 20, seed=2)
    gamma, info = solve_scales(A, B, W, solver=solver)
    K = khatri_rao(A, B)
    exact = torch.linalg.solve(K, W.reshape(-1))
    assert info.rank == 20 and info.rel_residual <= 64 * EPS
    assert _rel(gamma, exact) <= 1e-10
    s = torch.linalg.svdvals(K)
    cond2 = float(s[0] / s[-1])
    assert cond2 / 30 <= info.cond <= cond2 * 30  # 1-norm estimates are within a factor n


def test_lu_rejects_a_non_square_system():
    A, B, W = _system(3, 3, 12)
    with pytest.raises(ValueError, match="square"):
        solve_scales(A, B, W, solver="lu")


def test_lu_falls_back_to_qr_on_a_singular_square_system():
    A, B, W = _system(3, 4, 12, seed=3)
    A[:, 0] = 0.0  # a dead unit: K has a zero column, so rank 11 < 12
    with pytest.raises(RankDeficientError) as err:
        solve_scales(A, B, W, solver="lu")
    assert err.value.rank == 11 and err.value.needed == 12
    assert "dead wide unit" in str(err.value)


def test_fewer_units_than_equations_raises_unless_allowed():
    A, B, W = _system(4, 5, 15, seed=4)
    with pytest.raises(RankDeficientError, match="fewer than d_in\\*d_out=20"):
        solve_scales(A, B, W)
    gamma, info = solve_scales(A, B, W, allow_rank_deficient=True)
    ls = torch.linalg.lstsq(khatri_rao(A, B), W.reshape(-1, 1)).solution[:, 0]
    assert info.rank == 15 and _rel(gamma, ls) <= 1e-10 and info.rel_residual > 1e-3


def test_a_zero_row_of_K_is_reported_with_its_cause():
    A, B, W = _system(3, 4, 40, seed=5)
    B[:, 2] = 0.0  # input 2 reaches no unit: rows (i, 2) of K vanish
    for solver in ("svd", "mixed"):
        with pytest.raises(RankDeficientError, match="zero row"):
            solve_scales(A, B, W, solver=solver)


def test_an_iterative_solve_that_runs_out_of_iterations_says_why():
    A, B, W = _system(6, 6, 36, seed=6)  # square: cond(K) in the hundreds
    with pytest.raises(RankDeficientError, match="maxiter=15") as err:
        solve_scales(A, B, W, solver="mixed", maxiter=15)
    assert err.value.rank == -1 and "overparam >= 1.5" in str(err.value)


def test_mixed_precision_reaches_the_requested_rtol_and_no_more():
    A, B, W = _system(12, 10, 240, seed=7)
    for bf16, label in ((False, "float32"), (True, "bfloat16")):
        loose_g, loose = solve_scales(A, B, W, solver="mixed", rtol=1e-8, bfloat16=bf16)
        tight_g, tight = solve_scales(A, B, W, solver="mixed", bfloat16=bf16)
        assert loose.rel_residual <= 1e-8
        assert tight.rel_residual <= 64 * EPS
        assert loose.iterations < tight.iterations
        assert label in tight.rank_method
        # minimum norm to far better than the low precision: γ = Kᵀ y is formed in float64
        assert _rel(tight_g, _min_norm(A, B, W)) <= 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bfloat16_passes_fall_back_when_the_system_is_too_ill_conditioned(seed):
    """m = 1.1 n: cond(K) ~ 40, too large for bfloat16 passes: float32 finishes the job."""
    A, B, W = _system(10, 10, 110, seed=seed)
    g, info = solve_scales(A, B, W, solver="mixed", bfloat16=True)
    assert info.rel_residual <= 64 * EPS
    assert _rel(g, _min_norm(A, B, W)) <= 1e-9
    # one bfloat16 pass measures cond(K) > FAST_MAX_COND, then float32 takes over
    assert info.rank_method.startswith("cg on K Kᵀ (") and " bfloat16 + " in info.rank_method
    assert "float32" in info.rank_method


def test_bfloat16_products_are_three_digits_and_summed_in_float32():
    from normonly.linalg.khatri_rao import BFloat16Normal, KhatriRaoOperator

    A, B, _ = _system(8, 9, 400, seed=4)
    V = torch.randn(8, 9, dtype=torch.float64)
    exact = KhatriRaoOperator(A, B).normal(V)
    for chunk in (400, 37):  # one block, and many blocks accumulated in float32
        got = BFloat16Normal(A, B, chunk=chunk).normal(V.float())
        assert got.dtype == torch.float32
        assert 1e-5 < float((got.double() - exact).norm() / exact.norm()) < 2e-2


def test_refinement_finishes_in_float64_when_the_low_precision_passes_stall():
    A, B, W = _system(5, 6, 60, seed=8)
    # an inner operator that is a poor copy of K (as float32 is of a very ill-conditioned K):
    # its corrections do not halve the float64 residual, so the solver must switch precision
    A_bad = _system(5, 6, 60, seed=99)[0]
    bad = KhatriRaoOperator(A_bad, B, dtype=torch.float32)
    res = cgne(KhatriRaoOperator(A, B), W, rtol=64 * EPS, maxiter=2000, inner=bad)
    assert res.converged and res.rel_residual <= 64 * EPS
    assert res.passes[0][0] == "float32" and res.passes[-1][0] == "float64"
    assert _rel(res.x, _min_norm(A, B, W)) <= 1e-10


def test_cg_condition_estimate_is_a_close_lower_bound():
    A, B, W = _system(8, 8, 128, seed=9)
    s = torch.linalg.svdvals(khatri_rao(A, B))
    cond2 = float(s[0] / s[-1])
    _, info = solve_scales(A, B, W, solver="cg")
    assert 0.7 * cond2 <= info.cond <= 1.0001 * cond2


def test_auto_picks_by_size_and_shape():
    assert choose_solver(20, 40, dense_ok=True, deficient=False, device="cpu") == "svd"
    big = int(math.isqrt(SVD_MAX_ENTRIES)) + 1  # n*m just above the SVD limit
    ratio = math.ceil(ITERATIVE_MIN_RATIO * big)
    assert choose_solver(big, ratio, dense_ok=True, deficient=False, device="cpu") == "mixed"
    assert choose_solver(big, big, dense_ok=True, deficient=False, device="cpu") == "lu"
    assert choose_solver(big, big + 5, dense_ok=True, deficient=False, device="cpu") == "qr"
    assert choose_solver(big, big + 5, dense_ok=True, deficient=False, device="cuda") == "svd"
    assert choose_solver(big, big, dense_ok=True, deficient=True, device="cpu") == "qr"
    assert choose_solver(big, ratio, dense_ok=True, deficient=True, device="cpu") == "qr"
    assert choose_solver(big, ratio, dense_ok=False, deficient=True, device="cpu") == "lsqr"
    assert choose_solver(big, big, dense_ok=False, deficient=False, device="cpu") == "mixed"
    # and solve_scales follows it: 24x24 layer, square -> lu, overparam 2 -> mixed
    for m, want in ((576, "lu"), (1152, "mixed")):
        A, B, W = _system(24, 24, m, seed=10)
        _, info = solve_scales(A, B, W)
        assert info.solver == want and info.rel_residual <= 1e-13


def test_auto_falls_back_to_a_dense_solve_when_the_iterative_one_stalls():
    A, B, W = _system(12, 12, 576, seed=14)  # 83k entries: auto starts with mixed
    gamma, info = solve_scales(A, B, W, maxiter=5)  # 5 CG iterations cannot converge
    assert info.solver == "qr" and "after mixed stopped after" in info.rank_method
    assert info.rank == 144 and _rel(gamma, _min_norm(A, B, W)) <= 1e-10
    B[:, 3] = 0.0  # zero rows of K: auto goes to the rank-revealing solver at once
    with pytest.raises(RankDeficientError, match="rank 132") as err:
        solve_scales(A, B, W)
    assert "zero row" in str(err.value)


def test_dense_limit_is_enforced_and_auto_goes_matrix_free():
    A, B, W = _system(4, 5, 40, seed=11)
    with pytest.raises(ValueError, match="max_dense_bytes"):
        solve_scales(A, B, W, solver="svd", max_dense_bytes=1000)
    for m in (40, 800):  # small or not, above the limit K is never formed
        A, B, W = _system(4 if m == 40 else 20, 5 if m == 40 else 20, m, seed=12)
        _, info = solve_scales(A, B, W, max_dense_bytes=1000)
        assert info.solver == "mixed" and info.rel_residual <= 64 * EPS


def test_bad_arguments_name_the_problem():
    A, B, W = _system(3, 4, 24)
    with pytest.raises(ValueError, match="solver must be one of"):
        solve_scales(A, B, W, solver="cholesky")
    with pytest.raises(ValueError, match="shapes do not chain"):
        solve_scales(A, B, W.T)


def test_zero_target_gives_zero_scales():
    A, B, W = _system(3, 4, 24)
    gamma, info = solve_scales(A, B, torch.zeros_like(W), solver="mixed")
    assert float(gamma.abs().max()) == 0.0 and info.rel_residual == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    A, B, W = _system(16, 16, 512, seed=13)
    g_cpu, _ = solve_scales(A, B, W, solver="mixed")
    for solver in ("mixed", "cg", "lsqr", "lu", "qr", "svd"):
        m = 256 if solver == "lu" else 512
        Ad, Bd, Wd = _system(16, 16, m, seed=13, device="cuda")
        g_gpu, info = solve_scales(Ad, Bd, Wd, solver=solver)
        assert g_gpu.device.type == "cuda" and info.rel_residual <= 64 * EPS
        if m == 512:
            assert _rel(g_gpu.cpu(), g_cpu) <= 1e-10
