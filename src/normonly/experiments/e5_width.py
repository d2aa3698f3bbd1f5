"""E5 — minimal width: what happens as the wide width m crosses d_in·d_out?

For one target layer ``d_in -> d_out`` the wide width m sweeps from well below to above
``n = d_in*d_out``. Each trial records the rank of the Khatri-Rao system K (SVD), the best error
the construction can reach (least-squares γ when K cannot be solved exactly: measured on the ball
like any certificate), and two counts: the construction needs ``m >= n`` (rank K <= m), while any
scheme with 2(m + d_out) trainable numbers needs at least about as many as the target's
``d_in*d_out + d_out`` parameters (the counting bound, ``docs/theory.md#counting``).

Why not :func:`normonly.reconstruct`: it builds exact networks only, and refuses widths below
``d_in*d_out``. E5 needs those widths, so it calls the wide construction itself in its
least-squares mode (``build_wide(..., width=m, least_squares=True)``, which records ``net.meta``
as ``reconstruct`` does, so :func:`~normonly.certificate.verify.verify` checks the radius against
the one the network was built for), and certifies with ``verify``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from normonly.experiments._common import (
    group,
    md_table,
    median,
    profile_name,
    pyplot,
    spread,
    value_range,
)
from normonly.experiments.base import Experiment, ExperimentConfig, save_figure
from normonly.experiments.rows import certificate_row

__all__ = ["E5Config", "EXPERIMENT"]


@dataclass(frozen=True)
class E5Config(ExperimentConfig):
    shapes: tuple[str, ...] = ("4x4", "6x3")  # "d_in x d_out" of the target layer
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.0)  # m / (d_in*d_out)
    seeds: tuple[int, ...] = (0, 1, 2)
    radius: float = 1.0
    n_points: int = 2000

    def validate(self) -> None:
        from normonly._checks import check_int, check_radius

        check_radius(self.radius)
        check_int("n_points", self.n_points, minimum=2)
        for s in self.shapes:
            if min(_shape(s)) < 1:
                raise ValueError(f"shape {s!r} needs d_in, d_out >= 1")
        if any(not r > 0 for r in self.ratios):
            raise ValueError(f"ratios must be > 0 (m / (d_in*d_out)), got {self.ratios}")

    @classmethod
    def full(cls) -> E5Config:
        return cls(
            shapes=("4x4", "6x3", "8x8", "12x6"),
            ratios=(0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.95, 1.0, 1.05, 1.25, 1.5, 2.0, 4.0),
            seeds=(0, 1, 2, 3, 4),
            n_points=10_000,
        )


def _shape(s: str) -> tuple[int, int]:
    try:
        a, b = (int(t) for t in s.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {s!r} must look like '4x3' (d_in x d_out)") from None
    return a, b


def trials(cfg: E5Config) -> list[dict]:
    from normonly.construct.layout import scaled_width

    out = []
    for s in cfg.shapes:
        d_in, d_out = _shape(s)
        n = d_in * d_out
        for m in sorted({max(1, scaled_width(r, n)) for r in cfg.ratios}):
            for seed in cfg.seeds:
                out.append({"key": f"{s}-m{m}-s{seed}", "seed": seed, "shape": s, "m": m})
    return out


def run_trial(cfg: E5Config, trial: dict) -> dict:
    from normonly.certificate.verify import verify
    from normonly.construct.wide import build_wide
    from normonly.nets.target import TargetMLP

    d_in, d_out = _shape(trial["shape"])
    m, seed = trial["m"], trial["seed"]
    target = TargetMLP.random([d_in, d_out], seed=seed)
    net, layers = build_wide(target, radius=cfg.radius, width=m, seed=seed, least_squares=True)
    cert = verify(net, target, radius=cfg.radius, n_points=cfg.n_points, seed=seed, layers=layers)
    n = d_in * d_out
    return {
        **trial,
        **certificate_row(cert),
        "d_in": d_in,
        "d_out": d_out,
        "n": n,
        "ratio": m / n,
        "rank": layers[0].rank,
        "target_params": target.num_parameters(),
        "counting_bound_m": max(0, math.ceil((target.num_parameters() - 2 * d_out) / 2)),
    }


def _passed(row: dict) -> bool:
    """The verdict (rows stored before the common row keys called it ``exact``)."""
    return bool(row["passed"] if "passed" in row else row["exact"])


def figures(cfg: E5Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    shapes = group(rows, "shape")
    fig, axes = plt.subplots(2, len(shapes), figsize=(4.6 * len(shapes), 7), squeeze=False)
    for col, ((s,), rs) in enumerate(shapes.items()):
        pts = group(rs, "m")
        ms = [m for (m,) in pts]
        n, bound = rs[0]["n"], rs[0]["counting_bound_m"]
        ax = axes[0][col]
        ax.plot(ms, [median(g, "rank") for g in pts.values()], "o-", label="rank of K (median)")
        ax.plot(ms, [min(m, n) for m in ms], "k:", lw=1, label="min(m, d_in·d_out)")
        ax.set(xlabel="wide width m (units)", ylabel="rank", title=f"{s} layer: rank of K")
        ax2 = axes[1][col]
        err = [max(max(r["max_rel_error"] for r in g), 1e-17) for g in pts.values()]
        ax2.plot(ms, err, "o-", color="C3", label="best error of the construction (worst seed)")
        ax2.set(yscale="log", xlabel="wide width m (units)", ylabel="max relative error (float64)",
                title=f"{s} layer: least-squares error")  # fmt: skip
        for a in (ax, ax2):
            a.axvline(n, color="C2", ls="--", lw=1, label=f"m = d_in·d_out = {n}")
            a.axvline(bound, color="C4", ls="-.", lw=1, label=f"counting bound m ≈ {bound}")
            a.legend(fontsize=7)
    fig.suptitle(f"E5: minimal width (radius {cfg.radius:g}, {cfg.n_points} points, float64)")
    fig.tight_layout()
    return [save_figure(fig, outdir / "e5_minimal_width.png")]


def summarize(cfg: E5Config, rows: list[dict]) -> tuple[str, str]:
    table = md_table(
        ["shape", "m", "m / (d_in·d_out)", "median rank", "max rel error", "exact (certified)"],
        [
            (s, m, g[0]["ratio"], median(g, "rank"), max(r["max_rel_error"] for r in g),
             f"{sum(_passed(r) for r in g)}/{len(g)}")
            for (s, m), g in group(rows, "shape", "m").items()
        ],
    )  # fmt: skip
    if not rows:
        return table, "E5 has no rows yet."
    below = [r for r in rows if r["m"] < r["n"]]
    above = [r for r in rows if r["m"] >= r["n"]]
    parts = []
    if below:
        exact_below = sum(_passed(r) for r in below)
        parts.append(
            f"below m = d_in·d_out the rank of K equals m in "
            f"{sum(r['rank'] == r['m'] for r in below)} of {len(below)} trials and "
            + ("none is exact" if not exact_below else f"{exact_below} of {len(below)} are exact")
            + f" (max relative error {spread([r['max_rel_error'] for r in below])})"
        )
    if above:
        exact_above = sum(_passed(r) for r in above)
        parts.append(
            f"from m = d_in·d_out on, {exact_above} of {len(above)} trials are exact (max relative "
            f"error {spread([r['max_rel_error'] for r in above])})"
        )
    thresholds = []
    for (s,), rs in group(rows, "shape").items():
        n, bound = rs[0]["n"], rs[0]["counting_bound_m"]
        by_m = group(rs, "m")
        ok = {m: all(_passed(r) for r in g) for (m,), g in by_m.items()}
        none = {m: not any(_passed(r) for r in g) for (m,), g in by_m.items()}
        ms = sorted(ok)
        start = next((m for i, m in enumerate(ms) if all(ok[x] for x in ms[i:])), None)
        if start is None:
            thresholds.append(f"{s} (n = {n}): no threshold, the widest m = {ms[-1]} is not exact "
                              "for every seed")  # fmt: skip
            continue
        smaller = [m for m in ms if m < start]
        if not smaller:
            thresholds.append(f"{s} (n = {n}): exact at every m run (from m = {start}), so the "
                              "rows do not locate a threshold")  # fmt: skip
            continue
        gap = f"between m = {smaller[-1]} and {start}"
        sharp = all(none[m] for m in smaller)
        where = "at m = n" if start == n else f"at m = {start} = {start / n:.3g}·n"
        vs = f", {start / bound:.3g}x the counting bound m ≈ {bound}" if bound > 0 else ""
        thresholds.append(
            f"{s} (n = {n}): exact for every seed from m = {start} on ({where}{vs}); "
            + ("no seed exact below, a sharp step " if sharp else "some seeds exact below, ")
            + gap
        )
    setting = (
        f"{len(rows)} trials ({profile_name(cfg)} profile; shapes "
        f"{', '.join(sorted({r['shape'] for r in rows}))}, m/(d_in·d_out) "
        f"{value_range([r['ratio'] for r in rows], '{:.2g}')}, seeds "
        f"{', '.join(str(v) for v in sorted({r['seed'] for r in rows}))}; "
        f"{_values(rows, 'n_points', '{}')} points in the ball of radius "
        f"{_values(rows, 'radius', '{:g}')}, {_values(rows, 'dtype', '{}')})"
    )
    sentence = f"{setting}: " + "; ".join(parts) + ". Thresholds: " + "; ".join(thresholds) + "."
    return table, sentence




def _values(rows: list[dict], key: str, form: str) -> str:
    return ", ".join(form.format(v) for v in sorted({r[key] for r in rows}))






EXPERIMENT = Experiment(
    name="E5",
    title="Minimal width",
    question="How wide must the random layer be: what rank and error does the construction "
    "reach as m crosses d_in·d_out, and how does that compare with the counting bound?",
    config_cls=E5Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
