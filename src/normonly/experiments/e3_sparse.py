"""E3 — how sparse may the frozen random weights be? (SPEC §4 and §7, Theorem 3)

Two kinds of trials:

``rank``
    One (d, overparam, block of draws). For each seeded draw of masked A (d × m) and B (m × d),
    m = overparam·d², the first density of a geometric grid at which K has full row rank — the
    exact generic rank of the mask (:mod:`normonly.linalg.full_rank_probability`). A draw's
    masks are nested in p, so a few rank checks per draw give P(full rank) at every grid
    density.
``recon``
    One (d, overparam, density, seed): reconstruct a random width-d depth-2 target with sparse
    frozen weights; the max error, or the RankDeficientError the construction raised; frozen
    non-zeros against the target's parameter count.

The threshold p* is the density where P(full rank) reaches ``level`` (0.9), interpolated in log p
between grid points, and is compared with √(ln d / d), ln d / d and 2 ln d / d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from normonly.experiments._common import fmt, group, md_table
from normonly.experiments.base import Experiment, ExperimentConfig
from normonly.experiments.registry import register

__all__ = ["E3Config", "EXPERIMENT", "LAWS", "threshold", "law_fits", "curves", "wilson_range"]

LAWS = {
    "√(ln d/d)": lambda d: math.sqrt(math.log(d) / d),
    "ln d/d": lambda d: math.log(d) / d,
    "2 ln d/d": lambda d: 2 * math.log(d) / d,
}
#: SPEC §4's measured thresholds (smallest p with full rank in >= 90% of trials), (d, overparam).
SPEC_TABLE = {
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


@dataclass(frozen=True)
class E3Config(ExperimentConfig):
    """Settings of the sparsity sweep.

    ``large_ds`` are extra widths run only at ``large_overparams`` (where the fill-free pivots
    decide the rank without dense elimination, so they stay cheap).
    """

    ds: tuple[int, ...] = (4, 8, 12, 16)
    overparams: tuple[int, ...] = (1, 2, 4)
    large_ds: tuple[int, ...] = field(default=(), metadata={"allow_empty": True})
    large_overparams: tuple[int, ...] = (4,)
    draws: int = 40
    draws_per_trial: int = 40
    grid_min: float = 0.02
    grid_points: int = 32
    level: float = 0.9
    recon_ds: tuple[int, ...] = field(default=(8, 16), metadata={"allow_empty": True})
    recon_overparams: tuple[int, ...] = (1, 2, 4)
    recon_factors: tuple[float, ...] = (0.5, 1.0, 2.0)  # density = factor * 2 ln d / d
    recon_seeds: tuple[int, ...] = field(default=(0,), metadata={"allow_empty": True})
    n_points: int = 2000
    seed: int = 0

    def validate(self) -> None:
        from normonly._checks import check_int

        for d in (*self.ds, *self.large_ds, *self.recon_ds):
            check_int("ds (target widths)", d, minimum=2)
        for q in (*self.overparams, *self.large_overparams, *self.recon_overparams):
            check_int("overparams", q, minimum=1)
        check_int("draws", self.draws, minimum=1)
        check_int("draws_per_trial", self.draws_per_trial, minimum=1)
        check_int("grid_points", self.grid_points, minimum=2)
        if not 0.0 < self.grid_min < 1.0 or not 0.0 < self.level <= 1.0:
            raise ValueError(
                f"grid_min must be in (0, 1) and level in (0, 1], got {self.grid_min}, "
                f"{self.level}; e.g. grid_min=0.02, level=0.9"
            )

    @classmethod
    def full(cls) -> E3Config:
        return cls(
            ds=(8, 12, 16, 20, 24, 32, 40, 48, 64),
            large_ds=(96, 128),
            draws=40,
            draws_per_trial=20,
            grid_min=0.005,
            grid_points=56,
            recon_ds=(8, 16, 32),
            recon_seeds=(0, 1),
            n_points=10_000,
        )


def densities(cfg: E3Config) -> list[float]:
    """The geometric density grid from ``grid_min`` to 1."""
    return [round(float(x), 6) for x in np.geomspace(cfg.grid_min, 1.0, cfg.grid_points)]


def recon_density(d: int, factor: float) -> float:
    return round(min(1.0, factor * 2 * math.log(d) / d), 4)


def trials(cfg: E3Config) -> list[dict]:
    cells = [(d, q) for d in cfg.ds for q in cfg.overparams]
    cells += [(d, q) for d in cfg.large_ds for q in cfg.large_overparams if (d, q) not in cells]
    out = []
    for d, q in sorted(cells, key=lambda c: -(c[0] ** 4) * (1 + (c[1] < 4))):  # heavy first
        for b, start in enumerate(range(0, cfg.draws, cfg.draws_per_trial)):
            out.append(
                {
                    "key": f"rank-d{d}-q{q}-b{b}",
                    "seed": cfg.seed * 1_000_003 + 1009 * d + q,
                    "kind": "rank",
                    "d": d,
                    "overparam": q,
                    "first_draw": start,
                    "draws": min(cfg.draws_per_trial, cfg.draws - start),
                }
            )
    for d in cfg.recon_ds:
        for q in cfg.recon_overparams:
            for f in cfg.recon_factors:
                for s in cfg.recon_seeds:
                    p = recon_density(d, f)
                    out.append(
                        {
                            "key": f"recon-d{d}-q{q}-p{p:g}-s{s}",
                            "seed": s,
                            "kind": "recon",
                            "d": d,
                            "overparam": q,
                            "density": p,
                        }
                    )
    return out


def run_trial(cfg: E3Config, trial: dict) -> dict:
    """One row: the trial's own fields (so rows stand alone) plus its results."""
    return {**trial, **_run(cfg, trial)}


