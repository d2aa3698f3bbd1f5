"""Rigorous floating-point helpers: γ_n, upward rounding, spectral norms, target radii.

Every function here returns an *upper bound* on a real quantity (a norm, a radius, a rounding
error), never an estimate; see :mod:`normonly.certificate.bound` for how they are used.
"""

from __future__ import annotations

import math

import torch

__all__ = ["U64", "gamma", "up", "rownorm", "spectral_norm_upper", "target_radii",
           "target_rounding_bound", "tree_matmul"]  # fmt: skip

U64 = 2.0**-53  # unit roundoff of float64, the arithmetic of this module


def gamma(n: int, u: float = U64) -> float:
    """``γ_n = n u / (1 − n u)``: worst-case relative error of an n-term dot product."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 0.5 else math.inf


def up(x: torch.Tensor | float, n: int = 1) -> torch.Tensor | float:
    """``x`` (non-negative, computed with about n roundings) rounded up to a safe upper bound."""
    return x * (1.0 + gamma(n + 4))


def rownorm(T: torch.Tensor) -> torch.Tensor:
    """Upper bounds on the 2-norms of the rows of ``T``."""
    if T.shape[1] == 0:
        return torch.zeros(T.shape[0], dtype=T.dtype, device=T.device)
    return up(T.norm(dim=1), T.shape[1])


def spectral_norm_upper(W: torch.Tensor) -> float:
    """A rigorous upper bound on ``‖W‖₂`` (float64), within a few ulps of it.

    Example
    -------
    >>> W = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    >>> 4.0 <= spectral_norm_upper(W) < 4.0 * (1 + 1e-12)
    True
    """
    W = W.to(torch.float64)
    if W.numel() == 0:
        return 0.0
    if not bool(torch.isfinite(W).all()):
        return math.inf
    top = float(W.abs().max())
    if top == 0.0:
        return 0.0
    scale = 2.0 ** math.ceil(math.log2(top))  # a power of two: W / scale is exact
    if scale != 1.0 and math.isfinite(1.0 / scale):
        return spectral_norm_upper(W / scale) * scale * (1 + 2 * U64)
    if W.shape[0] > W.shape[1]:
        W = W.T
    n_inner = W.shape[1]
    G = W @ W.T  # (p, p), p = min dimension
    Ga = W.abs() @ W.abs().T
    dG = up(gamma(n_inner) * Ga.norm(), Ga.numel())  # ‖fl(WWᵀ) − WWᵀ‖_F
    G = torch.triu(G) + torch.triu(G, 1).T  # exactly symmetric
    try:
        lam, V = torch.linalg.eigh(G)
    except RuntimeError:  # LAPACK did not converge: the Frobenius norm is always valid
        return float(up(W.norm(), W.numel()))
    p = G.shape[0]
    res = G @ V - V * lam
    res_err = gamma(p + 1) * (G.abs() @ V.abs() + V.abs() * lam.abs())
    r = up(res.norm() + res_err.norm(), 2 * res.numel())
    orth = V.T @ V - torch.eye(p, dtype=V.dtype, device=V.device)
    orth_err = gamma(p + 1) * (V.abs().T @ V.abs() + 1.0)
    alpha = float(up(orth.norm() + orth_err.norm(), 2 * orth.numel()))
    if not alpha < 0.5:
        return float(up(W.norm(), W.numel()))  # Frobenius: always valid
    lam_max = float(lam.max()) + float(r) / math.sqrt(1.0 - alpha) + float(dG)
    bound = math.sqrt(max(lam_max, 0.0) * (1 + 4 * U64)) * (1 + 4 * U64)
    return min(bound, float(up(W.norm(), W.numel())))


def target_radii(target, radius: float, sigmas: list[float] | None = None) -> list[float]:
    """Upper bounds ``[R_0 = R, R_1, ..., R_{L-1}]`` on the norms of the target's hidden vectors.

    ``sigmas``: :func:`spectral_norm_upper` of each weight, when the caller already has them.
    """
    if sigmas is None:
        sigmas = [spectral_norm_upper(W) for W in target.weights[:-1]]
    radii = [float(radius)]
    for l, (W, b) in enumerate(zip(target.weights[:-1], target.biases[:-1], strict=True)):
        R = radii[-1]
        rows = W.clamp_min(0.0) if l > 0 else W  # h_l >= 0 after a ReLU
        pre = up(rownorm(rows) * R, 2) + b + up(U64 * b.abs(), 1)
        per_row = float(up(pre.clamp_min(0.0).norm(), pre.numel()))
        spectral = float(up(sigmas[l] * R + up(b.norm(), b.numel()), 3))
        radii.append(min(per_row, spectral))
    return radii


def target_rounding_bound(target, radii: list[float]) -> float:
    """A bound on ``‖fl(f(x)) − f(x)‖∞`` over the ball for the target evaluated in float64.

    ``|fl(W h̃ + b) − (W h̃ + b)| ≤ γ_(n+1) (|W||h̃| + |b|)`` per layer, with
    ``|W_i||h̃| ≤ ‖W_i‖ R_l + |W_i| err`` (Cauchy-Schwarz) and the error carried in through |W|.
    """
    err = torch.zeros(target.d_in, dtype=torch.float64)
    for l, (W, b) in enumerate(zip(target.weights, target.biases, strict=True)):
        n = W.shape[1]
        Wa = W.abs()
        dot = up(rownorm(W) * radii[l] + Wa @ err, n)
        err = up(Wa @ err + gamma(n + 1) * (dot + b.abs()), n + 2)
    return float(err.max())



def tree_matmul(
    M: torch.Tensor, X: torch.Tensor, *, block: int = 32, budget_bytes: int = 256 * 2**20
) -> tuple[torch.Tensor, int]:
    """``M @ X`` summed as a binary tree of block dot products, and its rounding length.

    Returns ``(P, k)`` with ``|P − M X| ≤ γ_k |M| |X|`` elementwise, ``k = block + tree depth``
    (about ``32 + log2(n/32)`` instead of ``n`` for a plain product of inner length ``n``): the
    bound's own arithmetic then rounds far less than the network it judges.

    Example
    -------
    >>> P, k = tree_matmul(torch.ones(2, 1000, dtype=torch.float64), torch.ones(1000, 3,
    ...                    dtype=torch.float64))
    >>> P[0, 0].item(), k
    (1000.0, 37)
    """
    r, n = M.shape
    cols = X.shape[1]
    if n <= block:
        return M @ X, n
    max_chunks = max(2, budget_bytes // max(1, 8 * r * cols))
    block = max(block, math.ceil(n / max_chunks))
    nc = math.ceil(n / block)
    pad = nc * block - n
    if pad:
        M = torch.nn.functional.pad(M, (0, pad))
        X = torch.nn.functional.pad(X, (0, 0, 0, pad))
    P = torch.einsum("rcb,cbk->crk", M.reshape(r, nc, block), X.reshape(nc, block, cols))
    levels = 0
    while P.shape[0] > 1:
        if P.shape[0] % 2:
            P = torch.cat([P, P.new_zeros(1, r, cols)])
        P = P[0::2] + P[1::2]
        levels += 1
    return P[0], block + levels
