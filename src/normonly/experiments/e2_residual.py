"""E2 — skip connections trade width for depth (Theorem 2).

The construction is ``docs/theory.md#residual-construction``; the question is in
``docs/theory.md#experiments``.

Fixed random targets are rebuilt by the residual construction
(:mod:`normonly.construct.residual`) for every partition size k from the largest layer input
``d_in`` down to 1 (the powers of two below it and ``d_in`` itself). Each trial records the hidden
width, the number of residual blocks (depth), the stream width, the frozen and trainable
parameter counts, the max absolute/relative error of network vs target in float64 on seeded
points inside the ball and on its sphere (the certificate), and the construction's wall time.

Targets are written as dash-separated widths, e.g. ``"16-16-16-16"`` (depth 3, width 16). The
certificate's fields are stored by :func:`normonly.experiments.rows.certificate_row`; widths are
asked from :mod:`normonly.construct.layout`, not recomputed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from normonly._threads import limit_threads
from normonly.experiments._common import (
    group,
    log_ticks,
    md_table,
    median,
    profile_name,
    pyplot,
    spread,
)
from normonly.experiments.base import Experiment, ExperimentConfig, save_figure
from normonly.experiments.rows import certificate_row

__all__ = ["E2Config", "EXPERIMENT", "partition_sizes", "parse_widths"]


@dataclass(frozen=True)
class E2Config(ExperimentConfig):
    """Settings of the width-vs-depth sweep.

    Parameters
    ----------
    targets : tuple of str
        Target widths, dash-separated (``"8-8-8-8"``); at least two numbers each.
    radii : tuple of float
        Radii R of the input ball.
    seeds : tuple of int
        Seeds of the target and of the frozen network.
    overparam : float
        Hidden width relative to ``d_out·k``.
    norm : str
        ``"batchnorm"`` (eval) or ``"affine"``.
    n_points : int
        Points of the certificate (half inside the ball, half on the sphere).
    """

    targets: tuple[str, ...] = ("8-8-8-8", "6-10-8-3")
    radii: tuple[float, ...] = (1.0, 10.0)
    seeds: tuple[int, ...] = (0, 1)
    overparam: float = 1.0
    norm: str = "batchnorm"
    n_points: int = 10_000

    @classmethod
    def full(cls) -> E2Config:
        return cls(targets=("16-16-16-16", "12-16-9-5"), seeds=(0, 1, 2, 3, 4))


def parse_widths(text: str) -> list[int]:
    """``"8-8-4"`` -> ``[8, 8, 4]``.

    Raises
    ------
    ValueError
        Not at least two positive integers separated by dashes.
    """
    try:
        widths = [int(w) for w in str(text).split("-")]
    except ValueError:
        widths = []
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(
            f"E2 target {text!r} must be at least two positive widths separated by dashes, "
            "e.g. '16-16-16-16' (d_in, hidden widths..., d_out)"
        )
    return widths


def partition_sizes(widths: list[int]) -> list[int]:
    """k from the largest layer input down to 1: that ``d_in`` and the powers of two below it."""
    top = max(widths[:-1])
    return sorted({top} | {2**i for i in range(top.bit_length()) if 2**i <= top}, reverse=True)


def trials(cfg: E2Config) -> list[dict]:
    return [
        {"key": f"{t}-k{k}-R{R:g}-s{s}", "seed": s, "target": t, "k": k, "radius": R}
        for t in cfg.targets
        for k in partition_sizes(parse_widths(t))
        for R in cfg.radii
        for s in cfg.seeds
    ]


def run_trial(cfg: E2Config, trial: dict) -> dict:
    from normonly.api import reconstruct
    from normonly.construct.layout import check_k, wide_widths
    from normonly.nets.target import TargetMLP

    widths, seed = parse_widths(trial["target"]), trial["seed"]
    target = TargetMLP.random(widths, seed=seed)
    with limit_threads(1):
        t0 = time.perf_counter()
        rec = reconstruct(
            target, method="residual", k=trial["k"], radius=trial["radius"],
            overparam=cfg.overparam, norm=cfg.norm, seed=seed, n_points=cfg.n_points,
            verify_seed=seed,
        )  # fmt: skip
        total = time.perf_counter() - t0
    net = rec.net
    # the wide construction's NormNet widths [d_in, m_1, d_1, ...]: the m_l are the wide widths
    wide = wide_widths(target, overparam=cfg.overparam, width=None, uniform_width=False)[1::2]
    return {
        **trial,
        **certificate_row(rec.certificate),
        "target_widths": widths,
        "k_per_layer": check_k(trial["k"], target),
        "hidden_width": max(net.hidden),
        "hidden_widths": net.hidden,
        "n_blocks": net.depth,
        "stream_width": 2 * net.register,
        "wide_width": max(wide),
        "target_params": target.num_parameters(),
        "total_time_s": total,
        "overparam": cfg.overparam,
        "norm": cfg.norm,
    }


def figures(cfg: E2Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    out = []
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    ax = axes[0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((t,), rs) in enumerate(group(rows, "target").items()):
        color = colors[i % len(colors)]
        pts = group(rs, "k")
        xs = [g[0]["n_blocks"] for g in pts.values()]
        ys = [g[0]["hidden_width"] for g in pts.values()]
        ax.plot(xs, ys, "-", color=color, lw=1, alpha=0.6)
        for (k,), g, x, y in zip(pts, pts.values(), xs, ys, strict=True):
            exact = all(r["passed"] for r in g)
            ax.plot(x, y, "o" if exact else "X", color=color if exact else "red", ms=7,
                    mfc=color if exact else "red")  # fmt: skip
            ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.plot([], [], "o-", color=color, label=f"target {t}")
        top = max(pts)
        area = pts[top][0]["n_blocks"] * pts[top][0]["hidden_width"]  # width × depth at k=d_in
        xs_line = sorted(xs)
        ax.plot(xs_line, [area / x for x in xs_line], ":", color=color, lw=1)
    ax.plot([], [], "o", color="gray", label="exact (certificate passed)")
    ax.plot([], [], "X", color="red", label="not exact")
    ax.plot([], [], ":", color="gray", label="width × depth = const")
    ax.set(xscale="log", yscale="log", xlabel="depth (number of residual blocks)",
           ylabel="hidden width (units, widest block)",
           title="Hidden width vs depth (k from d_in to 1)")  # fmt: skip
    log_ticks(ax, [r["n_blocks"] for r in rows])
    log_ticks(ax, [r["hidden_width"] for r in rows], axis="y")
    ax.legend(fontsize=7)
    ax = axes[1]
    for (t, R), rs in group(rows, "target", "radius").items():
        pts = group(rs, "k")
        ax.plot([k for (k,) in pts], [max(r["max_rel_error"] for r in g) for g in pts.values()],
                "o-", label=f"{t}, R={R:g}")  # fmt: skip
    ax.axhline(1e-9, color="k", ls="--", lw=1, label="1e-9 (exactness bar)")
    ax.set(xscale="log", yscale="log", xlabel="partition size k (inputs per block)",
           ylabel="max relative error (float64, worst seed)", title="Error vs k")  # fmt: skip
    log_ticks(ax, [r["k"] for r in rows])
    ax.legend(fontsize=7)
    n_points = rows[0]["n_points"] if rows else cfg.n_points
    fig.suptitle(f"E2: residual construction, overparam {cfg.overparam:g}, {n_points} points")
    out.append(save_figure(fig, Path(outdir) / "e2_width_depth_error.png"))

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, ((t,), rs) in enumerate(group(rows, "target").items()):
        color = colors[i % len(colors)]
        pts = group(rs, "k")
        ks = [k for (k,) in pts]
        ax.plot(ks, [g[0]["frozen"] for g in pts.values()], "s-", color=color,
                label=f"{t}: frozen")  # fmt: skip
        ax.plot(ks, [g[0]["trainable"] for g in pts.values()], "o--", color=color,
                label=f"{t}: trainable")  # fmt: skip
        ax.axhline(rs[0]["target_params"], color=color, ls=":", lw=1, label=f"{t}: target")
    ax.set(yscale="log", xlabel="partition size k", ylabel="parameters (count)",
           title="E2: frozen and trainable parameters vs k")  # fmt: skip
    ax.set_xscale("log")
    log_ticks(ax, [r["k"] for r in rows])
    ax.legend(fontsize=7)
    out.append(save_figure(fig, Path(outdir) / "e2_parameters.png"))
    return out


def summarize(cfg: E2Config, rows: list[dict]) -> tuple[str, str]:
    table = md_table(
        ["target", "k", "R", "hidden width", "blocks", "frozen", "trainable", "max cond",
         "max rel error", "exact", "median s"],
        [
            (t, k, R, g[0]["hidden_width"], g[0]["n_blocks"], g[0]["frozen"], g[0]["trainable"],
             max(r["max_cond"] for r in g), max(r["max_rel_error"] for r in g),
             f"{sum(r['passed'] for r in g)}/{len(g)}", median(g, "total_time_s"))
            for (t, k, R), g in sorted(
                group(rows, "target", "k", "radius").items(), key=lambda kv: (kv[0][0], -kv[0][1],
                                                                              kv[0][2]))
        ],
    )  # fmt: skip
    if not rows:
        return table, "E2 has no rows yet."
    n = len(rows)
    worst = max(rows, key=lambda r: r["max_rel_error"])
    passed = sum(r["passed"] for r in rows)
    failed = [r["key"] for r in rows if not r["passed"]]
    tol = max(r["tolerance"] for r in rows)
    below = sum(r["max_rel_error"] <= tol for r in rows)
    trade = []
    for (t,), rs in group(rows, "target").items():
        by_k = group(rs, "k")
        (k_hi,), (k_lo,) = max(by_k), min(by_k)
        if k_hi == k_lo:
            trade.append(f"{t}: only k = {k_hi} was run")
            continue
        hi, lo = by_k[(k_hi,)][0], by_k[(k_lo,)][0]
        c = {key: _change(hi[key], lo[key]) for key in ("hidden_width", "n_blocks", "frozen")}
        trade.append(
            f"{t} (k = {k_hi} to {k_lo}): hidden width {c['hidden_width']}, depth "
            f"{c['n_blocks']} blocks, frozen parameters {c['frozen']}, trainable "
            f"{_change(hi['trainable'], lo['trainable'])}"
        )

    def ints(key: str, form: str = "{}") -> str:
        return ", ".join(form.format(v) for v in sorted({r[key] for r in rows}))

    setting = (
        f"{n} trials ({profile_name(cfg)} profile; targets {ints('target')}, every partition "
        f"size k from d_in down to 1, radii R = {ints('radius', '{:g}')}, seeds {ints('seed')}, "
        f"overparam {ints('overparam', '{:g}')}; {ints('n_points')} points, {ints('dtype')})"
    )
    sentence = (
        f"{setting}: {passed} of {n} residual reconstructions passed their certificate (a "
        f"proven bound <= {tol:g} x the output scale)"
        + (
            f" (not passed: {', '.join(failed[:4])}{' and more' if len(failed) > 4 else ''})"
            if failed
            else ""
        )
        + f" and {below} of {n} had a measured "
        f"max relative error <= {tol:g}; the max relative error was "
        f"{spread([r['max_rel_error'] for r in rows])} (largest at target {worst['target']}, "
        f"k = {worst['k']}, R = {worst['radius']:g}); " + "; ".join(trade) + "."
    )
    return table, sentence




def _change(a: int, b: int) -> str:
    """``"64 → 8"``, or ``"unchanged at 64"`` for equal counts."""
    return f"unchanged at {a}" if a == b else f"{a} → {b}"




EXPERIMENT = Experiment(
    name="E2",
    title="Skip connections: width traded for depth",
    question="Does a narrow frozen random residual net with trainable norms reproduce a "
    "target exactly by being deeper, and how do width, depth and parameter counts change "
    "with the partition size k?",
    config_cls=E2Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