def _run(cfg: E3Config, trial: dict) -> dict:
    if trial["kind"] == "rank":
        from normonly.linalg.full_rank_probability import critical_density_draws

        d, q = trial["d"], trial["overparam"]
        res = critical_density_draws(
            d,
            q * d * d,
            densities(cfg),
            draws=trial["draws"],
            seed=trial["seed"],
            first_draw=trial["first_draw"],
        )
        return {
            "m": q * d * d,
            "densities": res["densities"],
            "first_full": res["first_full"],
            "full_counts": res["full_counts"],
            "checks": res["checks"],
        }
    return _run_recon(cfg, trial)


def _run_recon(cfg: E3Config, trial: dict) -> dict:
    from normonly.api import reconstruct
    from normonly.construct.layout import wide_widths
    from normonly.errors import RankDeficientError
    from normonly.nets.target import TargetMLP
    from normonly.nets.wide import NormNet

    d, q, p, s = trial["d"], trial["overparam"], trial["density"], trial["seed"]
    target = TargetMLP.random([d, d, d], seed=s)
    row: dict = {"target_params": target.num_parameters()}
    try:  # the runner gives each trial one intra-op thread
        rec = reconstruct(
            target, radius=1.0, density=p, overparam=q, seed=s, n_points=cfg.n_points
        )
    except RankDeficientError as e:  # the construction refused: no network, a message
        widths = wide_widths(target, overparam=q, width=None, uniform_width=False)
        counts = NormNet(widths, density=p, seed=s).parameter_counts()
        return {**row, **counts, "ok": False, "rank": e.rank, "needed": e.needed, "error": str(e)}
    c = rec.certificate
    return {
        **row,
        **rec.net.parameter_counts(),
        "ok": True,
        "passed": c.passed,
        "max_abs_error": c.max_abs_error,
        "max_rel_error": c.max_rel_error,
        "max_cond": max(lc.cond for lc in rec.layers),
        "max_rel_residual": max(lc.rel_residual for lc in rec.layers),
    }


