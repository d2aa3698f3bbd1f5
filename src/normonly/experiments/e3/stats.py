"""E3's statistics, computed from saved rows only: P(full rank) curves, thresholds, law fits.

The threshold p* and the three laws are defined in ``docs/theory.md#density-thresholds``.
"""

from __future__ import annotations

import math

import numpy as np

from normonly.experiments._common import group

__all__ = [
    "LAWS",
    "curves",
    "earlier_thresholds",
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


def earlier_thresholds() -> tuple[dict[tuple[int, int], float], str]:
    """An earlier, independent measurement of p* by (d, overparam), and its source in words.

    Read from ``normonly/experiments/references.toml`` (table ``e3_earlier_thresholds``): a
    reference shown next to the sweep's p*, never recomputed and never used to rescale it.
    """
    from normonly.experiments.references import load_references

    ref = load_references()["e3_earlier_thresholds"]
    return {(r["d"], r["overparam"]): r["p_star"] for r in ref["rows"]}, ref["source"]


def curves(rows: list[dict]) -> dict[tuple[int, int], dict]:
    """P(full rank) on the grid per (d, overparam), summed over the draw blocks.

    Returns
    -------
    dict
        ``{(d, overparam): {"densities", "counts" (full-rank draws per density), "draws",
        "first_full" (per draw: index of the first full-rank density; len(grid) = never),
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
        rs = sorted(rs, key=lambda r: r.get("first_draw", 0))
        out[(d, q)] = {
            "densities": rs[0]["densities"],
            "first_full": [f for r in rs for f in r.get("first_full", [])],
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


#: A law "fits" when its χ² against the bootstrap spread has p-value at least this.
FIT_ALPHA = 0.05


def law_slope(law, d_lo: float, d_hi: float) -> float:
    """The law's log-log slope between two widths (its secant on log p* vs log d)."""
    if d_hi <= d_lo:
        return math.nan
    return (math.log(law(d_hi)) - math.log(law(d_lo))) / (math.log(d_hi) - math.log(d_lo))


def _p_star_boot(curve: dict, level: float, n_boot: int, rng) -> np.ndarray:
    """p* of ``n_boot`` resamples (with replacement) of the curve's draws (NaN: not reached)."""
    ff = np.asarray(curve["first_full"])
    grid = curve["densities"]
    if ff.size == 0:
        return np.full(n_boot, math.nan)
    idx = rng.integers(0, ff.size, size=(n_boot, ff.size))
    frac = (ff[idx][:, :, None] <= np.arange(len(grid))).mean(axis=1)  # (B, grid)
    reached = frac >= level
    i = np.where(reached.any(axis=1), reached.argmax(axis=1), -1)
    lg = np.log(grid)
    out = np.full(n_boot, math.nan)
    out[i == 0] = grid[0]
    b = np.nonzero(i > 0)[0]
    j = i[b]
    f0, f1 = frac[b, j - 1], frac[b, j]
    out[b] = np.exp(lg[j - 1] + (level - f0) / (f1 - f0) * (lg[j] - lg[j - 1]))
    return out  # the same interpolation as :func:`threshold`


def _fit_c(r: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted mean of the log ratios r (= log c) and the χ² of the residuals."""
    logc = float((w * r).sum() / w.sum())
    return logc, float((w * (r - logc) ** 2).sum())


def law_fits(rows: list[dict], level: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per overparam: the free log-log slope and a one-constant fit p* = c·law(d) per law.

    Only widths whose measured p* is a probability strictly inside the grid (reached, and not
    already at the first grid density, where it is censored) are used, and per law only widths
    where the fitted prediction c·law(d) is at most 1 (refitted until stable). The fit is
    weighted least squares in log space: log c is the mean of log(p*/law) with weights 1/σ_d²,
    where σ_d is the bootstrap s.d. of log p* at width d (draws resampled with replacement,
    ``n_boot`` times), floored at the grid's log step / √12 (the resolution of the grid).
    Goodness: χ² = Σ ((log p* − log c·law)/σ_d)² on n − 1 degrees of freedom; a law fits when
    its p-value is at least :data:`FIT_ALPHA`. Intervals (95%) are bootstrap percentiles of the
    refits on the resampled draws, with the widths kept fixed.

    Returns
    -------
    dict
        ``{overparam: {"ds", "p_star" {d: p*}, "sigma" {d: σ_d}, "draws", "n_boot",
        "slope", "slope_ci", "intercept", "power_chi2", "power_dof", "power_p",
        "laws": {name: {"c", "c_ci", "ds", "excluded", "chi2", "dof", "p_value", "rms", "fits",
        "slope"}}, "fitting" (names of the laws that fit)}}``; overparams with fewer than two
        usable widths are left out. ``fits`` is None when a law has under two widths.
    """
    from scipy.stats import chi2 as chi2_dist

    cs, fits = curves(rows), {}
    rng = np.random.default_rng(seed)
    for q in sorted({q for _, q in cs}):
        cells = {d: c for (d, qq), c in sorted(cs.items()) if qq == q and d > 1}
        pts = {}
        for d, c in cells.items():
            p = p_star(c, level)
            if p == p and c["densities"][0] < p <= 1.0:
                pts[d] = p
        if len(pts) < 2:
            continue
        ds = sorted(pts)
        boot = np.array([_p_star_boot(cells[d], level, n_boot, rng) for d in ds])  # (d, B)
        ok = np.all(np.isfinite(boot) & (boot > 0), axis=0)
        lboot = np.log(boot[:, ok])
        y = np.log([pts[d] for d in ds])
        x = np.log(ds)
        floors = [
            math.log(cells[d]["densities"][1] / cells[d]["densities"][0]) / math.sqrt(12)
            for d in ds
        ]
        sd = lboot.std(axis=1) if lboot.shape[1] > 1 else np.zeros(len(ds))
        sigma = np.maximum(sd, floors)
        w = 1.0 / sigma**2
        slope, intercept = np.polyfit(x, y, 1, w=np.sqrt(w))
        power_chi2 = float((w * (y - intercept - slope * x) ** 2).sum())
        power_dof = len(ds) - 2
        b_slopes = [np.polyfit(x, lboot[:, b], 1, w=np.sqrt(w))[0] for b in range(lboot.shape[1])]
        laws = {}
        for name, law in LAWS.items():
            use = list(ds)
            for _ in range(len(ds)):
                i = [ds.index(d) for d in use]
                logc, chi2 = _fit_c(y[i] - np.log([law(d) for d in use]), w[i])
                keep = [d for d in use if math.exp(logc) * law(d) <= 1.0]
                if keep == use or len(keep) == 0:
                    break
                use = keep
            i = [ds.index(d) for d in use]
            logl = np.log([law(d) for d in use])
            b_c = [math.exp(_fit_c(lboot[i, b] - logl, w[i])[0]) for b in range(lboot.shape[1])]
            dof = len(use) - 1
            resid = y[i] - logl - logc
            laws[name] = {
                "c": math.exp(logc),
                "c_ci": _ci(b_c),
                "ds": use,
                "excluded": [d for d in ds if d not in use],
                "chi2": chi2,
                "dof": dof,
                "p_value": float(chi2_dist.sf(chi2, dof)) if dof > 0 else math.nan,
                "rms": float(np.sqrt((resid**2).mean())),
                "fits": (float(chi2_dist.sf(chi2, dof)) >= FIT_ALPHA) if dof > 0 else None,
                "slope": law_slope(law, min(use), max(use)),
            }
        fits[q] = {
            "ds": ds,
            "p_star": pts,
            "sigma": dict(zip(ds, sigma.tolist(), strict=True)),
            "draws": min(len(cells[d]["first_full"]) or cells[d]["draws"] for d in ds),
            "n_boot": int(lboot.shape[1]),
            "slope": float(slope),
            "slope_ci": _ci(b_slopes),
            "intercept": float(intercept),
            "power_chi2": power_chi2,
            "power_dof": power_dof,
            "power_p": float(chi2_dist.sf(power_chi2, power_dof)) if power_dof > 0 else math.nan,
            "laws": laws,
            "fitting": [n for n, v in laws.items() if v["fits"]],
        }
    return fits


def _ci(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return (math.nan, math.nan)
    lo, hi = np.percentile(v, [2.5, 97.5])
    return (float(lo), float(hi))
