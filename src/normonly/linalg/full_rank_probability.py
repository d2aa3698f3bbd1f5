"""P(full row rank) of sparse random Khatri-Rao systems, estimated from exact rank checks.

Draw ``t`` of a (d, m, seed) experiment fixes uniforms ``U_A`` (d_out, m), ``U_B`` (m, d_in);
at density p an entry is kept iff ``U < p``, so one draw's masks are nested in p, and since
adding entries never lowers the generic rank, full rank is monotone in p along a draw. That
makes a threshold sweep cheap (:func:`critical_density_draws`): a few exact rank checks per
draw (:func:`normonly.linalg.rank.exact_rank_verdict`) give its whole P(full rank) curve.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from normonly.linalg.rank import (
    METHODS,
    exact_rank_verdict,
    full_row_rank,
)

__all__ = [
    "estimate_full_rank_probability",
    "critical_density_draws",
    "necessary_density",
    "wilson_interval",
]


def _draw(d_out: int, d_in: int, m: int, seed: int, t: int):
    """Uniforms of draw ``t``: entry kept at density p iff U < p (masks nested in p)."""
    g = torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + t) % 2**63)
    UA = torch.rand(d_out, m, generator=g, dtype=torch.float64).numpy()
    UB = torch.rand(m, d_in, generator=g, dtype=torch.float64).numpy()
    return UA, UB, g


def necessary_density(UA: np.ndarray, UB: np.ndarray) -> float:
    """Largest density at which the bounds already prove K rank deficient for these uniforms.

    At any ``p`` <= the returned value, masks ``UA < p``, ``UB < p`` leave fewer than n live
    units, a zero row of K, or an output (input) reached by fewer than d_in (d_out) live units.
    """
    d_out, m = UA.shape
    d_in = UB.shape[1]
    n = d_out * d_in
    if m < n:
        return math.inf
    ta, tb = UA.min(0), UB.min(1)  # A column / B row of unit k non-zero iff p > ta[k] / tb[k]
    live = np.partition(np.maximum(ta, tb), n - 1)[n - 1]
    per_out = np.partition(np.maximum(UA, tb), d_in - 1, axis=1)[:, d_in - 1].max()
    per_in = np.partition(np.maximum(UB, ta[:, None]), d_out - 1, axis=0)[d_out - 1].max()
    zero_row = max(float(np.maximum(UA[i][:, None], UB).min(0).max()) for i in range(d_out))
    return float(max(live, per_out, per_in, zero_row))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (scipy's ``binomtest``).

    Example
    -------
    >>> [round(v, 3) for v in wilson_interval(9, 10)]
    [0.596, 0.982]
    """
    from scipy.stats import binomtest

    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def estimate_full_rank_probability(
    d: int,
    m: int,
    p: float,
    *,
    trials: int,
    seed: int,
    d_out: int | None = None,
    method: str = "auto",
) -> dict:
    """P(K has full row rank) for A (d_out, m), B (m, d) with entries kept with probability p.

    Parameters
    ----------
    d : int
        d_in of the target layer (and d_out unless given).
    m : int
        Wide width (columns of K).
    p : float
        Density of the masks.
    trials, seed : int
        Draw t uses a generator seeded from (seed, t): the same draws for every p.
    method : {"auto", "exact", "svd", "gram"}
        ``"auto"``/``"exact"``: generic rank of the mask (exact); ``"svd"``/``"gram"``: numerical
        rank of Gaussian values (see :func:`full_row_rank`).

    Returns
    -------
    dict
        ``full`` (count), ``p_full``, ``wilson_low``/``wilson_high`` (95%), ``decided_by``
        (trials decided by bounds / cascade / dense elimination / svd), timings and the inputs.

    Example
    -------
    >>> estimate_full_rank_probability(4, 32, 1.0, trials=3, seed=0)["p_full"]
    1.0
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    d_out = d if d_out is None else d_out
    t0 = time.perf_counter()
    full, decided = 0, {"bounds": 0, "cascade": 0, "dense": 0, "svd": 0}
    for t in range(trials):
        UA, UB, g = _draw(d_out, d, m, seed, t)
        ma, mb = UA < p, UB < p
        if method in ("svd", "gram"):
            A = torch.randn(d_out, m, generator=g, dtype=torch.float64) * torch.from_numpy(ma)
            B = torch.randn(m, d, generator=g, dtype=torch.float64) * torch.from_numpy(mb)
            ok, stage = bool(full_row_rank(A, B, method=method).full), "svd"
        else:
            ok, _, stage = exact_rank_verdict(ma, mb, g)
        full += bool(ok)
        decided[stage] += 1
    low, high = wilson_interval(full, trials)
    wall = time.perf_counter() - t0
    return {
        "d_in": d,
        "d_out": d_out,
        "m": m,
        "density": p,
        "trials": trials,
        "seed": seed,
        "method": method,
        "full": full,
        "p_full": full / max(trials, 1),
        "wilson_low": low,
        "wilson_high": high,
        "decided_by": decided,
        "wall_time_s": wall,
        "seconds_per_trial": wall / max(trials, 1),
    }


def critical_density_draws(
    d: int,
    m: int,
    densities: list[float],
    *,
    draws: int,
    seed: int,
    d_out: int | None = None,
    first_draw: int = 0,
) -> dict:
    """For each draw, the first density of the grid at which K has full row rank.

    The masks of one draw are nested in p (entry kept iff U < p) and adding entries never lowers
    the generic rank, so full rank is monotone in p: a galloping + bisection search over the grid
    needs a few rank checks per draw, and P(full rank at grid[i]) is the fraction of draws whose
    first full index is <= i. Draws are those of :func:`estimate_full_rank_probability`.

    Returns
    -------
    dict
        ``densities`` (sorted grid), ``first_full`` (index per draw; len(grid) = never),
        ``full_counts`` (per grid point), ``checks`` (count and seconds per deciding stage).
    """
    grid = sorted(set(float(x) for x in densities))
    d_out = d if d_out is None else d_out
    checks = {s: [0, 0.0] for s in ("bounds", "cascade", "dense")}
    first_full = []
    for t in range(first_draw, first_draw + draws):
        UA, UB, g = _draw(d_out, d, m, seed, t)
        p_lo = necessary_density(UA, UB)
        lo, hi = sum(1 for x in grid if x <= p_lo) - 1, len(grid)  # grid[:lo+1] deficient

        def full_at(i: int) -> bool:
            t1 = time.perf_counter()
            ok, _, stage = exact_rank_verdict(UA < grid[i], UB < grid[i], g)  # noqa: B023
            checks[stage][0] += 1
            checks[stage][1] += time.perf_counter() - t1
            return bool(ok)

        step = 1
        while lo + 1 < hi:  # gallop up from the bound: the threshold is usually close
            i = min(lo + step, hi - 1)
            if full_at(i):
                hi = i
                break
            lo, step = i, 2 * step
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if full_at(mid) else (mid, hi)
        first_full.append(hi)
    counts = [sum(1 for f in first_full if f <= i) for i in range(len(grid))]
    return {
        "densities": grid,
        "first_full": first_full,
        "full_counts": counts,
        "draws": draws,
        "checks": {k: {"count": c, "seconds": s} for k, (c, s) in checks.items()},
    }