# --- analysis (rows only) ------------------------------------------------------------------


def curves(rows: list[dict]) -> dict[tuple[int, int], dict]:
    """P(full rank) on the grid per (d, overparam), summed over the draw blocks."""
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
    """Smallest p with P(full rank) >= level, interpolated in log p (NaN if never reached)."""
    for i, f in enumerate(frac):
        if f >= level:
            if i == 0:
                return grid[0]
            f0, lp0, lp1 = frac[i - 1], math.log(grid[i - 1]), math.log(grid[i])
            return math.exp(lp0 + (level - f0) / (f - f0) * (lp1 - lp0))
    return math.nan


def wilson_range(c: dict, level: float) -> tuple[float, float]:
    """p* read off the upper and lower 95% Wilson curves of P(full rank) (NaN: not reached)."""
    from normonly.linalg.full_rank_probability import wilson_interval

    ci = [wilson_interval(k, c["draws"]) for k in c["counts"]]
    return (
        threshold(c["densities"], [h for _, h in ci], level),
        threshold(c["densities"], [w for w, _ in ci], level),
    )


def law_fits(cfg: E3Config, rows: list[dict]) -> dict[int, dict]:
    """Per overparam: least-squares slope of log p* on log d, and each law's p*/law statistics."""
    cs, fits = curves(rows), {}
    for q in sorted({q for _, q in cs}):
        pts = [
            (d, threshold(c["densities"], [k / c["draws"] for k in c["counts"]], cfg.level))
            for (d, qq), c in sorted(cs.items())
            if qq == q
        ]
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


# --- summary -------------------------------------------------------------------------------


_RANK_HEAD = [
    "d",
    "overparam",
    "m",
    "draws",
    "p*",
    "95% range (Wilson)",
    *LAWS,
    "SPEC §4",
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


def summarize(cfg: E3Config, rows: list[dict]) -> tuple[str, str]:
    cs, fits = curves(rows), law_fits(cfg, rows)
    table, spec = [], []
    for (d, q), c in sorted(cs.items()):
        p = threshold(c["densities"], [k / c["draws"] for k in c["counts"]], cfg.level)
        lo, hi = wilson_range(c, cfg.level)
        (n_dense, t_dense), n_casc = c["checks"]["dense"], c["checks"]["cascade"][0]
        ref = SPEC_TABLE.get((d, q), math.nan)
        if ref == ref and p == p:
            spec.append(p / ref)
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
    return "\n\n".join(parts), _sentence(fits, recon, spec)


def _sentence(fits: dict, recon: list[dict], spec: list[float]) -> str:
    bits = []
    for q, f in fits.items():
        b = f["laws"][f["best"]]
        bits.append(
            f"at m = {q}·d² (d = {min(f['ds'])}–{max(f['ds'])}) the threshold falls with "
            f"log-log slope {f['slope']:.2f} and {f['best']} fits best (p*/law = "
            f"{b['ratio']:.2f}, spread ±{b['spread']:.2f}, rms log error {b['rms']:.2f})"
        )
    if spec:
        bits.append(
            f"against SPEC §4's table (d = 8–20) the measured p* are {min(spec):.2f}–"
            f"{max(spec):.2f} times the tabulated ones"
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


def _figures(cfg: E3Config, rows: list[dict], outdir: Path) -> list[Path]:
    from normonly.experiments._e3_plots import figures

    return figures(cfg, rows, outdir)


EXPERIMENT = register(
    Experiment(
        name="E3",
        title="Sparse random networks: the density threshold for exact reconstruction",
        question="How sparse can the frozen random weights be before the Khatri-Rao system "
        "loses full rank, and which law (√(ln d/d), ln d/d, 2 ln d/d) does the threshold follow?",
        config_cls=E3Config,
        trials=trials,
        run_trial=run_trial,
        figures=_figures,
        summarize=summarize,
    )
)
