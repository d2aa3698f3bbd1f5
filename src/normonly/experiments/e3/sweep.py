"""E3's settings and trials: exact-rank sweeps over nested masks, and sparse reconstructions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from normonly.experiments.base import ExperimentConfig
from normonly.experiments.rows import certificate_row

__all__ = ["E3Config", "densities", "recon_density", "run_trial", "trials"]


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
    """``factor`` times the dead-unit limit 2 ln d / d, capped at 1."""
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
        rec = reconstruct(target, radius=1.0, density=p, overparam=q, seed=s, n_points=cfg.n_points)
    except RankDeficientError as e:  # the construction refused: no network, a message
        widths = wide_widths(target, overparam=q, width=None, uniform_width=False)
        counts = NormNet(widths, density=p, seed=s).parameter_counts()
        return {**row, **counts, "ok": False, "rank": e.rank, "needed": e.needed, "error": str(e)}
    return {**row, **certificate_row(rec.certificate), "ok": True}
