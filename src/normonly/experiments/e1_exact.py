"""E1 — does a random net with trainable norms reproduce a target exactly? (Theorem 1)

See ``docs/theory.md#wide-construction`` for the construction and ``docs/theory.md#experiments``
for the question.

Square random targets of width d and depth L are rebuilt by the wide construction at several
overparameterizations; each trial measures the max absolute/relative error in float64 on seeded
points in the ball and on its sphere, the worst condition number and residual of the Khatri-Rao
solves, and the wall time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from normonly.experiments._common import (
    group,
    log_ticks,
    md_table,
    median,
    profile_name,
    pyplot,
    spread,
    value_range,
)
from normonly.experiments.base import Experiment, ExperimentConfig, save_figure
from normonly.experiments.rows import certificate_row

__all__ = ["E1Config", "EXPERIMENT"]


@dataclass(frozen=True)
class E1Config(ExperimentConfig):
    widths: tuple[int, ...] = (2, 5, 8, 16)
    depths: tuple[int, ...] = (1, 2, 4)
    overparams: tuple[float, ...] = (1.0, 1.5, 2.0, 4.0)
    seeds: tuple[int, ...] = (0, 1)
    radius: float = 1.0
    n_points: int = 2000
    norm: str = "batchnorm"

    def validate(self) -> None:
        from normonly._checks import check_int, check_overparam, check_radius

        check_radius(self.radius)
        check_int("n_points", self.n_points, minimum=2)
        for w in (*self.widths, *self.depths):
            check_int("widths/depths", w, minimum=1)
        for o in self.overparams:
            check_overparam(o)

    @classmethod
    def full(cls) -> E1Config:
        return cls(
            widths=(2, 5, 8, 16, 24, 32),
            depths=(1, 2, 3, 4),
            seeds=(0, 1, 2, 3, 4),
            n_points=10_000,
        )


def trials(cfg: E1Config) -> list[dict]:
    return [
        {"key": f"d{d}-L{L}-o{o:g}-s{s}", "seed": s, "width": d, "depth": L, "overparam": o}
        for d in cfg.widths
        for L in cfg.depths
        for o in cfg.overparams
        for s in cfg.seeds
    ]


def run_trial(cfg: E1Config, trial: dict) -> dict:
    from normonly.api import reconstruct
    from normonly.nets.target import TargetMLP

    d, L, seed = trial["width"], trial["depth"], trial["seed"]
    target = TargetMLP.random([d] * (L + 1), seed=seed)
    rec = reconstruct(
        target, radius=cfg.radius, overparam=trial["overparam"], norm=cfg.norm, seed=seed,
        n_points=cfg.n_points, verify_seed=seed,
    )  # fmt: skip
    row = certificate_row(rec.certificate)
    cond2, method = _cond2(rec.net, target, row)
    return {
        **trial,
        **row,
        "cond2": cond2,
        "cond2_method": method,
        "total_time_s": rec.wall_time_s,
        "target_params": target.num_parameters(),
    }


#: Largest Khatri-Rao matrix K (entries) whose 2-norm condition E1 computes by SVD (16 MiB).
COND2_MAX_ENTRIES = 1 << 21

#: What each solver reports as ``cond`` (see :class:`normonly.linalg.solve.SolveInfo`).
_ESTIMATORS = {
    "svd": "2-norm (SVD)",
    "lu": "LAPACK 1-norm estimate",
    "qr": "LAPACK 1-norm estimate",
    "cg": "Ritz estimate",
    "mixed": "Ritz estimate",
    "lsqr": "LSQR estimate",
}


def _cond2(net, target, row: dict) -> tuple[float, str]:
    """Worst 2-norm condition number of the layers' Khatri-Rao matrices K, and how it was got.

    Each K (``d_out*d_in`` x m) is formed and its singular values computed when it has at most
    :data:`COND2_MAX_ENTRIES` entries (``"svd"``); otherwise the solver's own estimate
    ``max_cond`` is returned, named (``"estimated: ..."``).
    """
    import torch

    from normonly.linalg.khatri_rao import khatri_rao

    worst = 0.0
    for l, W in enumerate(target.weights):
        d_out, d_in = W.shape
        B = net.weight(2 * l)[:, :d_in]
        A = net.weight(2 * l + 1)[:d_out]
        if d_out * d_in * B.shape[0] > COND2_MAX_ENTRIES:
            kinds = sorted({_ESTIMATORS.get(s, s) for s in row.get("solvers", [])})
            return float(row["max_cond"]), "estimated: " + ", ".join(kinds or ["solver's"])
        K = khatri_rao(A.to(torch.float64), B.to(torch.float64))  # (d_out*d_in, m), m >= n
        s = torch.linalg.svdvals(K.T.contiguous())  # tall copy: same values, several x faster
        c = float(s[0] / s[-1]) if float(s[-1]) > 0 else math.inf
        worst = max(worst, c)
    return worst, "svd"


def figures(cfg: E1Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    out = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for (o,), rs in group(rows, "overparam").items():
        pts = group(rs, "width")
        xs = list(w for (w,) in pts)
        line = ax.plot(xs, [max(r["max_rel_error"] for r in g) for g in pts.values()], "o-",
                       label=f"overparam {o:g}: measured")[0]  # fmt: skip
        bounds = [max(_bound_rel(r) for r in g) for g in pts.values()]
        if all(math.isfinite(b) for b in bounds):
            ax.plot(xs, bounds, ":", color=line.get_color(), label=f"overparam {o:g}: proven bound")
    ax.axhline(1e-9, color="k", ls="--", lw=1, label="1e-9 (exactness bar)")
    ax.set(xscale="log", yscale="log", xlabel="target width d", title="Worst over depths, seeds",
           ylabel="relative error (float64): measured, and proven bound")  # fmt: skip
    log_ticks(ax, [r["width"] for r in rows])
    ax.legend(fontsize=8)
    ax = axes[1]
    for (d,), rs in group(rows, "width").items():
        pts = group(rs, "overparam")
        ax.plot([o for (o,) in pts], [median(g, _cond) for g in pts.values()], "s-",
                label=f"width {d}")  # fmt: skip
    ax.set(yscale="log", xlabel="overparam (wide width / d_in·d_out)",
           ylabel="condition number of K (median, worst layer)",
           title="Conditioning vs overparameterization")  # fmt: skip
    ax.legend(fontsize=8)
    fig.suptitle(f"E1: wide construction, radius {cfg.radius:g}, {cfg.n_points} points, float64")
    out.append(save_figure(fig, outdir / "e1_error_condition.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (L,), rs in group(rows, "depth").items():
        pts = group(rs, "width")
        ax.plot([w for (w,) in pts], [median(g, "construct_time_s") for g in pts.values()], "o-",
                label=f"depth {L}")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="target width d", ylabel="solve time (s, median)",
           title="E1: construction wall time (all overparams)")  # fmt: skip
    log_ticks(ax, [r["width"] for r in rows])
    ax.legend(fontsize=8)
    out.append(save_figure(fig, outdir / "e1_time.png"))
    return out


def summarize(cfg: E1Config, rows: list[dict]) -> tuple[str, str]:
    kinds = sorted({_cond_kind(r) for r in rows})
    table = md_table(
        ["width", "depth", "overparam", "trials", "max rel error", "max proven bound (rel)",
         f"median cond of K ({'; '.join(kinds) or '2-norm (SVD)'})", "solve s", "passed"],
        [
            (d, L, o, len(g), max(r["max_rel_error"] for r in g), max(_bound_rel(r) for r in g),
             median(g, _cond), median(g, "construct_time_s"),
             f"{sum(r['passed'] for r in g)}/{len(g)}")
            for (d, L, o), g in group(rows, "width", "depth", "overparam").items()
        ],
    )  # fmt: skip
    if not rows:
        return table, "E1 has no rows yet."
    n = len(rows)
    passed = sum(r["passed"] for r in rows)
    failed = [r["key"] for r in rows if not r["passed"]]
    tols = sorted({r["tolerance"] for r in rows})
    verdict = (
        f"{passed} of {n} reconstructions passed their certificate (a proven bound on the error "
        f"over the whole ball <= {_values(tols, '{:g}')} x the output scale)"
        + (f"; not passed: {_keys(failed)}" if failed else "")
    )
    bounded = [r for r in rows if math.isfinite(_bound_rel(r))]
    if bounded:
        worst_b = max(bounded, key=_bound_rel)
        bound = (
            f"; the proven relative bound was {spread([_bound_rel(r) for r in bounded])} over "
            f"the {len(bounded)} trials with a bound (largest at {_where(worst_b)})"
        )
    else:
        bound = "; no trial has a proven bound"
    worst = max(rows, key=lambda r: r["max_rel_error"])
    measured = (
        f"; the measured relative error was {spread([r['max_rel_error'] for r in rows])} "
        f"(largest at {_where(worst)})"
    )
    by_o = group(rows, "overparam")
    (lo,), (hi,) = min(by_o), max(by_o)
    c_lo, c_hi = median(by_o[(lo,)], _cond), median(by_o[(hi,)], _cond)
    k_lo, k_hi = (
        "; ".join(sorted({_cond_kind(r) for r in by_o[o]})) for o in (min(by_o), max(by_o))
    )
    if lo == hi:
        cond = f"; the median condition number of K ({k_lo}) was {c_lo:.3g} at overparam {lo:g}"
    elif k_lo == k_hi:
        cond = (
            f"; the median condition number of K ({k_lo}) {_change(c_lo, c_hi, '{:.3g}')} from "
            f"overparam {lo:g} to {hi:g} (all trials: {value_range([_cond(r) for r in rows])})"
        )
    else:  # different estimators at the two ends: say which number is which
        cond = (
            f"; the median condition number of K was {c_lo:.3g} at overparam {lo:g} ({k_lo}) "
            f"and {c_hi:.3g} at overparam {hi:g} ({k_hi})"
        )
    sentence = f"{_setting(cfg, rows)}: {verdict}{bound}{measured}{cond}."
    return table, sentence




def _setting(cfg: E1Config, rows: list[dict]) -> str:
    """What was run, read from the rows (the config only names the profile)."""
    ints = lambda key: ", ".join(str(v) for v in sorted({r[key] for r in rows}))  # noqa: E731
    return (
        f"{len(rows)} trials ({profile_name(cfg)} profile; widths {ints('width')}, depths "
        f"{ints('depth')}, overparams {_values(sorted({r['overparam'] for r in rows}), '{:g}')}, "
        f"seeds {ints('seed')}; {_values(sorted({r['n_points'] for r in rows}), '{}')} points "
        f"in the ball of radius {_values(sorted({r['radius'] for r in rows}), '{:g}')}, "
        f"{_values(sorted({r['dtype'] for r in rows}), '{}')})"
    )


def _cond(row: dict) -> float:
    """The 2-norm condition of K when the row has it, else the solver's estimate."""
    return float(row["cond2"]) if "cond2" in row else float(row["max_cond"])


