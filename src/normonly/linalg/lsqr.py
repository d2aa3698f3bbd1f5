"""LSQR (Paige & Saunders, 1982) in PyTorch, on any device, for matrix-free operators.

scipy's ``lsqr`` is the reference (and is used in the tests to check this one); ours exists
because the Khatri-Rao operator is a pair of matrix products that run on a GPU through PyTorch,
and a round trip through NumPy per iteration would cost more than the products themselves.

Started from zero, LSQR converges to the minimum-norm solution of a consistent system, which is
exactly the solution the wide construction wants when m > d_in*d_out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["lsqr", "LsqrResult"]


@dataclass
class LsqrResult:
    """Solution and diagnostics of :func:`lsqr`."""

    x: torch.Tensor
    iterations: int
    rel_residual: float  # ‖b - A x‖ / ‖b‖, recomputed explicitly at the end
    acond: float  # LSQR's estimate of the Frobenius condition ‖A‖_F ‖A⁺‖_F
    converged: bool


def lsqr(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rmatvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    n: int,
    *,
    rtol: float,
    maxiter: int,
    refinements: int = 2,
) -> LsqrResult:
    """Solve ``min ‖A x − b‖`` (minimum-norm ``x``) with LSQR, ``A`` given by its products.

    Parameters
    ----------
    matvec, rmatvec : callables
        ``x ↦ A x`` for ``x`` of shape (n,) and ``u ↦ Aᵀ u`` for ``u`` of shape b.shape; each
        must return a new tensor (LSQR updates it in place).
    b : (n_rows,) tensor
        Right-hand side; its dtype and device are used throughout.
    n : int
        Number of unknowns.
    rtol : float
        Stop when the relative residual ``‖b − A x‖ / ‖b‖`` falls below it.
    maxiter : int
        Iteration cap per LSQR pass.
    refinements : int
        Extra passes on the explicit residual if the recursive estimate was optimistic (each
        correction lies in the row space of A, so the solution stays minimum-norm).

    Returns
    -------
    LsqrResult

    Example
    -------
    >>> M = torch.randn(3, 8, dtype=torch.float64)
    >>> b = torch.randn(3, dtype=torch.float64)
    >>> res = lsqr(lambda x: M @ x, lambda u: M.T @ u, b, 8, rtol=1e-12, maxiter=100)
    >>> torch.allclose(res.x, torch.linalg.pinv(M) @ b)
    True
    """
    x = torch.zeros(n, dtype=b.dtype, device=b.device)
    bnorm = float(b.norm())
    if bnorm == 0.0:
        return LsqrResult(x, 0, 0.0, 1.0, True)
    total_it, acond = 0, 1.0
    r = b
    for _ in range(1 + refinements):
        dx, it, cond_pass = _lsqr_pass(matvec, rmatvec, r, n, rtol * bnorm, maxiter)
        acond = max(acond, cond_pass)  # later passes see a tiny residual: keep the first
        x = x + dx
        total_it += it
        r = b - matvec(x)
        rel = float(r.norm()) / bnorm
        if rel <= rtol:
            return LsqrResult(x, total_it, rel, acond, True)
    return LsqrResult(x, total_it, rel, acond, False)


def _lsqr_pass(matvec, rmatvec, b, n, abs_tol, maxiter):
    """One LSQR run from x = 0; returns (x, iterations, LSQR's cond(A) estimate)."""
    x = torch.zeros(n, dtype=b.dtype, device=b.device)
    u = b.clone()
    beta = float(u.norm())
    u /= beta
    v = rmatvec(u)
    alpha = float(v.norm())
    if alpha == 0.0:  # b is orthogonal to the range: x = 0 is the least-squares solution
        return x, 0, 1.0
    v /= alpha
    w = v.clone()
    phibar, rhobar = beta, alpha
    anorm2, ddnorm = 0.0, 0.0
    it = 0
    while it < maxiter:
        it += 1
        # Golub-Kahan bidiagonalisation step (in place apart from the operator's result)
        u = matvec(v).sub_(u, alpha=alpha)
        beta = float(u.norm())
        if beta > 0:
            u /= beta
        anorm2 += alpha * alpha + beta * beta
        v = rmatvec(u).sub_(v, alpha=beta)
        alpha = float(v.norm())
        if alpha > 0:
            v /= alpha
        # plane rotation eliminating the subdiagonal
        rho = math.hypot(rhobar, beta)
        c, s = rhobar / rho, beta / rho
        theta = s * alpha
        rhobar = -c * alpha
        phi = c * phibar
        phibar = s * phibar
        ddnorm += float(w.norm()) ** 2 / rho**2
        x.add_(w, alpha=phi / rho)
        w.mul_(-theta / rho).add_(v)  # w = v - (θ/ρ) w
        if phibar <= abs_tol or alpha == 0.0:
            break
    acond = math.sqrt(anorm2) * math.sqrt(ddnorm)
    return x, it, acond
