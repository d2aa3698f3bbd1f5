"""E4 figures: error vs steps and time, final errors per method, the restarts from θ*."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from normonly.experiments._common import pyplot
from normonly.experiments.base import save_figure
from normonly.experiments.e4 import select as sel
from normonly.experiments.e4.sweep import FIT_METHODS, E4Config, err_value

__all__ = ["figures"]


def _curve(rs: list[dict]) -> tuple[np.ndarray, ...]:
    """Median (over seeds) step, time and test error per log point, and the min/max error."""
    n = max(len(r["hist_step"]) for r in rs)

    def pad(v: list) -> list:  # a run that stopped early keeps its last value
        v = [err_value(x) for x in v]
        return v + [v[-1]] * (n - len(v))

    y = np.array([pad(r["hist_test_rel"]) for r in rs])  # (seeds, logs)
    t = np.median(np.array([pad(r["hist_time_s"]) for r in rs]), axis=0)
    steps = np.array(max((r["hist_step"] for r in rs), key=len), dtype=float)
    return steps, t, np.median(y, axis=0), y.min(axis=0), y.max(axis=0)


def _errbar(ax, x, rs_list: list[list[dict]], key: str, **kw) -> None:
    """Median with a min–max error bar over seeds, one point per group of rows."""
    med = np.array([sel.med(rs, key) for rs in rs_list])
    lo = np.array([sel.range_of(rs, key)[0] for rs in rs_list])
    hi = np.array([sel.range_of(rs, key)[1] for rs in rs_list])
    ax.errorbar(x, med, yerr=[med - lo, hi - med], capsize=3, **kw)


def figures(cfg: E4Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    methods = sel.methods_rows(rows)
    paths = []
    for xaxis in ("time", "steps"):
        fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(5.6 * max(len(methods), 1), 4.4),
                                 squeeze=False)  # fmt: skip
        for ax, (o, ms) in zip(axes[0], methods.items(), strict=False):
            (_, cons), *fits = ms
            for i, (m, rs) in enumerate(fits):
                steps, t, med, lo, hi = _curve(rs)
                x = t if xaxis == "time" else steps
                k = x > 0  # log axis: drop step 0 / time 0
                label = f"{m} ({rs[0]['optimizer']}, lr {rs[0]['lr']:g})"
                ax.plot(x[k], med[k], color=f"C{i}", label=label)
                ax.fill_between(x[k], lo[k], hi[k], color=f"C{i}", alpha=0.2)
            ce, ct = sel.med(cons, "test_rel_error"), sel.med(cons, "train_time_s")
            # the construction's ~1e-15 would squeeze every curve into one band: quoted, not drawn
            ax.text(0.02, 0.03, f"construction (off this scale): {ce:.1e} in {ct:.2g} s",
                    transform=ax.transAxes, fontsize=8, bbox={"fc": "w", "ec": "0.6"})  # fmt: skip
            ax.set(xscale="log", yscale="log",
                   title=f"overparam {o:g}\ngradient methods, validation-chosen lr",
                   ylabel="test relative error ‖ŷ−y‖/‖y‖ (median; min–max shaded)",
                   xlabel="optimizer wall time (s)" if xaxis == "time" else "step")  # fmt: skip
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="upper right")
        fig.suptitle(f"E4: test error of gradient training vs {xaxis} ({len(cfg.seeds)} seeds, "
                     "float64)", fontsize=10, y=1.04)  # fmt: skip
        paths.append(save_figure(fig, Path(outdir) / f"e4_error_vs_{xaxis}.png"))
    if methods:
        paths.append(_final_figure(plt, cfg, methods, Path(outdir)))
    return paths + _why_figure(plt, cfg, rows, methods, Path(outdir))


def _final_figure(plt, cfg: E4Config, methods: dict, outdir: Path) -> Path:
    """Final test error and time per method: construction and gradient methods on own panels."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1, 3, 3]})
    ops = list(methods)
    shift = {o: (j - (len(ops) - 1) / 2) * 0.18 for j, o in enumerate(ops)}
    names = list(FIT_METHODS)
    for j, (o, ms) in enumerate(methods.items()):
        (_, cons), *fits = ms
        _errbar(a, [j], [cons], "test_rel_error", fmt="ko")
        xs = [names.index(m) + shift[o] for m, _ in fits]
        lab = f"overparam {o:g}"
        _errbar(b, xs, [rs for _, rs in fits], "test_rel_error", fmt="os^Dv"[j % 5],
                color=f"C{j}", label=lab)  # fmt: skip
        _errbar(c, xs, [rs for _, rs in fits], "train_time_s", fmt="os^Dv"[j % 5],
                color=f"C{j}", label=lab)  # fmt: skip
        for x, (_, rs) in zip(xs, fits, strict=True):
            b.annotate(f"lr {rs[0]['lr']:g}", (x, sel.med(rs, "test_rel_error")), fontsize=6,
                       xytext=(3, 3), textcoords="offset points")  # fmt: skip
        c.axhline(sel.med(cons, "train_time_s"), color=f"C{j}", ls="--", lw=1,
                  label=f"construction, overparam {o:g}")  # fmt: skip
    a.set(xticks=range(len(ops)), xticklabels=[f"{o:g}" for o in ops], yscale="log",
          xlim=(-0.6, len(ops) - 0.4), xlabel="overparam", ylabel="test relative error",
          title="construction")  # fmt: skip
    for ax in (b, c):
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=25, fontsize=8)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    a.grid(True, which="both", alpha=0.3)
    b.set(ylabel="test relative error", title="gradient methods at their validation-chosen lr")
    c.set(ylabel="optimizer wall time (s)", title="time (dashed: construction)")
    fig.suptitle(f"E4: median and min–max over {len(cfg.seeds)} seeds after {cfg.steps} steps",
                 fontsize=10)  # fmt: skip
    return save_figure(fig, outdir / "e4_final.png")


