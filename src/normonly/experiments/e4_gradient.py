"""E4 — the construction vs gradient descent on the same frozen network.

Targets and frozen networks are E1's: ``TargetMLP.random(target_widths, seed=s)`` and the wide
BatchNorm ``NormNet`` of :func:`~normonly.construct.wide.wide_widths` (weights seeded by ``s``)
per overparameterization. Per seed, on one seeded data set (i.i.d. uniform in the ball, from
:func:`~normonly.data.regression.regression_data`; fixed training set, separate validation and test
sets), the trial kinds are:

* ``construction`` — :func:`~normonly.construct.wide.build_wide`: wall time, test error, and the
  Gauss-Newton spectrum ``H = 2JᵀJ/N`` of the MSE w.r.t. the norm parameters at its solution
  (residual 0, so H is the Hessian there);
* ``fit`` — ``norm_adam``, ``norm_sgd``, ``norm_lbfgs`` (:func:`~normonly.train.fit_norm_only`
  from γ=1, β=0) and the baselines ``all_weights``, ``last_layer``, ``random_weights`` (Adam, the
  last two with as many trained entries as there are norm parameters), one run per learning rate;
* ``why`` — the construction's θ* plus a seeded perturbation of relative size ε, then training:
  does the error come back down?

Each method's learning rate is chosen per overparameterization by the median (over seeds) final
*validation* error; tables and figures report the test error at that rate. The question and the
design are in ``docs/theory.md#experiments``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from normonly._threads import limit_threads
from normonly.experiments._common import fmt, group, md_table, pyplot
from normonly.experiments.base import Experiment, ExperimentConfig, save_figure

__all__ = ["E4Config", "EXPERIMENT"]

FIT_METHODS = ("norm_adam", "norm_sgd", "norm_lbfgs", "all_weights", "last_layer", "random_weights")
_SPLITS = ("train", "val", "test")
_MAIN_HEADS = ["overparam", "method", "optimizer", "lr", "trainable", "test rel err", "spread",
               "time s", "seeds"]  # fmt: skip
_WHY_HEADS = ["overparam", "optimizer", "ε", "start test err", "final test err", "lower",
              "final ‖θ−θ*‖/‖θ*‖"]  # fmt: skip
_GN_HEADS = ["overparam", "norm params P", "rank per seed", "λ_max", "smallest λ > 0",
             "cond (non-null)"]  # fmt: skip


@dataclass(frozen=True)
class E4Config(ExperimentConfig):
    target_widths: tuple[int, ...] = (5, 5, 5)
    overparams: tuple[float, ...] = (1.0, 2.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    radius: float = 1.0
    steps: int = 300
    batch_size: int = 256
    n_train: int = 1024
    n_val: int = 256
    n_test: int = 1024
    adam_lrs: tuple[float, ...] = (1e-2, 1e-1)
    sgd_lrs: tuple[float, ...] = (1e-2, 1e-1)
    lbfgs_lrs: tuple[float, ...] = (1.0,)
    baseline_lrs: tuple[float, ...] = (1e-2, 1e-1)
    why_overparams: tuple[float, ...] = field(default=(2.0,), metadata={"allow_empty": True})
    why_noise: tuple[float, ...] = (1e-8, 1e-5, 1e-3, 1e-1)
    why_optimizers: tuple[str, ...] = ("lbfgs", "adam")
    why_adam_lr: float = 1e-3
    why_steps: int = 100
    gn_points: int = 256

    def validate(self) -> None:
        from normonly._checks import check_int, check_overparam, check_radius
        from normonly.data.classifiers import OPTIMIZERS

        check_radius(self.radius)
        for name in ("steps", "batch_size", "n_train", "n_val", "n_test", "why_steps", "gn_points"):
            check_int(name, getattr(self, name), minimum=1)
        for w in self.target_widths:
            check_int("target_widths", w, minimum=1)
        for o in self.overparams:
            check_overparam(o)
        lrs = (*self.adam_lrs, *self.sgd_lrs, *self.lbfgs_lrs, *self.baseline_lrs, self.why_adam_lr)
        if not all(math.isfinite(lr) and lr > 0 for lr in lrs):
            raise ValueError(f"E4Config: every learning rate must be finite and > 0, got {lrs}")
        if not set(self.why_overparams) <= set(self.overparams):
            raise ValueError(
                f"E4Config.why_overparams {self.why_overparams} must be among overparams "
                f"{self.overparams}"
            )
        if not set(self.why_optimizers) <= set(OPTIMIZERS):
            raise ValueError(
                f"E4Config.why_optimizers must be among {OPTIMIZERS}, got {self.why_optimizers}"
            )

    @classmethod
    def full(cls) -> E4Config:
        grid = (1e-3, 1e-2, 1e-1)
        return cls(
            overparams=(1.0, 2.0, 4.0), seeds=(0, 1, 2, 3, 4), steps=1000, n_train=4096,
            n_val=1024, n_test=4096, adam_lrs=grid, sgd_lrs=grid, lbfgs_lrs=(1.0,),
            baseline_lrs=grid, why_overparams=(2.0, 4.0),
            why_noise=(1e-8, 1e-6, 1e-4, 1e-2, 1e-1), why_steps=300, gn_points=512,
        )  # fmt: skip


def trials(cfg: E4Config) -> list[dict]:
    lrs = dict(zip(FIT_METHODS[:3], (cfg.adam_lrs, cfg.sgd_lrs, cfg.lbfgs_lrs), strict=True))
    out = []
    for o in cfg.overparams:
        for s in cfg.seeds:
            base = {"seed": s, "overparam": o}
            out.append({**base, "key": f"o{o:g}-s{s}-construction", "kind": "construction"})
            for m in FIT_METHODS:
                for lr in lrs.get(m, cfg.baseline_lrs):
                    key = f"o{o:g}-s{s}-{m}-lr{lr:g}"
                    out.append({**base, "key": key, "kind": "fit", "method": m, "lr": lr})
            for opt in cfg.why_optimizers if o in cfg.why_overparams else ():
                for eps in cfg.why_noise:
                    key = f"o{o:g}-s{s}-why-{opt}-e{eps:g}"
                    out.append({**base, "key": key, "kind": "why", "optimizer": opt, "noise": eps})
    return out


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _err(v: float | None) -> float:
    return math.inf if v is None else float(v)


def _fit_row(res) -> dict:
    h = res.history
    return {
        "optimizer": res.optimizer, "n_trainable": res.n_trainable, "stopped": res.stopped,
        "steps_done": res.steps_done, "train_time_s": res.wall_time_s,
        **{f"{s}_rel_error": _finite(h[-1][f"{s}_rel_error"]) for s in _SPLITS},
        "hist_step": [r["step"] for r in h], "hist_time_s": [r["wall_time_s"] for r in h],
        "hist_test_rel": [_finite(r["test_rel_error"]) for r in h],
    }  # fmt: skip


def run_trial(cfg: E4Config, trial: dict) -> dict:
    from torch.nn.utils import parameters_to_vector

    from normonly.construct.layout import wide_widths
    from normonly.construct.wide import build_wide
    from normonly.data.regression import regression_data
    from normonly.nets.target import TargetMLP
    from normonly.nets.wide import NormNet
    from normonly.train import baselines, fit_norm_only
    from normonly.train.conditioning import gauss_newton_spectrum, perturb_parameters

    seed, o = trial["seed"], trial["overparam"]
    with limit_threads(1):
        target = TargetMLP.random(list(cfg.target_widths), seed=seed)
        widths = wide_widths(target, overparam=o, width=None, uniform_width=False)
        net = NormNet(widths, norm="batchnorm", seed=seed)
        sizes = {"n_train": cfg.n_train, "n_val": cfg.n_val, "n_test": cfg.n_test}
        data = regression_data(target, radius=cfg.radius, seed=seed, **sizes)
        common = {"steps": cfg.steps, "batch_size": cfg.batch_size, "seed": seed}
        if trial["kind"] == "fit":
            m, lr = trial["method"], trial["lr"]
            if m.startswith("norm_"):
                return _fit_row(fit_norm_only(net, data, optimizer=m[5:], lr=lr, **common))
            fit, extra = getattr(baselines, f"fit_{m}"), {}
            if m == "last_layer":  # matched count, capped by the layer's size on small targets
                extra["n_params"] = min(
                    baselines.count_norm_parameters(net), net.linears[-1].weight.numel()
                )
            return _fit_row(fit(net, data, optimizer="adam", lr=lr, **common, **extra))
        t0 = time.perf_counter()
        net, _ = build_wide(target, radius=cfg.radius, overparam=o, net=net)
        built_s = time.perf_counter() - t0
        net.eval()
        if trial["kind"] == "construction":
            gn = gauss_newton_spectrum(net, data.x_test[: cfg.gn_points])
            return {
                "method": "construction", "train_time_s": built_s,
                **{f"{s}_rel_error": data.errors(net, s)[0] for s in _SPLITS},
                "n_norm_params": gn.n_params, "gn_rank": gn.rank, "gn_lambda_max": gn.lambda_max,
                "gn_lambda_min": gn.lambda_min, "gn_lambda_min_nonzero": gn.lambda_min_nonzero,
                "gn_cond": gn.cond, "gn_spectrum": gn.eigenvalues.tolist(),
            }  # fmt: skip
        params = [p for p in net.parameters() if p.requires_grad]
        theta, delta = perturb_parameters(params, trial["noise"], seed=seed)
        opt = trial["optimizer"]
        lr = 1.0 if opt == "lbfgs" else cfg.why_adam_lr
        res = fit_norm_only(net, data, optimizer=opt, lr=lr, **{**common, "steps": cfg.why_steps})
        moved = float((parameters_to_vector(params).detach() - theta).norm() / theta.norm())
        return {
            "lr": lr, "train_time_s": res.wall_time_s, "stopped": res.stopped,
            "start_test_rel_error": res.history[0]["test_rel_error"],
            "test_rel_error": _finite(res.final["test_rel_error"]),
            "start_distance": float(delta.norm() / theta.norm()), "final_distance": moved,
        }  # fmt: skip


# ---------------------------------------------------------------------------- summaries


def _chosen(rows: list[dict]) -> dict[tuple, list[dict]]:
    """``{(overparam, method): rows of the lr with the best median validation error}``."""
    out = {}
    for (o, m), rs in group([r for r in rows if r["kind"] == "fit"], "overparam", "method").items():
        by_lr = group(rs, "lr")
        best = min(by_lr, key=lambda k: np.median([_err(r["val_rel_error"]) for r in by_lr[k]]))
        out[(o, m)] = by_lr[best]
    return out


def _med(rs: list[dict], key: str) -> float:
    return float(np.median([_err(r[key]) for r in rs]))


def _methods(rows: list[dict]) -> dict[float, list[tuple[str, list[dict]]]]:
    """Per overparam: ``[("construction", rows), (method, rows at the chosen lr), ...]``."""
    chosen, out = _chosen(rows), {}
    for (o,), rs in group([r for r in rows if r["kind"] == "construction"], "overparam").items():
        fits = [(m, chosen[(o, m)]) for m in FIT_METHODS if (o, m) in chosen]
        out[o] = [("construction", rs), *fits]
    return out


def summarize(cfg: E4Config, rows: list[dict]) -> tuple[str, str]:
    table = []
    for o, methods in _methods(rows).items():
        for m, rs in methods:
            errs = [_err(r["test_rel_error"]) for r in rs]
            fit = m != "construction"
            table.append([
                o, m, rs[0]["optimizer"] if fit else "—", rs[0]["lr"] if fit else "—",
                rs[0]["n_trainable"] if fit else rs[0]["n_norm_params"], _med(rs, "test_rel_error"),
                f"{fmt(min(errs))}–{fmt(max(errs))}", _med(rs, "train_time_s"), len(rs),
            ])  # fmt: skip
    parts = [
        f"**Final test relative error** ‖ŷ−y‖/‖y‖ on {cfg.n_test} test points (median and "
        f"min–max over seeds) after {cfg.steps} steps, lr chosen on validation data; time = "
        "optimizer (or construction) seconds:\n\n",
        md_table(_MAIN_HEADS, table),
    ]
    why = [r for r in rows if r["kind"] == "why"]
    if why:
        wt = [
            [o, opt, eps, _med(rs, "start_test_rel_error"), _med(rs, "test_rel_error"),
             f"{sum(_err(r['test_rel_error']) < r['start_test_rel_error'] for r in rs)}/{len(rs)}",
             _med(rs, "final_distance")]
            for (o, opt, eps), rs in group(why, "overparam", "optimizer", "noise").items()
        ]  # fmt: skip
        parts += [
            f"\n\n**Why: the construction's θ* plus relative noise ε**, then {cfg.why_steps} steps "
            f"(L-BFGS lr 1, Adam lr {cfg.why_adam_lr:g}); 'lower' = seeds ending below the start "
            "error:\n\n",
            md_table(_WHY_HEADS, wt),
        ]
    ct = [
        [o, rs[0]["n_norm_params"], ", ".join(str(r["gn_rank"]) for r in rs),
         _med(rs, "gn_lambda_max"), _med(rs, "gn_lambda_min_nonzero"), _med(rs, "gn_cond")]
        for o, ((_, rs), *_) in _methods(rows).items()
    ]  # fmt: skip
    if ct:
        parts += [
            f"\n\n**Conditioning at the construction's solution**: H = 2JᵀJ/N of the MSE w.r.t. "
            f"the norm parameters on {cfg.gn_points} test points (medians over seeds; numerical "
            "rank at λ_max·P·eps):\n\n",
            md_table(_GN_HEADS, ct),
        ]
    return "".join(parts), _sentence(rows)


def _sentence(rows: list[dict]) -> str:
    methods = _methods(rows)
    if not methods:
        return "No E4 rows to summarise."
    o = max(methods)
    (_, cons), *fits = methods[o]
    ce, ct = _med(cons, "test_rel_error"), _med(cons, "train_time_s")
    if not fits:
        return f"At overparam {o:g} the construction reaches {ce:.1e} in {ct:.2g} s."
    m, rs = min(fits, key=lambda mr: _med(mr[1], "test_rel_error"))
    fe, ft = _med(rs, "test_rel_error"), _med(rs, "train_time_s")
    s = (
        f"At overparam {o:g}, the best gradient method ({m}, {rs[0]['optimizer']} lr "
        f"{rs[0]['lr']:g}) ends at a median test relative error of {fe:.1e} after {ft:.2g} s of "
        f"optimizer time, {fe / max(ce, 1e-300):.1e} times the construction's {ce:.1e}, which "
        f"took {ct:.2g} s ({ft / max(ct, 1e-300):.0f}x less time)"
    )
    norm = [(m, rs) for m, rs in fits if m.startswith("norm_")]
    if norm:
        m, rs = min(norm, key=lambda mr: _med(mr[1], "test_rel_error"))
        s += (
            f"; the best norm-only optimizer ({m}) gets {_med(rs, 'test_rel_error'):.1e} in "
            f"{_med(rs, 'train_time_s'):.2g} s"
        )
    mine = [r for r in rows if r["kind"] == "why" and r["overparam"] == o]
    why = group(mine, "noise", "optimizer")
    if why:
        eps = min(k[0] for k in why)
        moves = [f"{opt} {_med(rs, 'start_test_rel_error'):.1e} -> "
                 f"{_med(rs, 'test_rel_error'):.1e}"
                 for (e, opt), rs in why.items() if e == eps]  # fmt: skip
        s += f"; from θ* plus relative noise {eps:g}: " + ", ".join(moves)
    ranks = sorted({r["gn_rank"] for r in cons})
    rank = f"{ranks[0]}" if len(ranks) == 1 else f"{ranks[0]}–{ranks[-1]}"
    return s + (
        f"; the Hessian at θ* has rank {rank} of {cons[0]['n_norm_params']} and condition "
        f"number {_med(cons, 'gn_cond'):.1e} on its non-null part."
    )


# ---------------------------------------------------------------------------- figures


def _curve(rs: list[dict]) -> tuple[np.ndarray, ...]:
    """Median (over seeds) step, time and test error per log point, and the min/max error."""
    n = max(len(r["hist_step"]) for r in rs)

    def pad(v: list) -> list:  # a run that stopped early keeps its last value
        v = [_err(x) for x in v]
        return v + [v[-1]] * (n - len(v))

    y = np.array([pad(r["hist_test_rel"]) for r in rs])  # (seeds, logs)
    t = np.median(np.array([pad(r["hist_time_s"]) for r in rs]), axis=0)
    steps = np.array(max((r["hist_step"] for r in rs), key=len), dtype=float)
    return steps, t, np.median(y, axis=0), y.min(axis=0), y.max(axis=0)


def figures(cfg: E4Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    methods = _methods(rows)
    paths = []
    for xaxis in ("time", "steps"):
        fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 4), squeeze=False)
        for ax, (o, ms) in zip(axes[0], methods.items(), strict=True):
            (_, cons), *fits = ms
            for i, (m, rs) in enumerate(fits):
                steps, t, med, lo, hi = _curve(rs)
                x = t if xaxis == "time" else steps
                k = x > 0  # log axis: drop step 0 / time 0
                label = f"{m} ({rs[0]['optimizer']}, lr {rs[0]['lr']:g})"
                ax.plot(x[k], med[k], color=f"C{i}", label=label)
                ax.fill_between(x[k], lo[k], hi[k], color=f"C{i}", alpha=0.2)
            ce = _med(cons, "test_rel_error")
            ax.axhline(ce, color="k", ls="--", lw=1, label=f"construction ({ce:.0e})")
            if xaxis == "time":
                ax.plot([_med(cons, "train_time_s")], [ce], "k*", ms=12)
            ax.set(xscale="log", yscale="log", title=f"overparam {o:g}: median over seeds, "
                   "min–max shaded", ylabel="test relative error ‖ŷ−y‖/‖y‖",
                   xlabel="optimizer wall time (s)" if xaxis == "time" else "step")  # fmt: skip
            ax.grid(True, alpha=0.3)
        axes[0][-1].legend(fontsize=7, loc="center left")
        paths.append(save_figure(fig, Path(outdir) / f"e4_error_vs_{xaxis}.png"))
    return paths + _why_figure(plt, cfg, rows, methods, Path(outdir))


def _why_figure(plt, cfg: E4Config, rows: list[dict], methods: dict, outdir: Path) -> list[Path]:
    why = [r for r in rows if r["kind"] == "why"]
    if not why and not methods:
        return []
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, ((o, opt), rs) in enumerate(group(why, "overparam", "optimizer").items()):
        by = list(group(rs, "noise").values())
        s0 = [_med(v, "start_test_rel_error") for v in by]
        a.plot(s0, [_med(v, "test_rel_error") for v in by], "os^Dv"[i % 5] + "-",
               label=f"{opt}, overparam {o:g}")  # fmt: skip
    if why:
        starts = [r["start_test_rel_error"] for r in why]
        lim = [min(starts), max(starts)]
        a.plot(lim, lim, "k:", lw=1, label="final = start")
    a.set(xscale="log", yscale="log", title="Does training return to the construction's θ*?",
          xlabel="test relative error at the start (θ* + noise ε, median over seeds)",
          ylabel=f"test relative error after {cfg.why_steps} steps")  # fmt: skip
    a.legend(fontsize=7)
    floor = 1e-20  # eigenvalues below this fraction of λ_max sit on the floor
    for o, ((_, cons), *_) in methods.items():
        spec = np.median([np.array(r["gn_spectrum"]) / r["gn_lambda_max"] for r in cons], axis=0)
        b.semilogy(np.arange(1, spec.size + 1), np.maximum(spec, floor), label=f"overparam {o:g}")
        b.axhline(spec.size * np.finfo(np.float64).eps, color="gray", ls=":", lw=1)
    b.set(ylim=(floor / 3, 3), xlabel="eigenvalue index (descending)",
          ylabel="eigenvalue / λ_max of H = 2JᵀJ/N",
          title="Hessian at θ* (median over seeds; dotted: rank threshold P·eps)")  # fmt: skip
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
    return [save_figure(fig, outdir / "e4_why.png")]


EXPERIMENT = Experiment(
    name="E4",
    title="Construction vs gradient descent on the norm parameters",
    question="How close do Adam, SGD and L-BFGS on γ, β (and the usual baselines) get to the "
    "construction's exact solution, at what time cost, and why do they fall short?",
    config_cls=E4Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
