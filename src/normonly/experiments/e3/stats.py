"""E3's statistics, computed from saved rows only: P(full rank) curves, thresholds, law fits.

The threshold p* and the three laws are defined in ``docs/theory.md#density-thresholds``.
"""

from __future__ import annotations

import math

import numpy as np

from normonly.experiments._common import group

__all__ = [
    "EARLIER_THRESHOLDS",
    "LAWS",
    "curves",
    "law_fits",
    "p_star",
    "threshold",
    "wilson_range",
]

#: The laws p*(d) compared with the measured threshold: the proven rate, the conjecture, and
#: the dead-unit limit at m = d² (``docs/theory.md#density-thresholds``).
LAWS = {
    "√(ln d/d)": lambda d: math.sqrt(math.log(d) / d),
    "ln d/d": lambda d: math.log(d) / d,
    "2 ln d/d": lambda d: 2 * math.log(d) / d,
}

#: Thresholds from an earlier, independent measurement on this construction, by
#: (d, overparam): the smallest density of its grid at which K had full rank in at least 90% of
#: the trials. A cross-check of the sweep's p*, not recomputed here.
EARLIER_THRESHOLDS = {
    (8, 1): 0.60,
    (8, 2): 0.22,
    (8, 4): 0.16,
    (12, 1): 0.46,
    (12, 2): 0.18,
    (12, 4): 0.12,
    (16, 1): 0.42,
    (16, 2): 0.14,
    (16, 4): 0.10,
    (20, 1): 0.38,
    (20, 2): 0.12,
    (20, 4): 0.08,
}


def curves(rows: list[dict]) -> dict[tuple[int, int], dict]:
    """P(full rank) on the grid per (d, overparam), summed over the draw blocks.

    Returns
    -------
    dict
        ``{(d, overparam): {"densities", "counts" (full-rank draws per density), "draws",
        "checks" ({kind: [count, seconds]}), "m"}}``.
    """
    out = {}
    for (d, q), rs in group([r for r in rows if r["kind"] == "rank"], "d", "overparam").items():
        counts = np.sum([r["full_counts"] for r in rs], axis=0)
        draws = sum(r["draws"] for r in rs)
        checks = {
            k: [
                sum(r["checks"][k]["count"] for r in rs),
                sum(r["checks"][k]["seconds"] for r in rs),
            ]
            for k in rs[0]["checks"]
        }
        out[(d, q)] = {
            "densities": rs[0]["densities"],
            "counts": counts.tolist(),
            "draws": draws,
            "checks": checks,
            "m": rs[0]["m"],
        }
    return out


def threshold(grid: list[float], frac: list[float], level: float) -> float:
    """Smallest p with P(full rank) >= level, interpolated in log p (NaN if never reached).

    Example
    -------
    >>> threshold([0.1, 0.2, 0.4], [0.95, 1.0, 1.0], 0.9)
    0.1
    """
    for i, f in enumerate(frac):
        if f >= level:
            if i == 0:
                return grid[0]
            f0, lp0, lp1 = frac[i - 1], math.log(grid[i - 1]), math.log(grid[i])
            return math.exp(lp0 + (level - f0) / (f - f0) * (lp1 - lp0))
    return math.nan


def p_star(curve: dict, level: float) -> float:
    """The threshold p* of one curve of :func:`curves`."""
    return threshold(curve["densities"], [k / curve["draws"] for k in curve["counts"]], level)


def wilson_range(curve: dict, level: float) -> tuple[float, float]:
    """p* read off the upper and lower 95% Wilson curves of P(full rank) (NaN: not reached)."""
    from normonly.linalg.full_rank_probability import wilson_interval

    ci = [wilson_interval(k, curve["draws"]) for k in curve["counts"]]
    return (
        threshold(curve["densities"], [h for _, h in ci], level),
        threshold(curve["densities"], [w for w, _ in ci], level),
    )


def law_fits(rows: list[dict], level: float) -> dict[int, dict]:
    """Per overparam: least-squares slope of log p* on log d, and each law's p*/law statistics.

    Returns
    -------
    dict
        ``{overparam: {"slope", "intercept", "laws": {name: {"ratio", "spread", "rms"}},
        "best" (the law with the smallest rms log ratio), "ds"}}``; overparams with fewer than
        two finite thresholds are left out.
    """
    cs, fits = curves(rows), {}
    for q in sorted({q for _, q in cs}):
        pts = [(d, p_star(c, level)) for (d, qq), c in sorted(cs.items()) if qq == q]
        pts = [(d, p) for d, p in pts if p == p and d > 1]
        if len(pts) < 2:
            continue
        x, y = np.log([d for d, _ in pts]), np.log([p for _, p in pts])
        slope, intercept = np.polyfit(x, y, 1)
        laws = {}
        for name, law in LAWS.items():
            r = y - np.log([law(d) for d, _ in pts])  # log(p*/law)
            laws[name] = {
                "ratio": float(np.exp(r.mean())),
                "spread": float(r.std()),
                "rms": float(np.sqrt((r**2).mean())),
            }
        best = min(laws, key=lambda n: laws[n]["rms"])
        fits[q] = {
            "slope": float(slope),
            "intercept": float(intercept),
            "laws": laws,
            "best": best,
            "ds": [d for d, _ in pts],
        }
    return fits
