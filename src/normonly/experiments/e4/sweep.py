"""E4 trials: the configuration, the trial list and one trial (construction, fit, why)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from normonly._threads import limit_threads
from normonly.experiments.base import ExperimentConfig

__all__ = ["E4Config", "FIT_METHODS", "err_value", "lr_grid", "run_trial", "trials"]

FIT_METHODS = (
    "norm_adam", "norm_sgd", "norm_lbfgs", "all_weights", "last_layer", "random_weights"
)  # fmt: skip
_SPLITS = ("train", "val", "test")


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
    why_noise: tuple[float, ...] = (1e-8, 1e-4, 1e-1)
    why_optimizers: tuple[str, ...] = ("lbfgs", "adam")
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
        lrs = (*self.adam_lrs, *self.sgd_lrs, *self.lbfgs_lrs, *self.baseline_lrs)
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
            n_val=1024, n_test=4096, adam_lrs=grid, sgd_lrs=grid, lbfgs_lrs=(0.1, 1.0),
            baseline_lrs=grid, why_overparams=(2.0, 4.0),
            why_noise=(1e-8, 1e-6, 1e-4, 1e-2, 1e-1), why_steps=300, gn_points=512,
        )  # fmt: skip


def lr_grid(cfg: E4Config, method: str) -> tuple[float, ...]:
    """The learning rates tried for ``method`` (a FIT_METHODS name or an optimizer name)."""
    grids = {"adam": cfg.adam_lrs, "sgd": cfg.sgd_lrs, "lbfgs": cfg.lbfgs_lrs}
    return grids.get(method.removeprefix("norm_"), cfg.baseline_lrs)


def trials(cfg: E4Config) -> list[dict]:
    out = []
    for o in cfg.overparams:
        for s in cfg.seeds:
            base = {"seed": s, "overparam": o}
            out.append({**base, "key": f"o{o:g}-s{s}-construction", "kind": "construction"})
            for m in FIT_METHODS:
                for lr in lr_grid(cfg, m):
                    key = f"o{o:g}-s{s}-{m}-lr{lr:g}"
                    out.append({**base, "key": key, "kind": "fit", "method": m, "lr": lr})
            for opt in cfg.why_optimizers if o in cfg.why_overparams else ():
                for lr in lr_grid(cfg, opt):
                    for eps in cfg.why_noise:
                        key = f"o{o:g}-s{s}-why-{opt}-lr{lr:g}-e{eps:g}"
                        out.append({**base, "key": key, "kind": "why", "optimizer": opt,
                                    "lr": lr, "noise": eps})  # fmt: skip
    return out


def _dtype(net) -> str:
    return str(next(net.parameters()).dtype).removeprefix("torch.")


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def err_value(v: float | None) -> float:
    return math.inf if v is None else float(v)


def _fit_row(res, net) -> dict:
    h = res.history
    return {
        "dtype": _dtype(net), "optimizer": res.optimizer, "n_trainable": res.n_trainable,
        "stopped": res.stopped,
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
        # only the test curve is kept between the first and last log (the rows' hist_test_rel)
        common = {"steps": cfg.steps, "batch_size": cfg.batch_size, "seed": seed,
                  "log_splits": ("test",)}  # fmt: skip
        if trial["kind"] == "fit":
            m, lr = trial["method"], trial["lr"]
            if m.startswith("norm_"):
                return _fit_row(fit_norm_only(net, data, optimizer=m[5:], lr=lr, **common), net)
            fit, extra = getattr(baselines, f"fit_{m}"), {}
            if m == "last_layer":  # matched count, capped by the layer's size on small targets
                extra["n_params"] = min(
                    baselines.count_norm_parameters(net), net.linears[-1].weight.numel()
                )
            return _fit_row(fit(net, data, optimizer="adam", lr=lr, **common, **extra), net)
        t0 = time.perf_counter()
        net, _ = build_wide(target, radius=cfg.radius, overparam=o, net=net)
        built_s = time.perf_counter() - t0
        net.eval()
        if trial["kind"] == "construction":
            gn = gauss_newton_spectrum(net, data.x_test[: cfg.gn_points])
            return {
                "method": "construction", "train_time_s": built_s, "dtype": _dtype(net),
                **{f"{s}_rel_error": data.errors(net, s)[0] for s in _SPLITS},
                "n_norm_params": gn.n_params, "gn_rank": gn.rank, "gn_lambda_max": gn.lambda_max,
                "gn_lambda_min": gn.lambda_min, "gn_lambda_min_nonzero": gn.lambda_min_nonzero,
                "gn_cond": gn.cond, "gn_spectrum": gn.eigenvalues.tolist(),
            }  # fmt: skip
        params = [p for p in net.parameters() if p.requires_grad]
        theta, delta = perturb_parameters(params, trial["noise"], seed=seed)
        opt, lr = trial["optimizer"], trial["lr"]
        res = fit_norm_only(net, data, optimizer=opt, lr=lr, **{**common, "steps": cfg.why_steps})
        moved = float((parameters_to_vector(params).detach() - theta).norm() / theta.norm())
        return {
            "dtype": _dtype(net), "train_time_s": res.wall_time_s, "stopped": res.stopped,
            "start_test_rel_error": res.history[0]["test_rel_error"],
            "test_rel_error": _finite(res.final["test_rel_error"]),
            "start_distance": float(delta.norm() / theta.norm()), "final_distance": moved,
        }  # fmt: skip


# ---------------------------------------------------------------------------- summaries
