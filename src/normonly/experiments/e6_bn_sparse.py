"""E6 — BN-only training of a frozen, randomly sparse network on real data.

A network keeps PyTorch's default random weights, pruned to a kept fraction by a fixed random mask;
only BatchNorm γ, β are trained (mode ``bn``). Controls (:mod:`normonly.train.bn_sparse`):
training the same number of randomly chosen kept weights (``random``, Frankle et al.'s control)
and training every kept weight and every γ, β (``all``). Models: an MLP and a small 1-D CNN on
MNIST-1D (digits-MLP is available too). The result is test accuracy against kept fraction, drawn
next to MNIST-1D's published baselines and, on its own panel, the published CIFAR-10 ResNet-34
BN-only sweep in raw accuracy (external reference numbers from
:func:`~normonly.experiments.references.load_references`, shown, never used to rescale ours).

Optimizers: Adam and the anchor's SGD with momentum 0.9 (``optimizers``), each with a cosine
schedule and no weight decay (so untrained entries stay exactly unchanged). Learning rate: every
trial trains once per rate of its optimizer's grid (``adam_lrs``, ``sgd_lrs``) on the training
split minus a validation split (``val_fraction`` of the training rows, seeded by ``val_seed``;
the test split is never looked at), and records validation and test accuracy per rate. The rate
of each (model, optimizer, mode) is the one with the highest median validation accuracy over its
kept fractions and seeds; tables and figures show test accuracy at that rate.

Seeds: ``seed`` is the model seed (mask and weights; ``seed + 1`` the choice of random weights;
``seed + 2`` the mini-batch order); ``data_seed`` the MNIST-1D generator seed / digits split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from normonly.experiments._common import md_table, median
from normonly.experiments.base import Experiment, ExperimentConfig
from normonly.experiments.e6_plots import figures
from normonly.experiments.e6_select import (
    MODE_LABEL,
    accuracy_curve,
    chosen_lrs,
    cifar_anchor,
    median_of,
    mnist1d_baselines,
    model_optimizers,
)

__all__ = ["E6Config", "EXPERIMENT", "cifar_anchor", "mnist1d_baselines"]

@dataclass(frozen=True)
class E6Config(ExperimentConfig):
    """E6 settings. ``models`` are ``"<dataset>-<arch>"`` with arch ``mlp`` or ``cnn``."""

    models: tuple[str, ...] = ("mnist1d-mlp",)
    densities: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
    modes: tuple[str, ...] = ("bn", "random", "all")
    all_densities: tuple[float, ...] = (1.0,)  # kept fractions at which mode "all" runs
    seeds: tuple[int, ...] = (0, 1)
    mlp_width: int = 256
    mlp_depth: int = 2
    cnn_channels: int = 32
    cnn_depth: int = 3
    epochs: int = 8
    cnn_epochs: int = 4
    optimizers: tuple[str, ...] = ("adam", "sgd")
    adam_lrs: tuple[float, ...] = (0.01, 0.03)
    sgd_lrs: tuple[float, ...] = (0.1, 0.3)
    val_fraction: float = 0.2
    val_seed: int = 0
    batch_size: int = 128
    mnist1d_seed: int = 42
    digits_seed: int = 0

    def validate(self) -> None:
        from normonly._checks import check_density, check_int
        from normonly.data.classifiers import check_optimizer
        from normonly.train.bn_sparse import MODES

        for model in self.models:
            _split(model)
        for p in (*self.densities, *self.all_densities):
            check_density(p)
        if not set(self.modes) <= set(MODES):
            raise ValueError(f"E6Config.modes must be among {MODES}, got {self.modes}")
        for name in ("mlp_width", "mlp_depth", "cnn_channels", "cnn_depth", "epochs",
                     "cnn_epochs", "batch_size"):  # fmt: skip
            check_int(name, getattr(self, name), minimum=1)
        for name in ("mnist1d_seed", "digits_seed", "val_seed"):
            check_int(name, getattr(self, name), minimum=0)
        for s in self.seeds:
            check_int("seeds", s, minimum=0)
        for lr in (*self.adam_lrs, *self.sgd_lrs):
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"E6Config: every lr must be a finite number > 0, got {lr}")
        if not (math.isfinite(self.val_fraction) and 0 < self.val_fraction < 1):
            raise ValueError(f"E6Config.val_fraction must be in (0, 1), got {self.val_fraction}")
        for opt in self.optimizers:
            check_optimizer(opt, minibatch=True, what="E6Config.optimizers")

    @classmethod
    def full(cls) -> E6Config:
        return cls(
            models=("mnist1d-mlp", "mnist1d-cnn"),
            densities=(1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.005, 0.001),
            seeds=(0, 1, 2),
            all_densities=(1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.005, 0.001),
            adam_lrs=(0.003, 0.01, 0.03, 0.1),
            sgd_lrs=(0.03, 0.1, 0.3, 1.0),
            epochs=30,
            cnn_epochs=20,
        )

    def lr_grid(self, optimizer: str) -> tuple[float, ...]:
        return self.adam_lrs if optimizer == "adam" else self.sgd_lrs


def _split(model: str) -> tuple[str, str]:
    dataset, _, arch = model.partition("-")
    if dataset not in ("digits", "mnist1d") or arch not in ("mlp", "cnn"):
        raise ValueError(
            f"E6 model must be '<dataset>-<arch>' with dataset digits|mnist1d and arch mlp|cnn, "
            f"got {model!r}; e.g. 'mnist1d-mlp'"
        )
    return dataset, arch


def trials(cfg: E6Config) -> list[dict]:
    out = []
    for model in cfg.models:
        dataset, arch = _split(model)
        for opt in cfg.optimizers:
            for mode in cfg.modes:
                for p in cfg.all_densities if mode == "all" else cfg.densities:
                    for s in cfg.seeds:
                        key = f"{model}-{opt}-{mode}-p{p:g}-s{s}"
                        out.append({"key": key, "seed": s, "model": model, "dataset": dataset,
                                    "arch": arch, "optimizer": opt, "mode": mode,
                                    "density": p})  # fmt: skip
    return out


def run_trial(cfg: E6Config, trial: dict) -> dict:
    """Train once per learning rate of the trial's optimizer grid, on train minus validation."""
    from normonly._threads import limit_threads
    from normonly.data.datasets import load_dataset
    from normonly.train.bn_sparse import train_sparse, validation_split

    dataset, arch = trial["dataset"], trial["arch"]
    data_seed = cfg.digits_seed if dataset == "digits" else cfg.mnist1d_seed
    mlp = arch == "mlp"
    lrs = list(cfg.lr_grid(trial["optimizer"]))
    per_lr = []
    with limit_threads(1):
        data = load_dataset(dataset, data_seed)
        rest, X_val, y_val, _ = validation_split(data, cfg.val_fraction, seed=cfg.val_seed)
        for lr in lrs:
            per_lr.append(train_sparse(
                rest, arch=arch, mode=trial["mode"], density=trial["density"],
                width=cfg.mlp_width if mlp else cfg.cnn_channels,
                depth=cfg.mlp_depth if mlp else cfg.cnn_depth,
                epochs=cfg.epochs if mlp else cfg.cnn_epochs, lr=lr, seed=trial["seed"],
                optimizer=trial["optimizer"], batch_size=cfg.batch_size, val=(X_val, y_val),
            ))  # fmt: skip
    first = per_lr[0]
    return {
        **trial, "lrs": lrs, "data_seed": data_seed, "model_seed": trial["seed"],
        "epochs": cfg.epochs if mlp else cfg.cnn_epochs, "dtype": "float32",
        "n_train_used": int(rest.X_train.shape[0]), "n_val": int(X_val.shape[0]),
        "n_trainable": first["n_trainable"], "n_bn": first["n_bn"],
        "n_weights": first["n_weights"], "n_kept": first["n_kept"],
        **{f"{k}_by_lr": [r[k] for r in per_lr]
           for k in ("train_acc", "val_acc", "test_acc", "final_loss", "train_time_s")},
        "train_time_s": sum(r["train_time_s"] for r in per_lr),
    }  # fmt: skip


