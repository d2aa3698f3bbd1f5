"""E6's figure: test accuracy against kept fraction, next to the external anchors."""

from __future__ import annotations

from pathlib import Path

from normonly.experiments._common import pyplot
from normonly.experiments.base import ExperimentConfig, save_figure
from normonly.experiments.e6_select import (
    CHANCE,
    MODE_LABEL,
    accuracy_curve,
    chosen_lrs,
    cifar_anchor,
    median_of,
    mnist1d_baselines,
    model_optimizers,
)

__all__ = ["figures"]


def fraction_axis(ax, values: list[float]) -> None:
    """Log x axis, denser on the left and sparser on the right, ticks labelled 1, 0.5, ..."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(max(values) * 1.3, min(values) / 1.3)
    ax.set_xticks(sorted(set(values)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelrotation=45)


def figures(cfg: ExperimentConfig, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    keys = model_optimizers(rows)
    lrs = chosen_lrs(rows)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.4))
    style = {"bn": ("o-", 1.0), "random": ("s--", 0.8), "all": ("^:", 0.8)}
    for i, (model, opt) in enumerate(keys):
        for mode in ("bn", "random", "all"):
            c = accuracy_curve(rows, model, mode, opt)
            if not c:
                continue
            ps, med = list(c), [median_of(v) for v in c.values()]
            lo = [m - min(v) for m, v in zip(med, c.values(), strict=True)]
            hi = [max(v) - m for m, v in zip(med, c.values(), strict=True)]
            marker, alpha = style[mode]
            ax.errorbar(ps, med, yerr=[lo, hi], fmt=marker, color=f"C{i}", alpha=alpha, capsize=3,
                        label=f"{model} {opt} lr {lrs[(model, opt, mode)]:g}: "
                        f"{MODE_LABEL[mode]}")  # fmt: skip
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
        fraction_axis(ax, ps)
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
        c = accuracy_curve(rows, model, "bn", opt)
        if c:
            bx.plot(
                list(c),
                [median_of(v) for v in c.values()],
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
    fraction_axis(bx, sorted(set(ps) | set(ext), reverse=True))
    bx.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(f"E6: only BatchNorm γ/β trained on a frozen random, randomly pruned network "
                 f"(float32, {len(cfg.seeds)} seeds, MLP {cfg.epochs} / CNN {cfg.cnn_epochs} "
                 "epochs)")  # fmt: skip
    return [save_figure(fig, outdir / "e6_bn_sparse.png")]