def _why_figure(plt, cfg: E4Config, rows: list[dict], methods: dict, outdir: Path) -> list[Path]:
    chosen = sel.why_chosen(rows)
    if not chosen and not methods:
        return []
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    keys = sorted({(o, opt) for o, opt, _ in chosen})
    for i, (o, opt) in enumerate(keys):
        by = [rs for (oo, p, _), rs in sorted(chosen.items()) if (oo, p) == (o, opt)]
        s0 = [sel.med(v, "start_test_rel_error") for v in by]
        _errbar(a, s0, by, "test_rel_error", fmt="os^Dv"[i % 5] + "-", color=f"C{i}",
                label=f"{opt} lr {by[0][0]['lr']:g} (chosen on val.), overparam {o:g}")  # fmt: skip
    if chosen:
        starts = [r["start_test_rel_error"] for rs in chosen.values() for r in rs]
        lim = [min(starts), max(starts)]
        a.plot(lim, lim, "k:", lw=1, label="final = start")
        a.legend(fontsize=7)
    a.set(xscale="log", yscale="log", title="Does training return to the construction's θ*?",
          xlabel="test relative error at the start (θ* + noise ε, median over seeds)",
          ylabel=f"after {cfg.why_steps} steps (median, min–max bars)")  # fmt: skip
    floor = 1e-20  # eigenvalues below this fraction of λ_max sit on the floor
    for o, ((_, cons), *_) in methods.items():
        spec = np.median([np.array(r["gn_spectrum"]) / r["gn_lambda_max"] for r in cons], axis=0)
        b.semilogy(np.arange(1, spec.size + 1), np.maximum(spec, floor), label=f"overparam {o:g}")
        b.axhline(spec.size * np.finfo(np.float64).eps, color="gray", ls=":", lw=1)
    b.set(ylim=(floor / 3, 3), xlabel="eigenvalue index (descending)",
          ylabel="eigenvalue / λ_max of H = 2JᵀJ/N",
          title="Hessian at θ* (median over seeds; dotted: rank threshold P·eps)")  # fmt: skip
    if methods:
        b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
    return [save_figure(fig, outdir / "e4_why.png")]
