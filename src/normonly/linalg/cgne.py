"""Minimum-norm solves of ``K γ = w`` by CG on ``K Kᵀ y = w``, ``γ = Kᵀ y`` (Craig / CGNE).

Why this form: for a consistent underdetermined system (full row rank, m > n) the
minimum-norm solution is the one in the row space of K, ``γ = Kᵀ y``. Iterating on the dual
variable y (n numbers) and forming γ = Kᵀ y once at the end in float64 puts γ in the row space
to float64 round-off, whatever precision the iterations used. The residual of CG on
``K Kᵀ y = w`` *is* the residual ``w − K γ`` of the scales, so the stopping rule is the
requested relative residual itself.

**Mixed precision iterative refinement.** On CPUs and GPUs float32 products run 2-3x faster
than float64 and move half the bytes. Each *pass* runs CG in float32 on the float64 residual,
``K Kᵀ δ = r``, until ‖r‖ has dropped by ``inner_rtol`` (≈ 1e-5, which float32 CG reaches for
cond(K) ≲ 10), adds ``y += δ`` in float64 and recomputes ``r = w − K Kᵀ y`` in float64. Each
pass gains ~5 digits until the float64 floor; the corrections change only y, so γ = Kᵀ y stays
(to float64 round-off) in the row space: the result is the minimum-norm solution to within
cond(K) · residual, not merely to float32 accuracy. If a float32 pass fails to halve the
residual (a system too ill-conditioned for float32, cond(K)² · 6e-8 ≳ 1), the remaining passes
run in float64.

**A bfloat16 level first**, where the hardware multiplies bfloat16 natively (AVX512-BF16 or
AMX CPUs, recent GPUs): bfloat16 products are only ~3 digits exact, so a pass asks CG for a
residual reduction of ``FAST_RTOL`` (0.05, ~10 iterations) and gains ~30x; its residual is
recomputed in float32 while it is above ``COARSE_RESIDUAL`` (1e-5), then in float64. CG needs
the same number of iterations per digit in any precision (it is set by cond(K)); a bfloat16
iteration costs ~1/4 of a float32 one, so ~110 bfloat16 iterations in ~11 passes replace ~100
float32 ones in 3 (width 128 here: 1.7 s instead of 2.8 s on a quiet machine, 5.4 s instead of
11.1 s on a loaded one). Systems with
cond(K) > ``FAST_MAX_COND`` (measured by the first pass) go straight to float32.

CG's rate on ``K Kᵀ`` is set by cond(K): for Gaussian A, B at m = 2n, cond(K) ≈ 5.8
(Marchenko-Pastur edges (1 ± √(n/m))), so the residual falls by ≈ 0.71 per iteration, ~66
iterations per 1e-10 — the same as LSQR in exact arithmetic (both are Krylov methods on the same
space); the gain of this solver is the cheaper iteration (one fused pass over A and B, float32).
Left preconditioning ``P K γ = P w`` (P invertible) keeps the solution set and hence the
minimum-norm solution; right preconditioning ``K M z = w`` returns the minimum-‖z‖ solution,
which is not the minimum-‖γ‖ one. Two left preconditioners were measured and dropped (see
benchmarks/README.md): Jacobi on K Kᵀ and Kronecker whitening ``(AAᵀ)^-½ ⊗ (BᵀB)^-½``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch

from normonly.linalg.khatri_rao import BFloat16Normal, KhatriRaoOperator

__all__ = ["cgne", "CgneResult", "INNER_RTOL", "STALL_FACTOR"]

INNER_RTOL = 2.0**-17  # per float32 pass: residual reduction asked of CG (~7.6e-6)
FAST_RTOL = 0.05  # per bfloat16 pass: ~10 CG iterations; its products are only ~3 digits exact
COARSE_RESIDUAL = 1e-5  # above this relative residual, float32 residuals (error ~3e-7) suffice
FAST_MAX_COND = 12.0  # bfloat16 passes only for cond(K) below this (m >= 1.5 n gives ~10)
TARGET_SAFETY = 0.25  # CG aims below rtol: the explicit residual lands at or under it in one go
FLOOR_ULPS = 1024  # a stalled residual below 1024 eps (2.3e-13) is the round-off floor: converged
STALL_FACTOR = 0.5  # a pass that does not halve the residual counts as stalled


@dataclass
class CgneResult:
    """Solution and diagnostics of :func:`cgne`."""

    x: torch.Tensor  # (m,) γ = Kᵀ y, float64 (the operator's dtype)
    y: torch.Tensor  # (d_out, d_in) dual variable
    iterations: int  # CG iterations of all passes together
    rel_residual: float  # ‖w − K Kᵀ y‖ / ‖w‖, computed explicitly in the operator's dtype
    cond: float  # cond(K) from the extreme Ritz values of the first pass (a lower bound)
    converged: bool
    passes: list[tuple[str, int, float]] = field(default_factory=list)  # (dtype, its, rel res)


def cgne(
    op: KhatriRaoOperator,
    w: torch.Tensor,
    *,
    rtol: float,
    maxiter: int,
    inner: KhatriRaoOperator | None = None,
    inner_rtol: float = INNER_RTOL,
    max_passes: int = 40,
    fast: BFloat16Normal | None = None,
    fast_rtol: float = FAST_RTOL,
) -> CgneResult:
    """Minimum-norm solution of ``K x = w`` by CG on the dual ``K Kᵀ y = w``, ``x = Kᵀ y``.

    Parameters
    ----------
    op : KhatriRaoOperator
        K in the working (outer, residual) precision, normally float64.
    w : (d_out*d_in,) or (d_out, d_in) tensor
        Right-hand side (``vec(W)``), in ``op``'s dtype.
    rtol : float
        Stop when the explicit relative residual ``‖w − K x‖ / ‖w‖`` is at most ``rtol``, or
        when it stops falling at a level below ``FLOOR_ULPS * eps`` (the round-off floor of
        evaluating the residual, which grows slowly with the size: ≈ 3e-15 at d = 64, m = 2d²,
        ≈ 5e-15 at d = 128); both count as converged.
    maxiter : int
        Cap on the CG iterations of all passes together.
    inner : KhatriRaoOperator, optional
        The same K in a lower precision (float32) for the inner passes; None runs CG in
        ``op``'s precision (plain CGNE, normally one pass).
    inner_rtol : float
        Residual reduction each lower-precision pass asks of CG.
    max_passes : int
        Cap on refinement passes.
    fast : BFloat16Normal, optional
        K Kᵀ with bfloat16 products for the first passes (each asks ``fast_rtol`` of CG); on a
        machine that multiplies bfloat16 natively they cost ~1/4 of a float32 pass per
        iteration. While the residual is above ``COARSE_RESIDUAL`` it is computed with
        ``inner`` (float32), below with ``op``.

    Returns
    -------
    CgneResult

    Example
    -------
    >>> A = torch.randn(3, 30, dtype=torch.float64); B = torch.randn(30, 4, dtype=torch.float64)
    >>> W = torch.randn(3, 4, dtype=torch.float64)
    >>> res = cgne(KhatriRaoOperator(A, B), W, rtol=1e-12, maxiter=500)
    >>> res.converged and torch.allclose(A @ torch.diag(res.x) @ B, W)
    True
    """
    W = w.reshape(op.d_out, op.d_in).to(op.dtype)
    wnorm = float(W.norm())
    y = torch.zeros_like(W)
    if wnorm == 0.0:
        return CgneResult(torch.zeros(op.m, dtype=op.dtype, device=op.device), y, 0, 0.0, 1.0, True)
    R, rnorm = W.clone(), wnorm
    total, cond, passes, at_floor = 0, math.nan, [], False
    floor_max = FLOOR_ULPS * torch.finfo(op.dtype).eps
    # the ladder: bfloat16 passes, then float32 ones, then the working precision; a level
    # moves down when one of its passes fails to halve the residual
    levels = [(lvl, r) for lvl, r in ((fast, fast_rtol), (inner, inner_rtol)) if lvl is not None]
    levels.append((op, 0.0))
    level = 0
    while rnorm > rtol * wnorm and total < maxiter and len(passes) < max_passes:
        solver, pass_rtol = levels[level]
        low = solver is not op
        target = TARGET_SAFETY * rtol * wnorm / rnorm  # the explicit residual lags a little
        if low:
            target = max(target, pass_rtol)
        dy, its, ritz = _cg(solver, R.to(solver.dtype), target, maxiter - total)
        total += its
        if ritz is not None and not ritz <= cond:  # every pass's estimate is a lower bound
            cond = ritz
        y_new = y + dy.to(op.dtype)
        if solver is fast and inner is not None and rnorm > COARSE_RESIDUAL * wnorm:
            # a bfloat16 pass gains ~30x: a float32 residual (error ~3e-7) is accurate enough
            R_new = W - inner.normal(y_new.to(inner.dtype)).to(op.dtype)
        else:
            R_new = W - op.normal(y_new)  # explicit residual in the working precision
        rnew = float(R_new.norm())
        label = getattr(solver, "label", str(solver.dtype).removeprefix("torch."))
        passes.append((label, its, rnew / wnorm))
        stalled = rnew > STALL_FACTOR * rnorm
        if rnew < rnorm:  # keep only improvements
            y, R, rnorm = y_new, R_new, rnew
        if solver is fast and ritz is not None and ritz > FAST_MAX_COND:
            stalled = True  # its next passes would crawl: cond(K)² × 2e-3 is not small
        if stalled:
            if rnorm <= floor_max * wnorm:
                at_floor = True  # the round-off floor of the residual itself: done
                break
            if not low:
                break  # the working precision cannot do better
            level += 1  # too ill-conditioned for this precision: go one level up
    x = op.rmatvec(y)  # (m,) in the row space of K
    rel = rnorm / wnorm
    return CgneResult(x, y, total, rel, cond, rel <= rtol or at_floor, passes)


def _cg(
    op: KhatriRaoOperator, R: torch.Tensor, target: float, maxiter: int
) -> tuple[torch.Tensor, int, float | None]:
    """CG on ``K Kᵀ Y = R`` until ``‖R − K Kᵀ Y‖ ≤ target ‖R‖`` (recursive residual).

    Returns Y, the number of iterations and cond(K) estimated from the Lanczos tridiagonal
    (None when fewer than two iterations ran). All vectors are preallocated.
    """
    Y = torch.zeros_like(R)
    res = R.clone()
    P = R.clone()
    Q = torch.empty_like(R)
    rr = float(torch.vdot(res.view(-1), res.view(-1)))
    stop = target * target * rr
    alphas: list[float] = []
    betas: list[float] = []
    while len(alphas) < maxiter and rr > stop:
        op.normal(P, out=Q)
        pq = float(torch.vdot(P.view(-1), Q.view(-1)))
        if not pq > 0.0:  # breakdown: P in the null space of K Kᵀ (or non-finite numbers)
            break
        alpha = rr / pq
        Y.add_(P, alpha=alpha)
        res.add_(Q, alpha=-alpha)
        rr_new = float(torch.vdot(res.view(-1), res.view(-1)))
        beta = rr_new / rr
        P.mul_(beta).add_(res)
        rr = rr_new
        alphas.append(alpha)
        betas.append(beta)
    return Y, len(alphas), _ritz_cond(alphas, betas)


def _ritz_cond(alphas: list[float], betas: list[float]) -> float | None:
    """sqrt(λ_max/λ_min) of the Lanczos tridiagonal that CG built: cond(K) from inside."""
    k = len(alphas)
    if k < 2:
        return None
    a = np.asarray(alphas)
    b = np.asarray(betas)
    diag = 1.0 / a
    diag[1:] += b[:-1] / a[:-1]
    off = np.sqrt(b[:-1]) / a[:-1]
    ev = scipy.linalg.eigvalsh_tridiagonal(diag, off)
    if not ev[0] > 0:
        return math.inf
    return float(math.sqrt(ev[-1] / ev[0]))
