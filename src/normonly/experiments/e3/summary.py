"""E3's report section: the threshold table, the law fits, the reconstructions, one sentence."""

from __future__ import annotations

import math

import numpy as np

from normonly.experiments._common import fmt, group, md_table
from normonly.experiments.e3.stats import (
    FIT_ALPHA,
    LAWS,
    curves,
    earlier_thresholds,
    law_fits,
    p_star,
    wilson_range,
)

__all__ = ["summarize"]

_RANK_HEAD = [
    "d",
    "overparam",
    "m",
    "draws",
    "p*",
    "95% range (Wilson)",
    *LAWS,
    "earlier p* (reference, see note)",
    "non-zeros/params at p*",
    "dense/cascade checks",
    "s per dense check",
]
_FIT_HEAD = [
    "overparam",
    "model",
    "d used",
    "c (95% bootstrap CI)",
    "log-log slope (95% CI)",
    "χ²/dof",
    "p-value",
    "rms log residual",
    f"fits (p ≥ {FIT_ALPHA:g})",
]
_REC_HEAD = [
    "d",
    "overparam",
    "density",
    "built/tried",
    "max rel error",
    "frozen non-zeros / target params",
]


def summarize(cfg, rows: list[dict]) -> tuple[str, str]:
    """The markdown tables and the sentence of E3's report section (``cfg``: an E3Config)."""
    cs, fits = curves(rows), law_fits(rows, cfg.level)
    refs, ref_source = earlier_thresholds()
    table, earlier = [], []
    for (d, q), c in sorted(cs.items()):
        p = p_star(c, cfg.level)
        lo, hi = wilson_range(c, cfg.level)
        (n_dense, t_dense), n_casc = c["checks"]["dense"], c["checks"]["cascade"][0]
        ref = refs.get((d, q), math.nan)
        if ref == ref and p == p:
            earlier.append((d, p / ref))
        nonzero = p * c["m"] * 2 * d / (d * d + d)  # per target layer: m (d_in + d_out) weights
        table.append(
            [
                d,
                q,
                c["m"],
                c["draws"],
                p,
                f"{fmt(lo)}–{fmt(hi)}",
                *(law(d) for law in LAWS.values()),
                ref,
                nonzero,
                f"{n_dense}/{n_casc}",
                t_dense / n_dense if n_dense else math.nan,
            ]
        )
    parts = []
    if table:
        parts.append(md_table(_RANK_HEAD, table))
        parts.append(
            f"Column 'earlier p* (reference)': {ref_source}. It is shown for comparison only; "
            "no measurement above is rescaled by it or fitted to it. The law columns are the "
            "laws as stated (constant 1)."
        )
    fit_rows = []
    for q, f in fits.items():
        fit_rows.append(
            [
                q,
                "free power law c·d^s",
                _ds(f["ds"]),
                "",
                f"{f['slope']:.2f} ({_range(f['slope_ci'])})",
                _chi(f["power_chi2"], f["power_dof"]),
                f["power_p"],
                "",
                "",
            ]
        )
        for name, v in f["laws"].items():
            used = _ds(v["ds"]) + (
                f" (left out: {_ds(v['excluded'])}, c·law > 1)" if v["excluded"] else ""
            )
            fit_rows.append(
                [
                    q,
                    f"c·{name}",
                    used,
                    f"{v['c']:.2f} ({_range(v['c_ci'])})",
                    f"{v['slope']:.2f} (law, fixed)",
                    _chi(v["chi2"], v["dof"]),
                    v["p_value"],
                    v["rms"],
                    {True: "yes", False: "no", None: "too few d"}[v["fits"]],
                ]
            )
    if fit_rows:
        parts.append(md_table(_FIT_HEAD, fit_rows))
        parts.append(
            "Fits: weighted least squares of log p* with one free constant c per law, weights "
            "1/σ_d², σ_d the bootstrap s.d. of log p* over the draws at width d (floored at the "
            "grid's log step/√12); only widths where p* was reached inside the grid and "
            "c·law(d) ≤ 1 are used. χ² on n − 1 degrees of freedom (n − 2 for the free power "
            "law); intervals are bootstrap percentiles. ln d/d and 2 ln d/d have the same shape, "
            "so with a free constant they fit or fail together; only c tells them apart."
        )
    recon, rec_rows = [r for r in rows if r["kind"] == "recon"], []
    for (d, q, p), rs in group(recon, "d", "overparam", "density").items():
        ok = [r for r in rs if r["ok"]]
        err = max((r["max_rel_error"] for r in ok), default=math.nan)
        ratio = float(np.mean([r["frozen_nonzero"] / r["target_params"] for r in rs]))
        rec_rows.append([d, q, p, f"{len(ok)}/{len(rs)}", err, ratio])
    if rec_rows:
        parts.append(md_table(_REC_HEAD, rec_rows))
    return "\n\n".join(parts), _sentence(cfg, cs, fits, recon, earlier)


def _ds(ds) -> str:
    return ", ".join(str(d) for d in ds)


def _range(ci) -> str:
    return f"{fmt(ci[0])}–{fmt(ci[1])}"


