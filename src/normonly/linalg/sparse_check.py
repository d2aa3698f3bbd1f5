"""The pre-check before a sparse solve: full row rank, or an error that says what would work.

:func:`require_full_row_rank` decides the rank of a sparse Khatri-Rao system exactly
(:func:`normonly.linalg.rank.full_row_rank`) and raises
:class:`~normonly.errors.RankDeficientError` with the rank found and needed, the probable cause
and the density or overparam that would work (:func:`density_for_full_rank`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from normonly.errors import RankDeficientError
from normonly.linalg.full_rank_probability import critical_density_draws
from normonly.linalg.rank import (
    EXACT_MAX_WORK,
    RankReport,
    exact_rank_verdict,
    full_row_rank,
    mask_bounds,
)

__all__ = ["require_full_row_rank", "density_for_full_rank", "dead_unit_free_probability"]


def dead_unit_free_probability(d_out: int, d_in: int, m: int, density: float) -> float:
    """Poisson estimate of P(no dead wide unit): ``exp(-m·P(A[:,k] = 0 or B[k,:] = 0))``.

    With d_out = d_in = d and m = d² this is the dead-unit estimate ``exp(-2 d² (1-p)^d)``
    (to first order; docs/theory.md#dead-units).
    """
    q = 1.0 - density
    return math.exp(-m * (1.0 - (1.0 - q**d_out) * (1.0 - q**d_in)))


def density_for_full_rank(
    d_out: int,
    d_in: int,
    m: int,
    *,
    level: float = 0.9,
    draws: int = 16,
    seed: int = 0,
    max_entries: int = 2**18,
) -> tuple[float | None, str]:
    """A density at which K (d_out*d_in, m) has full row rank with probability >= ``level``.

    Measured over ``draws`` seeded draws on a geometric grid when ``n*m <= max_entries``;
    otherwise the dead-unit estimate (a lower bound, tight at m = d_in*d_out:
    docs/theory.md#dead-units).

    Returns
    -------
    density : float or None
        None when no density works (m < d_in*d_out).
    how : str
        How it was obtained.
    """
    n = d_out * d_in
    if m < n:
        return None, f"no density: m={m} < d_in*d_out={n}"
    if n * m <= max_entries:
        grid = [float(x) for x in np.geomspace(0.02, 1.0, 40)]
        res = critical_density_draws(d_in, m, grid, draws=draws, seed=seed, d_out=d_out)
        ok = [p for p, c in zip(grid, res["full_counts"], strict=True) if c >= level * draws]
        return (ok[0] if ok else None), f"full rank in >= {level:.0%} of {draws} seeded draws"
    lo, hi = 0.0, 1.0
    for _ in range(40):  # P(no dead unit) increases with the density
        mid = (lo + hi) / 2
        lo, hi = (
            (lo, mid) if dead_unit_free_probability(d_out, d_in, m, mid) >= level else (mid, hi)
        )
    return hi, f"P(no dead unit) >= {level:.0%} (dead-unit estimate, a lower bound)"


def require_full_row_rank(
    A: torch.Tensor, B: torch.Tensor, *, layer: int = 0, max_work: float = EXACT_MAX_WORK
) -> RankReport | None:
    """Raise unless the sparse system ``A diag(γ) B = W`` can have full row rank.

    Returns the :class:`RankReport` when the rank was decided and is full, ``None`` when the
    system is too large to decide within ``max_work`` (the float solver then judges it).

    Raises
    ------
    RankDeficientError
        With the rank found and needed, the probable cause (dead units, zero rows of K) and
        the density / overparam that would work (with numbers).

    Example
    -------
    >>> A, B = torch.randn(2, 8, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    >>> require_full_row_rank(A, B).rank
    4
    """
    mask_a, mask_b = (A != 0).cpu().numpy(), (B != 0).cpu().numpy()
    g = torch.Generator().manual_seed(0)
    full, _, stage = exact_rank_verdict(mask_a, mask_b, g, max_work=max_work)
    if full is None:
        return None
    if full:
        dead, zero_rows, _ = mask_bounds(mask_a, mask_b)
        n = A.shape[0] * B.shape[1]
        return RankReport(n, n, f"exact ({stage}): generic rank of the mask", dead, zero_rows)
    report = full_row_rank(A, B, method="auto", max_work=max_work)  # the rank, for the message
    d_out, m = A.shape
    d_in = B.shape[1]
    n = d_out * d_in
    density = (mask_a.sum() + mask_b.sum()) / (mask_a.size + mask_b.size)
    causes = []
    if report.dead_units:
        causes.append(
            f"{report.dead_units} dead wide unit(s) (a zero column of A or zero row of B)"
        )
    if report.zero_rows:
        causes.append(f"{report.zero_rows} zero row(s) of K (output-input pairs no unit connects)")
    if not causes:
        causes.append("the mask leaves fewer independent units than equations (no dead unit)")
    fixes = []
    p_ok, how = density_for_full_rank(d_out, d_in, m)
    if p_ok is not None:
        fixes.append(f"density >= {p_ok:.2f} at this width ({how})")
    m2 = max(2 * n, m + n)
    p2, how2 = density_for_full_rank(d_out, d_in, m2)
    if p2 is not None:
        fixes.append(f"overparam {m2 / n:g} (width {m2}) with density >= {p2:.2f} ({how2})")
    bound = "" if report.exact else " at most"
    raise RankDeficientError(
        f"the sparse Khatri-Rao system of layer {layer} ({d_out}x{d_in} target layer, wide width "
        f"m={m}, observed density {density:.3g}) has rank{bound} {report.rank}, but an exact "
        f"solve needs full row rank {n} ({report.method}); probable cause: {'; '.join(causes)}; "
        f"what would work: {' or '.join(fixes) or 'a denser or wider random network'}",
        rank=report.rank,
        needed=n,
    )
