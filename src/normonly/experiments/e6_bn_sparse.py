"""E6 — BN-only training of a frozen, randomly sparse network on real data.

A network keeps PyTorch's default random weights, pruned to a kept fraction by a fixed random mask;
only BatchNorm γ, β are trained (mode ``bn``). Controls (:mod:`normonly.train.bn_sparse`):
training the same number of randomly chosen kept weights (``random``, Frankle et al.'s control)
and training every kept weight and every γ, β (``all``). Models: an MLP and a small 1-D CNN on
MNIST-1D (digits-MLP is available too). The result is test accuracy against kept fraction, drawn
next to MNIST-1D's published baselines and, on a normalised panel, next to the published CIFAR-10
ResNet-34 BN-only sweep (external numbers, quoted and not recomputed here; see
``docs/theory.md#experiments``).

Optimizer: Adam with a cosine schedule, one learning rate for every mode and kept fraction, no
weight decay. Adam rather than the anchor's SGD (lr 0.1, momentum 0.9) because in a short budget
SGD under-trains γ/β: in a probe (MNIST-1D MLP 256-256, seed 0, 10 epochs, kept fraction 1)
BN-only reached 26 % test accuracy with SGD lr 0.1 and 39 % with Adam lr 0.01 (44 % with
Adam lr 0.03 at 20 epochs), while training all weights gave 64–66 % with either. The probe used
test accuracy of one seed and no validation split, so the learning rate is a fixed setting, not
tuned per mode (see ``lr``). No weight decay keeps untrained entries exactly unchanged.

Seeds: ``seed`` is the model seed (mask and weights; ``seed + 1`` the choice of random weights;
``seed + 2`` the mini-batch order); ``data_seed`` the MNIST-1D generator seed / digits split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from normonly.experiments._common import md_table, median, pyplot
from normonly.experiments.base import Experiment, ExperimentConfig, save_figure

__all__ = ["E6Config", "EXPERIMENT", "CIFAR10_RESNET34_BN_ONLY", "MNIST1D_BASELINES"]

#: Published BN-only sweep (external anchor): CIFAR-10, ResNet-34, one run per fraction;
#: kept fraction -> final test accuracy (%). Training everything gave 94.92 %.
CIFAR10_RESNET34_BN_ONLY = {
    1.0: 65.24, 0.5: 64.60, 0.25: 62.64, 0.1: 61.55, 0.03: 56.62, 0.01: 39.54, 0.005: 41.90,
    0.001: 10.00, 0.0001: 10.00,
}  # fmt: skip
CIFAR10_TRAIN_ALL = 94.92
#: MNIST-1D's published test accuracies (%) of fully trained models (the benchmark at seed 42).
MNIST1D_BASELINES = {"logistic regression": 32.0, "MLP": 68.0, "CNN": 94.0}
CHANCE = 10.0
_MODE_LABEL = {"bn": "BN-only", "random": "same # random weights", "all": "all weights"}


@dataclass(frozen=True)
class E6Config(ExperimentConfig):
    """E6 settings. ``models`` are ``"<dataset>-<arch>"`` with arch ``mlp`` or ``cnn``."""

    models: tuple[str, ...] = ("mnist1d-mlp", "mnist1d-cnn")
    densities: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.005, 0.001)
    modes: tuple[str, ...] = ("bn", "random", "all")
    all_densities: tuple[float, ...] = (1.0,)  # kept fractions at which mode "all" runs
    seeds: tuple[int, ...] = (0, 1)
    mlp_width: int = 256
    mlp_depth: int = 2
    cnn_channels: int = 32
    cnn_depth: int = 3
    epochs: int = 8
    cnn_epochs: int = 4
    lr: float = 0.03
    optimizer: str = "adam"
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
        for name in ("mnist1d_seed", "digits_seed"):
            check_int(name, getattr(self, name), minimum=0)
        for s in self.seeds:
            check_int("seeds", s, minimum=0)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"E6Config.lr must be a finite number > 0, got {self.lr}")
        check_optimizer(self.optimizer, minibatch=True, what="E6Config.optimizer")

    @classmethod
    def full(cls) -> E6Config:
        return cls(
            seeds=(0, 1, 2),
            all_densities=(1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.005, 0.001),
            epochs=30,
            cnn_epochs=20,
        )


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
        for mode in cfg.modes:
            for p in cfg.all_densities if mode == "all" else cfg.densities:
                for s in cfg.seeds:
                    key = f"{model}-{mode}-p{p:g}-s{s}"
                    out.append({"key": key, "seed": s, "model": model, "dataset": dataset,
                                "arch": arch, "mode": mode, "density": p})  # fmt: skip
    return out


def run_trial(cfg: E6Config, trial: dict) -> dict:
    from normonly._threads import limit_threads
    from normonly.data.datasets import load_dataset
    from normonly.train.bn_sparse import train_sparse

    dataset, arch = trial["dataset"], trial["arch"]
    data_seed = cfg.digits_seed if dataset == "digits" else cfg.mnist1d_seed
    mlp = arch == "mlp"
    with limit_threads(1):
        data = load_dataset(dataset, data_seed)
        result = train_sparse(
            data, arch=arch, mode=trial["mode"], density=trial["density"],
            width=cfg.mlp_width if mlp else cfg.cnn_channels,
            depth=cfg.mlp_depth if mlp else cfg.cnn_depth,
            epochs=cfg.epochs if mlp else cfg.cnn_epochs, lr=cfg.lr, seed=trial["seed"],
            optimizer=cfg.optimizer, batch_size=cfg.batch_size,
        )  # fmt: skip
    return {**trial, **result, "data_seed": data_seed, "model_seed": trial["seed"],
            "epochs": cfg.epochs if mlp else cfg.cnn_epochs}  # fmt: skip


def _curve(rows: list[dict], model: str, mode: str) -> dict[float, list[float]]:
    """kept fraction -> test accuracies (%) over seeds."""
    out: dict[float, list[float]] = {}
    for r in rows:
        if r["model"] == model and r["mode"] == mode:
            out.setdefault(r["density"], []).append(100 * r["test_acc"])
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


def figures(cfg: E6Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    style = {"bn": ("o-", 1.0), "random": ("s--", 0.8), "all": ("^:", 0.8)}
    for i, model in enumerate(models):
        for mode in ("bn", "random", "all"):
            c = _curve(rows, model, mode)
            if not c:
                continue
            ps = list(c)
            marker, alpha = style[mode]
            ax.plot(ps, [_med(v) for v in c.values()], marker, color=colors[i % 10], alpha=alpha,
                    label=f"{model}: {_MODE_LABEL[mode]}")  # fmt: skip
            ax.fill_between(ps, [min(v) for v in c.values()], [max(v) for v in c.values()],
                            color=colors[i % 10], alpha=0.12)  # fmt: skip
    for name, acc in MNIST1D_BASELINES.items():
        ax.axhline(acc, color="0.45", ls="-.", lw=0.9)
        ax.annotate(f"MNIST-1D published {name} {acc:g}%", (1.0, acc + 0.8), fontsize=7,
                    color="0.3", xycoords=("axes fraction", "data"), ha="right")  # fmt: skip
    ax.axhline(CHANCE, color="k", ls=":", lw=1)
    ax.annotate("chance 10%", (1.0, CHANCE + 0.8), xycoords=("axes fraction", "data"),
                fontsize=7, ha="right")  # fmt: skip
    ps = sorted({r["density"] for r in rows}, reverse=True)
    ax.set(ylim=(0, 100), xlabel="kept fraction of frozen weights (log)",
           ylabel="test accuracy (%): median, band = min–max over seeds",
           title=f"Our runs: {', '.join(models)}")  # fmt: skip
    if ps:
        _fraction_axis(ax, ps)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)

    # normalised shape: (acc - chance) / (BN-only acc at kept fraction 1 - chance)
    ext = CIFAR10_RESNET34_BN_ONLY
    bx.plot(list(ext), [(a - CHANCE) / (ext[1.0] - CHANCE) for a in ext.values()], "kx-", lw=1.5,
            label="EXTERNAL: CIFAR-10 ResNet-34 BN-only (published, 1 run)")  # fmt: skip
    for i, model in enumerate(models):
        c = _curve(rows, model, "bn")
        if 1.0 in c and _med(c[1.0]) > CHANCE:
            base = _med(c[1.0]) - CHANCE
            bx.plot(list(c), [(_med(v) - CHANCE) / base for v in c.values()], "o-",
                    color=colors[i % 10], label=f"ours: {model} BN-only")  # fmt: skip
    bx.axhline(0.0, color="k", ls=":", lw=1)
    allp = sorted(set(ps) | set(ext), reverse=True)
    bx.set(xlabel="kept fraction of frozen weights (log)",
           ylabel="(acc − chance) / (acc at kept fraction 1 − chance)",
           title="Shape vs the external CIFAR-10 sweep (normalised)")  # fmt: skip
    _fraction_axis(bx, allp)
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(f"E6: only BatchNorm γ/β trained on a frozen random, randomly pruned network "
                 f"({cfg.optimizer}, lr {cfg.lr:g}, MLP {cfg.epochs} / CNN {cfg.cnn_epochs} "
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


def summarize(cfg: E6Config, rows: list[dict]) -> tuple[str, str]:
    models = list(dict.fromkeys(r["model"] for r in rows))
    heads, cols = ["kept fraction"], []
    for model in models:
        for mode in ("bn", "random", "all"):
            c = _curve(rows, model, mode)
            if c:
                heads.append(f"{model} {_MODE_LABEL[mode]} (%)")
                cols.append(c)
    heads.append("EXTERNAL CIFAR-10 ResNet-34 BN-only (%)")
    ps = sorted({r["density"] for r in rows} | {1.0}, reverse=True)
    fmt_cell = lambda v: f"{_med(v):.1f} [{min(v):.1f}–{max(v):.1f}]" if v else ""  # noqa: E731
    body = [[f"{p:g}"] + [fmt_cell(c.get(p, [])) for c in cols]
            + [f"{CIFAR10_RESNET34_BN_ONLY[p]:.2f}" if p in CIFAR10_RESNET34_BN_ONLY else ""]
            for p in ps]  # fmt: skip
    table = md_table(heads, body) + (
        f"\n\nCells: median [min–max] test accuracy over {len(cfg.seeds)} seeds. External "
        f"column: published, one run (training everything: {CIFAR10_TRAIN_ALL}%). MNIST-1D "
        "published baselines: logistic 32%, MLP 68%, CNN 94%; chance 10%."
    )
    parts = []
    for model in models:
        bn, rnd, full = (_curve(rows, model, m) for m in ("bn", "random", "all"))
        if not bn:
            continue
        lo = min(bn)
        text = f"{model} BN-only reaches {_med(bn[max(bn)]):.1f}% at kept fraction {max(bn):g}"
        plateau = _plateau(bn)
        if plateau is not None and plateau < 1.0:
            text += f", stays within 5 points of it down to {plateau:g}"
        text += f" and ends at {_med(bn[lo]):.1f}% at {lo:g} (chance 10%)"
        if rnd:
            wins = sum(_med(bn[p]) > _med(rnd[p]) for p in bn if p in rnd)
            text += f", beating the same number of random weights at {wins}/{len(rnd)} fractions"
        if 1.0 in full:
            text += f", vs {_med(full[1.0]):.1f}% when all weights of the dense net are trained"
        parts.append(text)
    if not parts:
        return table, "No BN-only E6 trials were run."
    return table, "; ".join(parts) + "."


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