def _plateau(c: dict[float, list[float]], drop: float = 5.0) -> float | None:
    """Smallest kept fraction down to which the median stays within ``drop`` points of p = 1."""
    if 1.0 not in c:
        return None
    ref, last = median_of(c[1.0]), None
    for p, v in c.items():  # decreasing kept fraction
        if median_of(v) < ref - drop:
            break
        last = p
    return last


def _cell(v: list[float]) -> str:
    return f"{median_of(v):.1f} [{min(v):.1f}–{max(v):.1f}]" if v else ""


def summarize(cfg: E6Config, rows: list[dict]) -> tuple[str, str]:
    anchor = cifar_anchor()
    ext = anchor["acc"]
    lrs = chosen_lrs(rows)
    heads, cols = ["kept fraction"], []
    for model, opt in model_optimizers(rows):
        for mode in ("bn", "random", "all"):
            c = accuracy_curve(rows, model, mode, opt)
            if c:
                heads.append(f"{model} {opt} {MODE_LABEL[mode]} (%)")
                cols.append(c)
    heads.append("EXTERNAL CIFAR-10 ResNet-34 BN-only (%)")
    ps = sorted({r["density"] for r in rows} | {1.0}, reverse=True)
    body = [[f"{p:g}"] + [_cell(c.get(p, [])) for c in cols]
            + [f"{ext[p]:.2f}" if p in ext else ""] for p in ps]  # fmt: skip
    grid = []
    for (model, opt, mode), lr in lrs.items():
        rs = [r for r in rows if (r["model"], r["optimizer"], r["mode"]) == (model, opt, mode)]
        vals = [f"{x:g}: {100 * median([{'v': r['val_acc_by_lr'][i]} for r in rs], 'v'):.1f}"
                for i, x in enumerate(rs[0]["lrs"])]  # fmt: skip
        grid.append([model, opt, MODE_LABEL[mode], "; ".join(vals), f"{lr:g}"])
    n_val = sorted({r.get("n_val") for r in rows if "n_val" in r})
    table = md_table(heads, body) + (
        f"\n\nCells: median [min–max] test accuracy over {len(cfg.seeds)} seeds at the chosen "
        f"lr. External column: published, one run, SGD with momentum (training everything: "
        f"{anchor['train_all']}%); source: {anchor['source']}. It is a reference, not a target: "
        "different data and network. MNIST-1D published baselines: "
        + ", ".join(f"{k} {v:g}%" for k, v in mnist1d_baselines().items()) + "; chance 10%."
        f"\n\n**Learning rate chosen on validation data** ({', '.join(map(str, n_val))} rows "
        f"carved from the training split, {100 * cfg.val_fraction:g}%, seed {cfg.val_seed}; the "
        "test split is not used): median validation accuracy (%) per lr over kept fractions "
        "and seeds:\n\n" + md_table(["model", "optimizer", "mode", "lr: val acc", "chosen lr"],
                                     grid)
    )  # fmt: skip
    return table, conclusion(rows)


