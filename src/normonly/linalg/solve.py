"""Solving the Khatri-Rao system ``A diag(γ) B = W`` for the scales γ (SPEC §2 "Numerics").

Three solvers, chosen automatically by size and shape (``solver="auto"``) or by name:

``"svd"``
    Form K, take its SVD: exact numerical rank, exact 2-norm condition number, minimum-norm γ.
    For small systems (``n*m <= SVD_MAX_ENTRIES``, n = d_in*d_out).
``"qr"``
    Form K, pivoted QR of Kᵀ (LAPACK ``geqp3``): numerical rank from the diagonal of R, a
    condition estimate (LAPACK ``trcon``), minimum-norm γ. For square or nearly square systems
    whose K fits in ``max_dense_bytes``; they are too ill-conditioned for an iterative solver.
``"lsqr"``
    Matrix-free LSQR on ``K γ = vec(A diag(γ) B)``, ``Kᵀ v = rowsum((Aᵀ V) ∘ B)``: never forms K,
    memory O((d_in + d_out) m). For overparameterized systems (m >= LSQR_MIN_RATIO * n), whose
    condition number is small (≈ 7 at m = 2n), and for every system too large for K. The stopping
    rule is the requested relative residual, recomputed explicitly at the end.

Every solver reports the relative residual ``‖K γ − vec(W)‖ / ‖W‖``; exactness needs it at the
level of float64 round-off.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg
import torch

from normonly.errors import RankDeficientError
from normonly.linalg.khatri_rao import KhatriRaoOperator, khatri_rao, kr_matvec
from normonly.linalg.lsqr import lsqr

__all__ = ["solve_scales", "SolveInfo", "SVD_MAX_ENTRIES", "LSQR_MIN_RATIO", "MAX_DENSE_BYTES"]

SVD_MAX_ENTRIES = 1 << 20  # K up to ~1M entries (e.g. 1024 x 1024) takes an SVD, < 1 s
LSQR_MIN_RATIO = 1.5  # m / n above which LSQR converges in a few dozen iterations
MAX_DENSE_BYTES = 1 << 30  # never allocate an explicit K larger than 1 GiB (documented limit)
SOLVERS = ("auto", "svd", "qr", "lsqr")


@dataclass
class SolveInfo:
    """Diagnostics of one Khatri-Rao solve (one line of the certificate)."""

    shape: tuple[int, int]  # (d_out*d_in, m)
    solver: str
    rank: int | None  # numerical rank; None when the solver does not reveal it
    rank_method: str
    cond: float  # 2-norm condition (svd) or an estimate (qr: 1-norm trcon; lsqr: LSQR's)
    rel_residual: float  # ‖K γ − vec(W)‖ / ‖W‖
    iterations: int
    wall_time_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def solve_scales(
    A: torch.Tensor,
    B: torch.Tensor,
    W: torch.Tensor,
    *,
    solver: str = "auto",
    rtol: float | None = None,
    allow_rank_deficient: bool = False,
    max_dense_bytes: int = MAX_DENSE_BYTES,
    maxiter: int | None = None,
) -> tuple[torch.Tensor, SolveInfo]:
    """Minimum-norm γ with ``A diag(γ) B = W`` (least squares if ``allow_rank_deficient``).

    Parameters
    ----------
    A : (d_out, m) tensor
        The narrow random matrix.
    B : (m, d_in) tensor
        The wide random matrix.
    W : (d_out, d_in) tensor
        The target layer's weight.
    solver : {"auto", "svd", "qr", "lsqr"}
    rtol : float, optional
        Relative residual LSQR stops at; default ``64 * eps`` of the dtype.
    allow_rank_deficient : bool
        Return the least-squares γ instead of raising when K lacks full row rank (used to
        measure the best error below the minimal width, E5).
    max_dense_bytes : int
        Largest explicit K the direct solvers may allocate.

    Returns
    -------
    gamma : (m,) tensor, dtype and device of ``A``
    info : SolveInfo

    Raises
    ------
    RankDeficientError
        K does not have full row rank d_out*d_in (and ``allow_rank_deficient`` is False).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    d_out, m = A.shape
    d_in = B.shape[1]
    if B.shape[0] != m or W.shape != (d_out, d_in):
        raise ValueError(
            f"shapes do not chain: A {tuple(A.shape)}, B {tuple(B.shape)}, W {tuple(W.shape)}"
        )
    n = d_out * d_in
    eps = torch.finfo(A.dtype).eps
    rtol = 64 * eps if rtol is None else rtol
    dense_ok = n * m * A.element_size() <= max_dense_bytes
    if solver == "auto":
        solver = _choose(n, m, dense_ok, allow_rank_deficient, A.device.type)
    if solver in ("svd", "qr") and not dense_ok:
        raise ValueError(
            f"the explicit Khatri-Rao matrix ({n} x {m}) would take "
            f"{n * m * A.element_size() / 2**30:.1f} GiB > max_dense_bytes; use solver='lsqr'"
        )
    t0 = time.perf_counter()
    w = W.reshape(-1)  # (d_out*d_in,)
    if solver == "svd":
        gamma, rank, cond, method, iters = _solve_svd(A, B, w, eps)
    elif solver == "qr":
        gamma, rank, cond, method, iters = _solve_qr(A, B, w, eps)
    else:
        gamma, rank, cond, method, iters = _solve_lsqr(A, B, w, rtol, maxiter or 20 * n + 100)
    wnorm = float(w.norm())
    res = float((kr_matvec(A, B, gamma) - w).norm()) / wnorm if wnorm > 0 else 0.0
    info = SolveInfo((n, m), solver, rank, method, cond, res, iters, time.perf_counter() - t0)
    full = rank == n if rank is not None else res <= max(rtol, 1e3 * eps)
    if not full and not allow_rank_deficient:
        raise RankDeficientError(_rank_message(A, B, info), rank=rank or -1, needed=n)
    return gamma, info


