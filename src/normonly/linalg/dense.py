"""Direct solves of the Khatri-Rao system on an explicit K (small or square systems).

Each returns ``(gamma, rank, cond, rank_method, iterations)`` with γ the minimum-norm
(least-squares, when rank deficient) solution on the device and dtype of ``A``. The caller
(:func:`normonly.linalg.solve.solve_scales`) has checked that K fits in ``max_dense_bytes``.

``svd``  exact numerical rank and 2-norm condition; ~10 n² m flops, for small systems; one
         step of refinement with the residual (kept if it lowers it).
``qr``   pivoted Householder QR of Kᵀ (LAPACK ``geqp3``, on the CPU, one BLAS thread):
         numerical rank from R's diagonal, 1-norm condition estimate of R; ~4 n² m flops,
         half of them BLAS-2 (slow).
``lu``   square K only: LU with partial pivoting (``getrf``, BLAS-3, ⅔ n³ flops, on any device)
         plus float64 iterative refinement with the matrix-free residual, and Hager's 1-norm
         estimate of cond(K). A singular pivot or cond₁ ≥ 1/(n·eps) falls back to ``qr`` for
         the rank.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

from normonly.linalg.khatri_rao import khatri_rao, kr_matvec

__all__ = ["solve_svd", "solve_qr", "solve_lu"]

LU_REFINEMENTS = 3  # at most; stops once a step no longer halves the residual

DenseResult = tuple[torch.Tensor, int, float, str, int]


def solve_svd(A: torch.Tensor, B: torch.Tensor, w: torch.Tensor, eps: float) -> DenseResult:
    """Minimum-norm γ via the SVD of K (any device)."""
    K = khatri_rao(A, B)  # (n, m)
    U, S, Vh = torch.linalg.svd(K, full_matrices=False)
    n, m = K.shape
    tol = max(n, m) * eps * float(S[0]) if S.numel() else 0.0
    rank = int((S > tol).sum())
    U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]

    def pinv(v: torch.Tensor) -> torch.Tensor:
        return Vh.T @ ((U.T @ v) / S)  # minimum-norm (pseudo-inverse), in the row space

    gamma = pinv(w)
    r = w - K @ gamma
    # one step of refinement: the residual of ill-conditioned (square) systems drops ~3x
    cand = gamma + pinv(r)
    refined = float((w - K @ cand).norm()) < float(r.norm())
    if refined:
        gamma = cand
    smin = float(S[-1]) if n <= m and rank == n else 0.0
    cond = float(S[0]) / smin if smin > 0 else math.inf
    return gamma, rank, cond, "svd: sigma > max(n,m)*eps*sigma_max", int(refined)


def solve_qr(A: torch.Tensor, B: torch.Tensor, w: torch.Tensor, eps: float) -> DenseResult:
    """Minimum-norm γ via pivoted QR of Kᵀ (scipy on the CPU; the result returns to A's device)."""
    K = khatri_rao(A, B).cpu().numpy()  # (n, m)
    n, m = K.shape
    # Kᵀ P = Q R  =>  K = P Rᵀ Qᵀ;  K γ = w  =>  Rᵀ y = Pᵀ w,  γ = Q y (in the row space)
    with _one_blas_thread():
        Q, R, piv = scipy.linalg.qr(K.T, mode="economic", pivoting=True, overwrite_a=True)
    del K
    diag = np.abs(np.diag(R))
    tol = max(n, m) * eps * diag[0] if diag.size else 0.0
    rank = int((diag > tol).sum())
    wp = w.cpu().numpy()[piv]
    k = rank
    y = scipy.linalg.solve_triangular(R[:k, :k], wp[:k], trans="T", lower=False)
    gamma = torch.from_numpy(Q[:, :k] @ y).to(A)
    rcond, _ = scipy.linalg.lapack.dtrcon(R[:k, :k], norm="1", uplo="U") if k else (0.0, 0)
    cond = 1.0 / rcond if rcond > 0 else math.inf
    return gamma, rank, cond, "pivoted QR: |R_ii| > max(n,m)*eps*|R_00|", 0


def solve_lu(A: torch.Tensor, B: torch.Tensor, w: torch.Tensor, eps: float) -> DenseResult:
    """The unique γ of a square, nonsingular K via LU + refinement; falls back to :func:`solve_qr`.

    Raises
    ------
    ValueError
        K is not square.
    """
    n, m = A.shape[0] * B.shape[1], A.shape[1]
    if n != m:
        raise ValueError(
            f"solver='lu' needs a square Khatri-Rao system (m = d_in*d_out), got K {n}x{m}; "
            "use solver='qr' or 'svd' (dense) or 'mixed' (iterative)"
        )
    norm1 = float((A.abs().sum(0) * B.abs().sum(1)).max())  # ‖K‖₁: column k has ‖A_k‖₁‖B_k‖₁
    LU, piv, info = torch.linalg.lu_factor_ex(khatri_rao(A, B))
    if int(info) != 0:  # an exactly zero pivot: singular, let QR find the rank
        return _fallback(A, B, w, eps, "LU hit a zero pivot")
    cond = norm1 * _inv_norm1(LU, piv)
    if not cond * n * eps < 1.0:
        return _fallback(A, B, w, eps, f"LU cond1 estimate {cond:.1e} >= 1/(n eps)")
    gamma = torch.linalg.lu_solve(LU, piv, w[:, None])[:, 0]
    r = w - kr_matvec(A, B, gamma)
    rnorm, steps = float(r.norm()), 0
    while steps < LU_REFINEMENTS:  # classic refinement: backward error -> eps
        steps += 1
        cand = gamma + torch.linalg.lu_solve(LU, piv, r[:, None])[:, 0]
        r_cand = w - kr_matvec(A, B, cand)
        c_norm = float(r_cand.norm())
        if c_norm < rnorm:
            gamma, r = cand, r_cand
        if not c_norm < 0.5 * rnorm:
            break
        rnorm = c_norm
    return gamma, n, cond, "LU: cond1 estimate < 1/(n*eps) (nonsingular)", steps


def _one_blas_thread():
    """scipy's OpenBLAS on one thread: geqp3 is mostly BLAS-2, and on a loaded machine
    OpenBLAS's spinning threads made it 50-80x slower (1024 x 1229: 12 s vs 0.24 s)."""
    from threadpoolctl import threadpool_limits  # a dependency of normonly

    return threadpool_limits(1, user_api="blas")


def _fallback(A, B, w, eps, why: str) -> DenseResult:
    gamma, rank, cond, method, iters = solve_qr(A, B, w, eps)
    return gamma, rank, cond, f"{method} (after {why})", iters


def _inv_norm1(LU: torch.Tensor, piv: torch.Tensor, steps: int = 5) -> float:
    """Hager's (1984) estimate of ‖K⁻¹‖₁ from K's LU factors, a few solves, O(n²) each."""
    n = LU.shape[0]
    x = torch.full((n, 1), 1.0 / n, dtype=LU.dtype, device=LU.device)
    est = 0.0
    for _ in range(steps):
        y = torch.linalg.lu_solve(LU, piv, x)  # K⁻¹ x
        est = float(y.abs().sum())
        z = torch.linalg.lu_solve(LU, piv, torch.sign(y), adjoint=True)  # K⁻ᵀ sign(y)
        j = int(z.abs().argmax())
        if float(z[j].abs()) <= float((z * x).sum()):
            break
        x = torch.zeros_like(x)
        x[j] = 1.0
    return est
