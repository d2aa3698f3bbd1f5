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
from pathlib import Path

from normonly.experiments._common import md_table, median, pyplot
from normonly.experiments.base import Experiment, ExperimentConfig, save_figure

__all__ = ["E6Config", "EXPERIMENT", "cifar_anchor", "mnist1d_baselines"]

CHANCE = 10.0
_MODE_LABEL = {"bn": "BN-only", "random": "same # random weights", "all": "all weights"}


def cifar_anchor() -> dict:
    """The external CIFAR-10 ResNet-34 BN-only sweep: ``{"source", "optimizer", "acc": {p: %},
    "train_all": %}`` from ``references.toml`` (table ``e6_cifar10_resnet34_bn_only``)."""
    from normonly.experiments.references import load_references

    t = load_references()["e6_cifar10_resnet34_bn_only"]
    acc = dict(zip(t["kept_fraction"], t["test_accuracy_percent"], strict=True))
    return {"source": t["source"], "what": t["what"], "acc": acc,
            "train_all": t["train_all_percent"]}  # fmt: skip


def mnist1d_baselines() -> dict[str, float]:
    """MNIST-1D's published test accuracies (%) of fully trained models (``references.toml``)."""
    from normonly.experiments.references import load_references

    t = load_references()["e6_mnist1d_baselines"]
    return dict(zip(t["models"], t["test_accuracy_percent"], strict=True))


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


def chosen_lrs(rows: list[dict]) -> dict[tuple, float]:
    """``{(model, optimizer, mode): lr}`` with the highest median validation accuracy over the
    group's kept fractions and seeds (ties: the smaller rate)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["optimizer"], r["mode"]), []).append(r)
    out = {}
    for k, rs in groups.items():
        lrs = rs[0]["lrs"]
        score = [median([{"v": r["val_acc_by_lr"][i]} for r in rs], "v") for i in range(len(lrs))]
        out[k] = max(zip(lrs, score, strict=True), key=lambda ls: (ls[1], -ls[0]))[0]
    return out


def _at(r: dict, lr: float, key: str = "test_acc") -> float:
    return r[f"{key}_by_lr"][r["lrs"].index(lr)]


def _curve(rows: list[dict], model: str, mode: str, opt: str) -> dict[float, list[float]]:
    """kept fraction -> test accuracies (%) over seeds, at the group's chosen lr."""
    lr = chosen_lrs(rows).get((model, opt, mode))
    out: dict[float, list[float]] = {}
    for r in rows:
        if (r["model"], r["mode"], r["optimizer"]) == (model, mode, opt):
            out.setdefault(r["density"], []).append(100 * _at(r, lr))
    return dict(sorted(out.items(), reverse=True))


def _med(v: list[float]) -> float:
    return median([{"v": x} for x in v], "v")