def _choose(n: int, m: int, dense_ok: bool, deficient: bool, device: str) -> str:
    if n * m <= SVD_MAX_ENTRIES:
        return "svd"
    if (m >= LSQR_MIN_RATIO * n and not deficient) or not dense_ok:
        return "lsqr"
    return "qr" if device == "cpu" else "svd"


def _solve_svd(A, B, w, eps):
    K = khatri_rao(A, B)  # (n, m)
    U, S, Vh = torch.linalg.svd(K, full_matrices=False)
    n, m = K.shape
    tol = max(n, m) * eps * float(S[0]) if S.numel() else 0.0
    rank = int((S > tol).sum())
    gamma = Vh[:rank].T @ ((U[:, :rank].T @ w) / S[:rank])  # minimum-norm (pseudo-inverse)
    smin = float(S[min(n, m) - 1]) if n <= m else 0.0
    cond = float(S[0]) / smin if smin > 0 else math.inf
    return gamma, rank, cond, "svd: sigma > max(n,m)*eps*sigma_max", 0


def _solve_qr(A, B, w, eps):
    K = khatri_rao(A, B).cpu().numpy()  # (n, m)
    n, m = K.shape
    # Kᵀ P = Q R  =>  K = P Rᵀ Qᵀ;  K γ = w  =>  Rᵀ y = Pᵀ w,  γ = Q y (in the row space)
    Q, R, piv = scipy.linalg.qr(K.T, mode="economic", pivoting=True)  # Q (m, r), R (r, n)
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


def _solve_lsqr(A, B, w, rtol, maxiter):
    op = KhatriRaoOperator(A, B)
    res = lsqr(
        op.matvec,
        op.rmatvec,
        w,
        A.shape[1],
        rtol=rtol,
        maxiter=maxiter,
    )
    rank = w.numel() if res.converged else None
    return res.x, rank, res.acond, "lsqr: consistent to rtol (full row rank implied)", res.iterations


def dead_units(A: torch.Tensor, B: torch.Tensor) -> tuple[int, int]:
    """Zero columns of K (wide units with A[:,k] = 0 or B[k,:] = 0) and zero rows of K."""
    a_nz = A != 0  # (d_out, m)
    b_nz = B != 0  # (m, d_in)
    dead_cols = int((~a_nz.any(0) | ~b_nz.any(1)).sum())
    # row (i, j) of K is zero when no unit k connects output i with input j
    zero_rows = int(((a_nz.to(A.dtype) @ b_nz.to(A.dtype)) == 0).sum())
    return dead_cols, zero_rows


def _rank_message(A, B, info: SolveInfo) -> str:
    n, m = info.shape
    d_out, d_in = A.shape[0], B.shape[1]
    dead, zero_rows = dead_units(A, B)
    found = "unknown (LSQR did not reach the residual)" if info.rank is None else info.rank
    if m < n:
        cause = f"the wide layer has only m={m} units, fewer than d_in*d_out={n}"
        fix = f"use a wide width >= {n} (overparam >= 1)"
    elif dead or zero_rows:
        cause = (
            f"{dead} dead wide unit(s) (a zero column of A or zero row of B) and {zero_rows} "
            "zero row(s) of K (an output-input pair no unit connects), typical of a sparse mask"
        )
        fix = "raise density, or raise overparam (e.g. overparam=2) so more units survive"
    else:
        cause = "the random system is numerically singular (rare for dense Gaussian weights)"
        fix = "use another seed or overparam >= 1.5"
    return (
        f"the Khatri-Rao system of this {d_out}x{d_in} layer has rank {found}, but an exact "
        f"solve needs full row rank {n} (K is {n}x{m}, relative residual "
        f"{info.rel_residual:.2e}); probable cause: {cause}; what would work: {fix}"
    )
