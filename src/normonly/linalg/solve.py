"""Solving the Khatri-Rao system ``A diag(γ) B = W`` for the scales γ (docs/theory.md#numerics).

K is ``n × m`` with ``n = d_out*d_in``. Every solver returns the minimum-norm γ (least squares
when rank deficient and allowed) and the explicit relative residual ``‖K γ − vec(W)‖ / ‖W‖``,
recomputed from γ in the dtype of ``A``. ``solver="auto"`` picks, in this order
(:func:`choose_solver`; "K fits" means ``n*m*itemsize <= max_dense_bytes``):

1. ``"lu"``    square K (``m == n``, overparam 1) that fits: dense LU + float64 refinement, any
               device, ⅔ n³ flops in BLAS-3; falls back to ``qr`` for the rank if singular.
2. ``"svd"``   small K (``n*m <= SVD_MAX_ENTRIES``) that fits: exact rank and 2-norm condition.
3. ``"mixed"`` ``m >= ITERATIVE_MIN_RATIO*n`` (cond(K) ≲ 10 for Gaussian weights): matrix-free
               CG on ``K Kᵀ y = w``, ``γ = Kᵀ y`` (:mod:`normonly.linalg.cgne`), bfloat16
               passes (where the hardware has them) then float32 ones, with float64 residual
               refinement; never forms K, memory O((d_in+d_out) m). If it
               has not converged after ``AUTO_DENSE_RETRY_ITERS`` iterations (e.g. a sparse mask
               made K ill-conditioned) and K fits, ``auto`` solves again with ``qr``/``svd``;
               a K with a zero row (sparse masks) goes to ``qr``/``svd`` at once, for its rank.
4. K does not fit: ``"mixed"`` (``"lsqr"`` when a least-squares answer is allowed).
5. otherwise (nearly square, rank deficiency allowed, fewer units than equations):
   ``"qr"`` (pivoted QR of Kᵀ on the CPU, one BLAS thread), ``"svd"`` on a GPU.

By name there are also ``"cg"`` (the CG of ``mixed`` in float64 only) and ``"lsqr"``
(matrix-free LSQR in float64, :mod:`normonly.linalg.lsqr`).

The stopping rule of the iterative solvers is the requested relative residual ``rtol``
(default ``64 eps`` ≈ 1.4e-14 in float64), or the round-off floor of the residual when that is
reached first below ``1024 eps``.

**Memory.** An explicit K is allocated only when it fits ``max_dense_bytes`` (default
:data:`MAX_DENSE_BYTES` = 1 GiB; a factorization holds K plus one factor of the same size, so
at most twice that). The matrix-free solvers allocate no (n, m) array: a transposed copy of A,
B, float32 copies of both for ``mixed``, ``chunk × d`` buffers and vectors of length n and m
(width 256, m = 2n: 1.3 GB peak for the whole process).

**Nearly square systems beyond the dense limit** (overparam 1 at width ≥ 128 in float64):
cond(K) grows like n, an iterative solver would need O(cond) iterations, so ``mixed`` stops at
``maxiter`` (default :data:`DEFAULT_MAXITER`) and :class:`RankDeficientError` says so and names
the fixes (overparam ≥ 1.5, or a larger ``max_dense_bytes`` for ``lu``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import torch

from normonly.errors import RankDeficientError
from normonly.linalg.cgne import cgne
from normonly.linalg.dense import solve_lu, solve_qr, solve_svd
from normonly.linalg.khatri_rao import BFloat16Normal, KhatriRaoOperator, fast_bfloat16
from normonly.linalg.lsqr import lsqr

__all__ = [
    "solve_scales",
    "SolveInfo",
    "SOLVERS",
    "SVD_MAX_ENTRIES",
    "ITERATIVE_MIN_RATIO",
    "MAX_DENSE_BYTES",
    "DEFAULT_MAXITER",
    "AUTO_DENSE_RETRY_ITERS",
]

logger = logging.getLogger(__name__)

SVD_MAX_ENTRIES = 1 << 16  # K up to 65k entries (e.g. 12x12 layer, m = 2n): SVD beats CG there
AUTO_DENSE_RETRY_ITERS = 500  # auto: CG iterations before falling back to a dense solve
ITERATIVE_MIN_RATIO = 1.5  # m/n from which CG converges fast: cond(K) ≈ 10 (Marchenko-Pastur)
MAX_DENSE_BYTES = 1 << 30  # never allocate an explicit K larger than 1 GiB (documented limit)
LOW_COPY_BYTES = 1 << 30  # float32 copies of A and B beside a bfloat16 level: at most 1 GiB
DEFAULT_MAXITER = 2000  # CG iterations; m/n = 1.05 needs ~1400 for 1e-14, m/n = 2 about 100
SOLVERS = ("auto", "svd", "qr", "lu", "mixed", "cg", "lsqr")


@dataclass
class SolveInfo:
    """Diagnostics of one Khatri-Rao solve (one line of the certificate)."""

    shape: tuple[int, int]  # (d_out*d_in, m)
    solver: str
    rank: int | None  # numerical rank; None when the solver does not reveal it
    rank_method: str
    cond: float  # 2-norm (svd) or an estimate (qr, lu: 1-norm; cg, mixed: Ritz; lsqr: LSQR's)
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
    bfloat16: bool | None = None,
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
    solver : {"auto", "svd", "qr", "lu", "mixed", "cg", "lsqr"}
        See the module docstring for what ``auto`` picks.
    rtol : float, optional
        Relative residual the iterative solvers stop at; default ``64 * eps`` of the dtype.
    allow_rank_deficient : bool
        Return the least-squares γ instead of raising when K lacks full row rank (used to
        measure the best error below the minimal width, E5).
    max_dense_bytes : int
        Largest explicit K the direct solvers may allocate.
    maxiter : int, optional
        Iteration cap of the iterative solvers; default :data:`DEFAULT_MAXITER`.
    bfloat16 : bool, optional
        ``mixed``: run the first CG passes with bfloat16 products (see
        :class:`~normonly.linalg.khatri_rao.BFloat16Normal`). Default: where the device
        multiplies bfloat16 natively (:func:`~normonly.linalg.khatri_rao.fast_bfloat16`).

    Returns
    -------
    gamma : (m,) tensor, dtype and device of ``A``
    info : SolveInfo

    Raises
    ------
    ValueError
        Unknown solver, shapes that do not chain, or a dense solver asked for a K above
        ``max_dense_bytes``.
    RankDeficientError
        K does not have full row rank d_out*d_in, or an iterative solver could not reach the
        residual (and ``allow_rank_deficient`` is False).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> A = torch.randn(4, 32, generator=g, dtype=torch.float64)
    >>> B = torch.randn(32, 4, generator=g, dtype=torch.float64)
    >>> W = torch.randn(4, 4, generator=g, dtype=torch.float64)
    >>> gamma, info = solve_scales(A, B, W, solver="mixed")
    >>> info.rel_residual < 1e-13
    True
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    d_out, m = A.shape
    d_in = B.shape[1]
    if B.shape[0] != m or W.shape != (d_out, d_in):
        raise ValueError(
            f"shapes do not chain: A {tuple(A.shape)}, B {tuple(B.shape)}, W {tuple(W.shape)}; "
            "need A (d_out, m), B (m, d_in), W (d_out, d_in)"
        )
    n = d_out * d_in
    eps = torch.finfo(A.dtype).eps
    rtol = 64 * eps if rtol is None else rtol
    maxiter = DEFAULT_MAXITER if maxiter is None else maxiter
    dense_bytes = n * m * A.element_size()
    dense_ok = dense_bytes <= max_dense_bytes
    auto = solver == "auto"
    if auto:
        solver = choose_solver(n, m, dense_ok=dense_ok, deficient=allow_rank_deficient,
                               device=A.device.type)  # fmt: skip
    if solver in ("svd", "qr", "lu") and not dense_ok:
        raise ValueError(
            f"solver={solver!r} needs the explicit Khatri-Rao matrix ({n} x {m}), "
            f"{dense_bytes / 2**30:.2f} GiB > max_dense_bytes = {max_dense_bytes / 2**30:.2f} "
            "GiB; use solver='mixed' (matrix-free) or raise max_dense_bytes"
        )
    t0 = time.perf_counter()
    w = W.reshape(-1)  # (d_out*d_in,)
    if auto and solver == "mixed" and dense_ok and _has_zero_rows(A, B):
        solver = "qr" if A.device.type == "cpu" else "svd"  # rank deficient: find the rank
    retry = auto and solver in ("mixed", "lsqr") and dense_ok
    if retry:  # a well-conditioned system converges long before; else go dense
        maxiter = min(maxiter, AUTO_DENSE_RETRY_ITERS)
    # mixed: the float32 copy iterates, the float64 operator only computes residuals
    lean = solver == "mixed" and A.dtype != torch.float32
    op = KhatriRaoOperator(A, B, copy_a=not lean) if solver in ("mixed", "cg", "lsqr") else None
    if solver == "svd":
        gamma, rank, cond, method, iters = solve_svd(A, B, w, eps)
    elif solver == "qr":
        gamma, rank, cond, method, iters = solve_qr(A, B, w, eps)
    elif solver == "lu":
        gamma, rank, cond, method, iters = solve_lu(A, B, w, eps)
    elif solver == "lsqr":
        gamma, rank, cond, method, iters = _solve_lsqr(op, w, rtol, maxiter)
    else:
        if bfloat16 is None:
            bfloat16 = fast_bfloat16(A.device)
        gamma, rank, cond, method, iters = _solve_cgne(op, A, B, W, rtol, maxiter, solver,
                                                       bfloat16)  # fmt: skip
    if retry and rank is None:
        first = f"{solver} stopped after {iters} iterations"
        solver = "qr" if A.device.type == "cpu" else "svd"
        logger.info("solve_scales: %s; solving again with %s", first, solver)
        dense = solve_qr if solver == "qr" else solve_svd
        gamma, rank, cond, method, iters = dense(A, B, w, eps)
        method = f"{method} (after {first})"
    wnorm = float(w.norm())
    Kg = (op or KhatriRaoOperator(A, B)).matvec(gamma)  # explicit residual, no K
    res = float((Kg - w).norm()) / wnorm if wnorm > 0 else 0.0
    info = SolveInfo((n, m), solver, rank, method, cond, res, iters, time.perf_counter() - t0)
    logger.debug("solve_scales: %s", info)
    full = rank == n if rank is not None else res <= max(rtol, 1e3 * eps)
    if not full and not allow_rank_deficient:
        raise RankDeficientError(_rank_message(A, B, info, maxiter), rank=rank or -1, needed=n)
    return gamma, info


def choose_solver(n: int, m: int, *, dense_ok: bool, deficient: bool, device: str) -> str:
    """What ``solver="auto"`` runs first for a K of shape (n, m) (see the module docstring).

    Parameters
    ----------
    n, m : int
        Rows (d_out*d_in) and columns (wide units) of K.
    dense_ok : bool
        An explicit K fits ``max_dense_bytes``.
    deficient : bool
        Rank deficiency is allowed (a least-squares answer is wanted).
    device : str
        ``"cpu"`` or ``"cuda"``.

    Example
    -------
    >>> choose_solver(16384, 32768, dense_ok=False, deficient=False, device="cpu")
    'mixed'
    """
    if m == n and not deficient and dense_ok:
        return "lu"
    if n * m <= SVD_MAX_ENTRIES and dense_ok:
        return "svd"
    if m >= ITERATIVE_MIN_RATIO * n and not deficient:
        return "mixed"
    if not dense_ok:
        return "lsqr" if deficient else "mixed"
    return "qr" if device == "cpu" else "svd"


def _solve_cgne(op, A, B, W, rtol, maxiter, solver, bfloat16):
    low = solver == "mixed" and A.dtype != torch.float32
    fast = BFloat16Normal(A, B) if low and bfloat16 else None
    # the float32 level (and its early residuals) unless its copies of A and B are too large
    # beside a bfloat16 level: a width-512 layer then goes bfloat16 -> float64 (2 GiB saved)
    small = A.shape[1] * (A.shape[0] + B.shape[1]) * 4 <= LOW_COPY_BYTES
    inner = KhatriRaoOperator(A, B, dtype=torch.float32) if low and (fast is None or small) \
        else None  # fmt: skip
    res = cgne(op, W, rtol=rtol, maxiter=maxiter, inner=inner, fast=fast)
    rank = W.numel() if res.converged else None
    method = f"cg on K Kᵀ ({_passes(res.passes)}): consistent to rtol (full row rank implied)"
    return res.x, rank, res.cond, method, res.iterations


def _passes(passes: list[tuple[str, int, float]]) -> str:
    """``"108 bfloat16 in 11 passes + 9 float64"``: CG iterations per precision, in order."""
    groups: list[list] = []
    for dt, its, _ in passes:
        if groups and groups[-1][0] == dt:
            groups[-1][1] += its
            groups[-1][2] += 1
        else:
            groups.append([dt, its, 1])
    return " + ".join(f"{its} {dt}" + (f" in {n} passes" if n > 1 else "") for dt, its, n in groups)


def _solve_lsqr(op, w, rtol, maxiter):
    res = lsqr(op.matvec, op.rmatvec, w, op.m, rtol=rtol, maxiter=maxiter)
    rank = w.numel() if res.converged else None
    method = "lsqr: consistent to rtol (full row rank implied)"
    return res.x, rank, res.acond, method, res.iterations


def _has_zero_rows(A: torch.Tensor, B: torch.Tensor) -> bool:
    """K has a zero row (only possible with exact zeros in A or B, e.g. a sparse mask)."""
    if not (bool((A == 0).any()) or bool((B == 0).any())):
        return False
    return dead_units(A, B)[1] > 0


def dead_units(A: torch.Tensor, B: torch.Tensor) -> tuple[int, int]:
    """Zero columns of K (wide units with A[:,k] = 0 or B[k,:] = 0) and zero rows of K.

    Parameters
    ----------
    A : (d_out, m) tensor
    B : (m, d_in) tensor

    Returns
    -------
    dead_columns, zero_rows : int
    """
    a_nz = A != 0  # (d_out, m)
    b_nz = B != 0  # (m, d_in)
    dead_cols = int((~a_nz.any(0) | ~b_nz.any(1)).sum())
    # row (i, j) of K is zero when no unit k connects output i with input j
    zero_rows = int(((a_nz.to(A.dtype) @ b_nz.to(A.dtype)) == 0).sum())
    return dead_cols, zero_rows


def _rank_message(A, B, info: SolveInfo, maxiter: int) -> str:
    n, m = info.shape
    d_out, d_in = A.shape[0], B.shape[1]
    dead, zero_rows = dead_units(A, B)
    found = "unknown (the iterative solver did not reach the residual)" if info.rank is None \
        else info.rank  # fmt: skip
    if m < n:
        cause = f"the wide layer has only m={m} units, fewer than d_in*d_out={n}"
        fix = f"use a wide width >= {n} (overparam >= 1)"
    elif dead or zero_rows:
        cause = (
            f"{dead} dead wide unit(s) (a zero column of A or zero row of B) and {zero_rows} "
            "zero row(s) of K (an output-input pair no unit connects), typical of a sparse mask"
        )
        fix = "raise density, or raise overparam (e.g. overparam=2) so more units survive"
    elif info.rank is None:
        gib = n * m * A.element_size() / 2**30
        cause = (
            f"{info.solver} stopped after {info.iterations} iterations (maxiter={maxiter}); "
            f"cond(K) >= {info.cond:.3g} is too large for an iterative solve at m/n = {m / n:.2f}"
        )
        fix = (
            f"overparam >= {ITERATIVE_MIN_RATIO}, or a dense solve (max_dense_bytes >= "
            f"{math.ceil(gib * 1.01 * 100) / 100} GiB, solver='lu' or 'qr'), or a larger maxiter"
        )
    else:
        cause = "the random system is numerically singular (rare for dense Gaussian weights)"
        fix = "use another seed or overparam >= 1.5"
    return (
        f"the Khatri-Rao system of this {d_out}x{d_in} layer has rank {found}, but an exact "
        f"solve needs full row rank {n} (K is {n}x{m}, relative residual "
        f"{info.rel_residual:.2e}); probable cause: {cause}; what would work: {fix}"
    )