def _chi(chi2: float, dof: int) -> str:
    return f"{chi2:.1f}/{dof}" if dof > 0 else f"{chi2:.1f}/0"


def _fit_phrase(f: dict) -> str:
    """What the fits say for one overparam, without choosing silently."""
    laws = f["laws"]
    judged = {n: v for n, v in laws.items() if v["fits"] is not None}
    if not judged:
        return "too few widths to judge any law"
    fitting = [n for n in judged if judged[n]["fits"]]

    def c_of(n):
        v = laws[n]
        return f"p* ≈ {v['c']:.2f} ({_range(v['c_ci'])})·{n}"

    if not fitting:
        best = min(judged, key=lambda n: judged[n]["chi2"] / judged[n]["dof"])
        v = judged[best]
        return (
            f"none of the three laws fits within the bootstrap spread (smallest χ²/dof "
            f"{v['chi2']:.1f}/{v['dof']}, {best}, p = {v['p_value']:.1g})"
        )
    shapes = {"ln d/d", "2 ln d/d"}
    if set(fitting) == shapes or (set(fitting) & shapes and len(fitting) == 1):
        n = "ln d/d" if "ln d/d" in fitting else fitting[0]
        v = laws[n]
        stated = [m for m, k in (("ln d/d", 1.0), ("2 ln d/d", 2.0)) if _inside(k, v["c_ci"], n)]
        return f"only the ln d/d shape fits ({c_of(n)}, χ²/dof {v['chi2']:.1f}/{v['dof']}; " + (
            f"the constant is consistent with {' and '.join(stated)} as stated)"
            if stated
            else "the constant matches neither ln d/d nor 2 ln d/d as stated)"
        )
    if len(fitting) == 1:
        n = fitting[0]
        v = laws[n]
        return f"only {n} fits ({c_of(n)}, χ²/dof {v['chi2']:.1f}/{v['dof']})"
    return (
        f"{' and '.join(fitting)} all fit within the bootstrap spread, so these data do not "
        f"distinguish them ({'; '.join(c_of(n) for n in fitting if n != '2 ln d/d')})"
    )


def _inside(k: float, ci, name: str) -> bool:
    """Whether the law as stated with constant ``k`` times ln d/d is inside c's interval."""
    scale = 2.0 if name == "2 ln d/d" else 1.0
    lo, hi = ci
    return lo == lo and lo * scale <= k <= hi * scale


def _sentence(cfg, cs: dict, fits: dict, recon: list[dict], earlier: list) -> str:
    bits = []
    if cs:
        ds = sorted({d for d, _ in cs})
        qs = sorted({q for _, q in cs})
        draws = sorted({c["draws"] for c in cs.values()})
        n_boot = max((f["n_boot"] for f in fits.values()), default=0)
        sig = [s for f in fits.values() for s in f["sigma"].values()]
        spread = (
            f"; the bootstrap s.d. of log p* per cell is {min(sig):.2f}–{max(sig):.2f} "
            f"({n_boot} resamples of the draws)"
            if sig
            else ""
        )
        bits.append(
            f"exact-rank sweeps at d = {_ds(ds)}, m = {'/'.join(str(q) for q in qs)}·d², "
            f"{'/'.join(str(n) for n in draws)} draws per cell, threshold p* where P(full "
            f"rank) first reaches {cfg.level:g}{spread}"
        )
    for q, f in fits.items():
        slopes = {n: v["slope"] for n, v in f["laws"].items()}
        lo, hi = f["slope_ci"]
        rel = (
            "steeper than every law"
            if hi < min(slopes.values())
            else "shallower than every law"
            if lo > max(slopes.values())
            else "within the laws' range"
        )
        by_slope: dict[str, list[str]] = {}
        for n, v in slopes.items():
            by_slope.setdefault(f"{v:.2f}", []).append(n)
        law_sl = ", ".join(f"{v} for {' and '.join(ns)}" for v, ns in by_slope.items())
        bits.append(
            f"at m = {q}·d² (d = {_ds(f['ds'])}) the free log-log slope is {f['slope']:.2f} "
            f"({_range(f['slope_ci'])}), {rel} ({law_sl}), and {_fit_phrase(f)}"
        )
    if earlier:
        e_ds = sorted({d for d, _ in earlier})
        ratios = [r for _, r in earlier]
        bits.append(
            f"where an earlier independent measurement exists (d = {_ds(e_ds)}, column "
            f"'earlier p*', reference only) the measured p* are {min(ratios):.2f}–"
            f"{max(ratios):.2f} times the earlier ones"
        )
    ok = [r for r in recon if r["ok"]]
    if recon:
        worst = max((r["max_rel_error"] for r in ok), default=math.nan)
        bits.append(
            f"{len(ok)} of {len(recon)} sparse reconstructions were built (max relative "
            f"error {worst:.1e}) and the other {len(recon) - len(ok)} were refused with "
            "a rank-deficiency error"
        )
    return ("E3: " + "; ".join(bits) + ".") if bits else "E3: no finished trials."