def _cond_kind(row: dict) -> str:
    """What :func:`_cond` of this row is."""
    if "cond2" in row:
        method = str(row.get("cond2_method", "svd"))
        return "2-norm (SVD)" if method == "svd" else method
    kinds = [f"{s}: {_ESTIMATORS.get(s, 'its estimate')}" for s in sorted(row["solvers"])]
    return ", ".join(kinds) or "solver's estimate"


def _where(row: dict) -> str:
    return f"width {row['width']}, depth {row['depth']}, overparam {row['overparam']:g}"


def _keys(keys: list[str], limit: int = 4) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _values(values: list, form: str) -> str:
    return ", ".join(form.format(v) for v in values)






def _change(a: float, b: float, form: str) -> str:
    fa, fb = form.format(a), form.format(b)
    if fa == fb:
        return f"stayed at {fa}"
    return f"{'fell' if b < a else 'rose'} from {fa} to {fb}"


def _bound_rel(row: dict) -> float:
    value = row.get("bound_rel")
    return math.nan if value is None else float(value)


EXPERIMENT = Experiment(
    name="E1",
    title="Exact reconstruction by the wide construction",
    question="Does a frozen random ReLU net with trainable norms reproduce a target exactly, "
    "and how do error and conditioning depend on width, depth and overparameterization?",
    config_cls=E1Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
