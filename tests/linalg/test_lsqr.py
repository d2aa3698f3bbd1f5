"""Torch LSQR against scipy's LSQR and against the SVD minimum-norm / least-squares solution."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

from normonly.linalg.khatri_rao import KhatriRaoOperator, khatri_rao
from normonly.linalg.lsqr import lsqr


def _rand(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _run(M, b, **kw):
    return lsqr(lambda x: M @ x, lambda u: M.T @ u, b, M.shape[1], **kw)


def test_consistent_underdetermined_gives_the_minimum_norm_solution():
    M, b = _rand(20, 45, seed=0), _rand(20, seed=1)
    res = _run(M, b, rtol=1e-13, maxiter=500)
    x_min = torch.linalg.pinv(M) @ b
    assert res.converged and res.rel_residual <= 1e-13
    assert _rel(res.x, x_min) <= 1e-10
    ref = scipy.sparse.linalg.lsqr(M.numpy(), b.numpy(), atol=1e-15, btol=1e-15, iter_lim=500)[0]
    assert _rel(res.x, torch.from_numpy(ref)) <= 1e-10


def test_inconsistent_overdetermined_gives_the_least_squares_solution():
    M, b = _rand(40, 12, seed=2), _rand(40, seed=3)
    res = _run(M, b, rtol=1e-13, maxiter=300, refinements=0)
    x_ls = torch.linalg.lstsq(M, b[:, None]).solution[:, 0]
    assert not res.converged  # the residual cannot reach rtol: b is not in the range
    assert _rel(res.x, x_ls) <= 1e-10
    assert res.rel_residual == pytest.approx(_rel(M @ x_ls, b), rel=1e-8)
    ref = scipy.sparse.linalg.lsqr(M.numpy(), b.numpy(), atol=1e-15, btol=1e-15, iter_lim=300)[0]
    assert _rel(res.x, torch.from_numpy(ref)) <= 1e-10


def test_on_the_matrix_free_khatri_rao_operator():
    A, B, W = _rand(4, 40, seed=4), _rand(40, 5, seed=5), _rand(4, 5, seed=6)
    op = KhatriRaoOperator(A, B, chunk=7)
    res = lsqr(op.matvec, op.rmatvec, W.reshape(-1), 40, rtol=1e-13, maxiter=500)
    K = khatri_rao(A, B)
    assert res.converged
    assert _rel(res.x, torch.linalg.pinv(K) @ W.reshape(-1)) <= 1e-10
    # LSQR's estimate of the Frobenius condition ‖K‖_F ‖K⁺‖_F: above cond₂, of that order
    s = np.linalg.svd(K.numpy(), compute_uv=False)
    assert s[0] / s[-1] <= res.acond <= 2 * np.sqrt((s**2).sum() * (s**-2.0).sum())


def test_zero_right_hand_side_returns_zero():
    M = _rand(3, 5, seed=7)
    res = _run(M, torch.zeros(3, dtype=torch.float64), rtol=1e-12, maxiter=10)
    assert res.converged and res.iterations == 0 and float(res.x.abs().max()) == 0.0