def conclusion(rows: list[dict]) -> str:
    """Sentences computed from ``rows``: trials, seeds, dtype, chosen rates, medians and ranges."""
    if not rows:
        return "No E6 trials were run."
    lrs = chosen_lrs(rows)
    seeds = sorted({r["seed"] for r in rows})
    dtypes = sorted({r.get("dtype", "unknown") for r in rows})
    n_fits = sum(len(r["lrs"]) for r in rows)
    parts = [
        f"E6 ran {len(rows)} trials ({n_fits} trainings over the learning-rate grids) on "
        f"{len(seeds)} seeds in {'/'.join(dtypes)}; accuracies are median [range] over seeds of "
        "test accuracy at the rate chosen on the validation split"
    ]
    bn_at: dict[tuple, dict] = {}
    for model, opt in model_optimizers(rows):
        bn, rnd, full = (accuracy_curve(rows, model, m, opt) for m in ("bn", "random", "all"))
        if not bn:
            continue
        bn_at[(model, opt)] = bn
        hi, lo = max(bn), min(bn)
        text = (
            f"{model} BN-only with {opt} (lr {lrs[(model, opt, 'bn')]:g}) reaches "
            f"{_cell(bn[hi])}% at kept fraction {hi:g}"
        )
        plateau = _plateau(bn)
        if plateau is not None and plateau < 1.0:
            text += f", stays within 5 points of it down to {plateau:g}"
        text += f" and ends at {_cell(bn[lo])}% at {lo:g} (chance 10%)"
        if rnd:
            wins = sum(median_of(bn[p]) > median_of(rnd[p]) for p in bn if p in rnd)
            text += f", beating the same number of random weights at {wins}/{len(rnd)} fractions"
        if 1.0 in full:
            text += f", vs {_cell(full[1.0])}% when all weights of the dense net are trained"
        parts.append(text)
    models = list(dict.fromkeys(m for m, _ in bn_at))
    for model in models:
        got = {opt: c for (m, opt), c in bn_at.items() if m == model}
        if len(got) > 1 and all(1.0 in c for c in got.values()):
            best = max(got, key=lambda o: median_of(got[o][1.0]))
            parts.append(
                f"at kept fraction 1 on {model}, {best} gives the better BN-only accuracy ("
                + ", ".join(f"{o} {median_of(c[1.0]):.1f}%" for o, c in got.items())
                + ")"
            )
    return "; ".join(parts) + "."


EXPERIMENT = Experiment(
    name="E6",
    title="BN-only training of a frozen random network with random sparsity",
    question="How accurate is a frozen random, randomly pruned network when only its "
    "BatchNorm γ/β are trained on real data, against the kept fraction of its weights?",
    config_cls=E6Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
