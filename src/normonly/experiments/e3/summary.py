"""E3's report section: the threshold table, the law fits, the reconstructions, one sentence."""

from __future__ import annotations

import math

import numpy as np

from normonly.experiments._common import fmt, group, md_table
from normonly.experiments.e3.stats import (
    EARLIER_THRESHOLDS,
    LAWS,
    curves,
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
    "earlier p*",
    "non-zeros/params at p*",
    "dense/cascade checks",
    "s per dense check",
]
_FIT_HEAD = [
    "overparam",
    "fitted slope",
    "p* at d=1 (fit)",
    *(f"p*/({n})" for n in LAWS),
    "best (min rms log ratio)",
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
    table, earlier = [], []
    for (d, q), c in sorted(cs.items()):
        p = p_star(c, cfg.level)
        lo, hi = wilson_range(c, cfg.level)
        (n_dense, t_dense), n_casc = c["checks"]["dense"], c["checks"]["cascade"][0]
        ref = EARLIER_THRESHOLDS.get((d, q), math.nan)
        if ref == ref and p == p:
            earlier.append(p / ref)
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
    parts = [md_table(_RANK_HEAD, table)] if table else []
    fit_rows = [
        [
            q,
            f["slope"],
            math.exp(f["intercept"]),
            *(
                f"{v['ratio']:.2f} (±{v['spread']:.2f}, rms {v['rms']:.2f})"
                for v in f["laws"].values()
            ),
            f["best"],
        ]
        for q, f in fits.items()
    ]
    if fit_rows:
        parts.append(md_table(_FIT_HEAD, fit_rows))
    recon, rec_rows = [r for r in rows if r["kind"] == "recon"], []
    for (d, q, p), rs in group(recon, "d", "overparam", "density").items():
        ok = [r for r in rs if r["ok"]]
        err = max((r["max_rel_error"] for r in ok), default=math.nan)
        ratio = float(np.mean([r["frozen_nonzero"] / r["target_params"] for r in rs]))
        rec_rows.append([d, q, p, f"{len(ok)}/{len(rs)}", err, ratio])
    if rec_rows:
        parts.append(md_table(_REC_HEAD, rec_rows))
    return "\n\n".join(parts), _sentence(fits, recon, earlier)


def _sentence(fits: dict, recon: list[dict], earlier: list[float]) -> str:
    bits = []
    for q, f in fits.items():
        b = f["laws"][f["best"]]
        bits.append(
            f"at m = {q}·d² (d = {min(f['ds'])}–{max(f['ds'])}) the threshold falls with "
            f"log-log slope {f['slope']:.2f} and {f['best']} fits best (p*/law = "
            f"{b['ratio']:.2f}, spread ±{b['spread']:.2f}, rms log error {b['rms']:.2f})"
        )
    if earlier:
        bits.append(
            f"against an earlier measurement (d = 8–20, column 'earlier p*') the measured p* "
            f"are {min(earlier):.2f}–{max(earlier):.2f} times the earlier ones"
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
