"""E3's figures, drawn from its saved rows only (statistics from :mod:`.stats`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from normonly.experiments._common import group, pyplot
from normonly.experiments.base import save_figure
from normonly.experiments.e3.stats import LAWS, curves, law_fits, p_star, wilson_range

__all__ = ["figures"]

_LAW_STYLE = {"√(ln d/d)": "--", "ln d/d": ":", "2 ln d/d": "-."}


def figures(cfg, rows: list[dict], outdir: Path) -> list[Path]:
    """P(full rank) vs density per d; threshold vs d (log-log); reconstructions."""
    plt = pyplot()
    outdir = Path(outdir)
    out, cs = [], curves(rows)
    if cs:
        out.append(_probability_figure(cfg, cs, outdir, plt))
        out.append(_threshold_figure(cfg, rows, cs, outdir, plt))
    recon = [r for r in rows if r["kind"] == "recon"]
    if recon:
        out.append(_recon_figure(cfg, recon, cs, outdir, plt))
    return out


def _probability_figure(cfg, cs: dict, outdir: Path, plt) -> Path:
    from normonly.linalg.full_rank_probability import wilson_interval

    ds = sorted({d for d, _ in cs})
    colors = {q: f"C{i}" for i, q in enumerate(sorted({q for _, q in cs}))}  # same q, same color
    ncol = min(2, len(ds))
    nrow = math.ceil(len(ds) / ncol)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(6.0 * ncol, 4.2 * nrow),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, d in zip(axes.flat, ds, strict=False):
        for (dd, q), c in sorted(cs.items()):
            if dd != d:
                continue
            p, n = np.array(c["densities"]), c["draws"]
            ci = np.array([wilson_interval(k, n) for k in c["counts"]])
            col = colors[q]
            ax.plot(p, np.array(c["counts"]) / n, color=col, label=f"m = {q}·d²")
            ax.fill_between(p, ci[:, 0], ci[:, 1], color=col, alpha=0.12, lw=0)
        for name, law in LAWS.items():
            ax.axvline(min(law(d), 1.0), color="k", ls=_LAW_STYLE[name], lw=0.9, label=name)
        ax.axhline(cfg.level, color="gray", lw=0.5)
        ax.set(xscale="log", title=f"d = {d}", xlabel="density p (kept fraction)")
        ax.set_ylim(-0.03, 1.03)
        ax.legend(fontsize=7, loc="lower right", title=f"d = {d}", title_fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("P(K full row rank)")
    for ax in list(axes.flat)[len(ds) :]:
        ax.axis("off")
    draws = max(c["draws"] for c in cs.values())
    fig.suptitle(f"E3: P(full rank) vs density, exact rank, {draws} draws (95% Wilson bands)")
    return save_figure(fig, outdir / "e3_full_rank_vs_density.png")


def _threshold_figure(cfg, rows: list[dict], cs: dict, outdir: Path, plt) -> Path:
    fits = law_fits(rows, cfg.level)
    fig, ax = plt.subplots(figsize=(7.5, 6.5), layout="constrained")
    d_all = np.geomspace(min(d for d, _ in cs), max(d for d, _ in cs), 50)
    q_index = {q: i for i, q in enumerate(sorted({q for _, q in cs}))}
    for q in sorted({q for _, q in cs}):
        pts = []
        for (d, qq), c in sorted(cs.items()):
            p = p_star(c, cfg.level)
            if qq == q and p == p:
                lo, hi = wilson_range(c, cfg.level)
                pts.append((d, p, p - lo if lo == lo else 0.0, hi - p if hi == hi else 0.0))
        if not pts:
            continue
        x, y, e_lo, e_hi = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
        label, col = f"m = {q}·d² (p*, 95% Wilson)", f"C{q_index[q]}"
        if q in fits:
            f = fits[q]
            lo, hi = f["slope_ci"]
            xs = np.geomspace(x.min(), x.max(), 50)
            fit = np.minimum(1.0, np.exp(f["intercept"]) * xs ** f["slope"])
            fit_label = f"m = {q}·d²: free fit, slope {f['slope']:.2f} ({lo:.2f}–{hi:.2f})"
            ax.plot(xs, fit, lw=0.8, color=col, alpha=0.6, label=fit_label)
        yerr = np.abs([e_lo, e_hi])
        ax.errorbar(x, y, yerr=yerr, fmt="o", ms=4, capsize=2, color=col, label=label)
    for name, law in LAWS.items():
        ys = [law(d) for d in d_all]
        ax.plot(d_all, ys, "k", ls=_LAW_STYLE[name], lw=1, label=f"{name} as stated")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="target width d",
        ylabel=f"threshold p* where P(full rank) = {cfg.level:g}",
        title="E3: sparsity threshold vs width (bars: 95% Wilson; lines: weighted fits, ≤ 1)",
    )
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return save_figure(fig, outdir / "e3_threshold_vs_width.png")


def _recon_figure(cfg, recon: list[dict], cs: dict, outdir: Path, plt) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    marks = {1: "o", 2: "s", 4: "^"}
    floor = 1e-17  # where refused requests are drawn
    ds = sorted({r["d"] for r in recon})
    colors = {d: f"C{i}" for i, d in enumerate(ds)}
    refused = False
    for (d, q), rs in group(recon, "d", "overparam").items():
        ok = [r for r in rs if r["ok"]]
        bad = [r for r in rs if not r["ok"]]
        m, col = marks.get(q, "D"), colors[d]
        a1.scatter(
            [r["density"] for r in ok],
            [max(r["max_rel_error"], floor) for r in ok],
            marker=m,
            color=col,
            label=f"d={d}, m={q}·d²",
        )
        if bad:
            a1.scatter([r["density"] for r in bad], [floor] * len(bad), marker="x", color=col)
            refused = True
        a2.scatter(
            [d] * len(ok),
            [r["frozen_nonzero"] / r["target_params"] for r in ok],
            marker=m,
            color=col,
            alpha=0.6,
        )
    for q in sorted({q for _, q in cs}):  # depth 2: 2 layers of m*(d_in + d_out) weights
        at = [
            (d, 2 * p * c["m"] * 2 * d / (2 * (d * d + d)))
            for (d, qq), c in sorted(cs.items())
            if qq == q and (p := p_star(c, cfg.level)) == p
        ]
        if at:
            a2.plot(
                *zip(*at, strict=True),
                "k",
                marker=marks.get(q, "D"),
                mfc="none",
                lw=0.8,
                label=f"expected at p*, m = {q}·d²",
            )
    a1.axhline(1e-9, color="gray", ls="--", lw=0.8)
    title = "built networks" + (" (x at the bottom: refused, rank deficient)" if refused else "")
    a1.set(
        xscale="log",
        yscale="log",
        xlabel="density p",
        ylabel="max relative error (float64)",
        title=title,
    )
    a1.legend(fontsize=6)
    a2.set(
        xscale="log",
        yscale="log",
        xlabel="target width d (depth 2)",
        ylabel="frozen non-zeros / target parameters",
        title="frozen non-zeros per target parameter (colored: built networks)",
    )
    a2.legend(fontsize=7)
    return save_figure(fig, outdir / "e3_reconstruction.png")