def _fraction_axis(ax, values: list[float]) -> None:
    """Log x axis, denser on the left and sparser on the right, ticks labelled 1, 0.5, ..."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(max(values) * 1.3, min(values) / 1.3)
    ax.set_xticks(sorted(set(values)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelrotation=45)


def _keys(rows: list[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["model"], r["optimizer"]) for r in rows))


def figures(cfg: E6Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    keys = _keys(rows)
    lrs = chosen_lrs(rows)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.4))
    style = {"bn": ("o-", 1.0), "random": ("s--", 0.8), "all": ("^:", 0.8)}
    for i, (model, opt) in enumerate(keys):
        for mode in ("bn", "random", "all"):
            c = _curve(rows, model, mode, opt)
            if not c:
                continue
            ps, med = list(c), [_med(v) for v in c.values()]
            lo = [m - min(v) for m, v in zip(med, c.values(), strict=True)]
            hi = [max(v) - m for m, v in zip(med, c.values(), strict=True)]
            marker, alpha = style[mode]
            ax.errorbar(ps, med, yerr=[lo, hi], fmt=marker, color=f"C{i}", alpha=alpha, capsize=3,
                        label=f"{model} {opt} lr {lrs[(model, opt, mode)]:g}: "
                        f"{_MODE_LABEL[mode]}")  # fmt: skip
    for name, acc in mnist1d_baselines().items():
        ax.axhline(acc, color="0.45", ls="-.", lw=0.9)
        ax.annotate(f"MNIST-1D published {name} {acc:g}%", (1.0, acc + 0.8), fontsize=7,
                    color="0.3", xycoords=("axes fraction", "data"), ha="right")  # fmt: skip
    ax.axhline(CHANCE, color="k", ls=":", lw=1)
    ps = sorted({r["density"] for r in rows}, reverse=True)
    ax.set(ylim=(0, 100), xlabel="kept fraction of frozen weights (log)",
           ylabel="test accuracy (%): median, bars = min–max over seeds",
           title="Ours (MNIST-1D), lr per line chosen on a validation split")  # fmt: skip
    if ps:
        _fraction_axis(ax, ps)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)

    anchor = cifar_anchor()
    ext = anchor["acc"]
    bx.plot(list(ext), list(ext.values()), "kx-", lw=1.5,
            label="EXTERNAL reference: CIFAR-10 ResNet-34 BN-only, SGD momentum (published, "
            "1 run; references.toml)")  # fmt: skip
    bx.axhline(
        anchor["train_all"],
        color="k",
        ls="--",
        lw=0.8,
        label=f"EXTERNAL: same net, all weights trained ({anchor['train_all']:g}%)",
    )
    for i, (model, opt) in enumerate(keys):
        c = _curve(rows, model, "bn", opt)
        if c:
            bx.plot(
                list(c),
                [_med(v) for v in c.values()],
                "o-",
                color=f"C{i}",
                alpha=0.7,
                label=f"ours: {model} BN-only, {opt} lr {lrs[(model, opt, 'bn')]:g}",
            )
    bx.axhline(CHANCE, color="k", ls=":", lw=1, label="chance 10%")
    bx.set(
        ylim=(0, 100),
        xlabel="kept fraction of frozen weights (log)",
        ylabel="test accuracy (%), raw (not normalised)",
        title="Shape reference: external CIFAR-10 sweep (different data and network)",
    )
    _fraction_axis(bx, sorted(set(ps) | set(ext), reverse=True))
    bx.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(f"E6: only BatchNorm γ/β trained on a frozen random, randomly pruned network "
                 f"(float32, {len(cfg.seeds)} seeds, MLP {cfg.epochs} / CNN {cfg.cnn_epochs} "
                 "epochs)")  # fmt: skip
    return [save_figure(fig, outdir / "e6_bn_sparse.png")]


def _plateau(c: dict[float, list[float]], drop: float = 5.0) -> float | None:
    """Smallest kept fraction down to which the median stays within ``drop`` points of p = 1."""
    if 1.0 not in c:
        return None
    ref, last = _med(c[1.0]), None
    for p, v in c.items():  # decreasing kept fraction
        if _med(v) < ref - drop:
            break
        last = p
    return last


def _cell(v: list[float]) -> str:
    return f"{_med(v):.1f} [{min(v):.1f}–{max(v):.1f}]" if v else ""


def summarize(cfg: E6Config, rows: list[dict]) -> tuple[str, str]:
    anchor = cifar_anchor()
    ext = anchor["acc"]
    lrs = chosen_lrs(rows)
    heads, cols = ["kept fraction"], []
    for model, opt in _keys(rows):
        for mode in ("bn", "random", "all"):
            c = _curve(rows, model, mode, opt)
            if c:
                heads.append(f"{model} {opt} {_MODE_LABEL[mode]} (%)")
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
        grid.append([model, opt, _MODE_LABEL[mode], "; ".join(vals), f"{lr:g}"])
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
    for model, opt in _keys(rows):
        bn, rnd, full = (_curve(rows, model, m, opt) for m in ("bn", "random", "all"))
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
            wins = sum(_med(bn[p]) > _med(rnd[p]) for p in bn if p in rnd)
            text += f", beating the same number of random weights at {wins}/{len(rnd)} fractions"
        if 1.0 in full:
            text += f", vs {_cell(full[1.0])}% when all weights of the dense net are trained"
        parts.append(text)
    models = list(dict.fromkeys(m for m, _ in bn_at))
    for model in models:
        got = {opt: c for (m, opt), c in bn_at.items() if m == model}
        if len(got) > 1 and all(1.0 in c for c in got.values()):
            best = max(got, key=lambda o: _med(got[o][1.0]))
            parts.append(
                f"at kept fraction 1 on {model}, {best} gives the better BN-only accuracy ("
                + ", ".join(f"{o} {_med(c[1.0]):.1f}%" for o, c in got.items())
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
