"""E7 — reconstruct a normally trained classifier exactly (``docs/theory.md#experiments``).

An ordinary ReLU MLP is trained with plain PyTorch (Adam, cross-entropy, float32) on real data
that ships offline (scikit-learn's digits, MNIST-1D), saved with
``safetensors.torch.save_file(seq.state_dict(), path)`` and read back with
:meth:`normonly.TargetMLP.load`. A frozen random network then gets only its normalization
parameters set, by the wide construction (Theorem 1) or the residual one (Theorem 2), with the
domain radius R = the largest input norm over the train and test data. Every trial reports, in
float64, the test accuracy of the original and of the reconstruction, the fraction of identical
test predictions, the max logit error on the test set, and the certificate's max error on seeded
points of the ball ``‖x‖ ≤ R`` and its sphere.

Seeds: ``seed`` fixes the classifier's initialisation and mini-batch order (``seed``,
``seed + 1``) and the frozen random weights of the reconstruction; ``data_seed`` is the digits
split or the MNIST-1D generator seed.
"""

from __future__ import annotations

import functools
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from normonly.experiments._common import group, md_table, profile_name, pyplot, spread
from normonly.experiments.base import Experiment, ExperimentConfig, save_figure
from normonly.experiments.rows import certificate_row, prediction_row

__all__ = ["E7Config", "EXPERIMENT"]


@dataclass(frozen=True)
class E7Config(ExperimentConfig):
    """E7 settings: which data, which classifier, which constructions."""

    datasets: tuple[str, ...] = ("digits", "mnist1d")
    methods: tuple[str, ...] = ("wide", "residual")
    seeds: tuple[int, ...] = (0,)
    digits_hidden: tuple[int, ...] = (32, 32)
    mnist1d_hidden: tuple[int, ...] = (32, 32)
    digits_seed: int = 0
    mnist1d_seed: int = 42
    epochs: int = 30
    lr: float = 1e-2
    batch_size: int = 128
    overparam: float = 2.0
    k: int = 8
    n_points: int = 2000

    def validate(self) -> None:
        from normonly._checks import check_int, check_overparam
        from normonly.api import METHODS
        from normonly.data.datasets import DATASETS

        if not set(self.datasets) <= set(DATASETS):
            raise ValueError(f"E7Config.datasets must be among {DATASETS}, got {self.datasets}")
        if not set(self.methods) <= set(METHODS):
            raise ValueError(f"E7Config.methods must be among {METHODS}, got {self.methods}")
        for h in (*self.digits_hidden, *self.mnist1d_hidden):
            check_int("hidden widths", h, minimum=1)
        for name, low in (("epochs", 1), ("batch_size", 1), ("k", 1), ("n_points", 2),
                          ("digits_seed", 0), ("mnist1d_seed", 0)):  # fmt: skip
            check_int(name, getattr(self, name), minimum=low)
        for s in self.seeds:
            check_int("seeds", s, minimum=0)
        check_overparam(self.overparam)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"E7Config.lr must be a finite number > 0, got {self.lr}")

    @classmethod
    def full(cls) -> E7Config:
        return cls(seeds=(0, 1, 2), mnist1d_hidden=(64, 64), epochs=60, n_points=10_000)


def trials(cfg: E7Config) -> list[dict]:
    return [
        {"key": f"{d}-{m}-s{s}", "seed": s, "dataset": d, "method": m}
        for d in cfg.datasets
        for m in cfg.methods
        for s in cfg.seeds
    ]


def _data(cfg: E7Config, name: str):
    from normonly.data.datasets import load_dataset

    return load_dataset(name, cfg.digits_seed if name == "digits" else cfg.mnist1d_seed)


@functools.lru_cache(maxsize=8)
def _trained(cfg: E7Config, name: str, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    """The trained classifier's state_dict (cached: wide and residual share one classifier)."""
    from normonly.data.classifiers import train_target_mlp

    hidden = cfg.digits_hidden if name == "digits" else cfg.mnist1d_hidden
    t0 = time.perf_counter()
    seq = train_target_mlp(
        _data(cfg, name), hidden, epochs=cfg.epochs, seed=seed, lr=cfg.lr,
        batch_size=cfg.batch_size,
    )  # fmt: skip
    return {k: v.detach().clone() for k, v in seq.state_dict().items()}, time.perf_counter() - t0


def run_trial(cfg: E7Config, trial: dict) -> dict:
    import torch
    from safetensors.torch import save_file

    from normonly._threads import limit_threads
    from normonly.api import reconstruct
    from normonly.nets.target import TargetMLP

    name, method, seed = trial["dataset"], trial["method"], trial["seed"]
    with limit_threads(1):
        data = _data(cfg, name)
        state, train_time = _trained(cfg, name, seed)
        with tempfile.TemporaryDirectory() as tmp:  # the user's path: a plain safetensors file
            path = Path(tmp) / "classifier.safetensors"
            save_file(state, str(path))
            target = TargetMLP.load(path, activation="relu")
        radius = data.max_input_norm()
        rec = reconstruct(
            target, method=method, radius=radius, overparam=cfg.overparam,
            k=cfg.k if method == "residual" else None, seed=seed, n_points=cfg.n_points,
            verify_seed=seed,
        )  # fmt: skip
        with torch.no_grad():
            logits_t = target(data.X_test)  # (n_test, 10) float64, the trained weights
            logits_r = rec.net(data.X_test.to(torch.float64))  # (n_test, 10) float64
            seq32 = target.to_torch(torch.float32)
            logits_32 = seq32(data.X_test.to(torch.float32))  # as trained (float32)
    c = rec.certificate
    return {
        **trial,
        "data_seed": data.seed,
        "target_widths": target.widths,
        "target_params": target.num_parameters(),
        "radius": radius,
        **prediction_row(logits_t, logits_r, logits_32, data.y_test),
        **certificate_row(c),  # max_abs_error, max_rel_error (on the ball), passed, ...
        "n_blocks": len(c.layers),
        "overparam": cfg.overparam,
        "k": cfg.k if method == "residual" else None,
        "train_time_s": train_time,
        "construct_time_s": rec.wall_time_s,
    }


def figures(cfg: E7Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    groups = group(rows, "dataset", "method")
    labels = [f"{d}\n{m}" for d, m in groups]
    xs = range(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    w = 0.27
    # markers, not bars: a bar on a log axis has no meaningful baseline
    for off, key, lab, mark in [(-w, "max_logit_error_test", "test set (measured)", "o"),
                                (0, "max_abs_error", "ball ‖x‖ ≤ R (measured)", "s"),
                                (w, "error_bound", "whole ball (proven bound)", "v")]:  # fmt: skip
        vals = [[_get(r, key) for r in g if r.get(key) is not None or key != "error_bound"]
                for g in groups.values()]  # fmt: skip
        for x, v in zip(xs, vals, strict=True):
            if v:
                ax.plot([x + off] * len(v), v, mark, color=f"C{int(off / w) + 1}", alpha=0.8,
                        label=lab if x == 0 else None)  # fmt: skip
    ax.set(yscale="log", ylabel="max |logit error| (float64, every seed)", xticks=list(xs),
           title="Reconstruction error of the trained classifier")  # fmt: skip
    ax.set_xticklabels(labels)
    ax.legend(fontsize=8)
    ax = axes[1]
    bars = [(-w / 2, "test_acc_original", "original (trained weights)"),
            (w / 2, "test_acc_reconstructed", "reconstruction (norms only)")]  # fmt: skip
    for off, key, lab in bars:
        vals = [100 * sum(r[key] for r in g) / len(g) for g in groups.values()]
        ax.bar([x + off for x in xs], vals, w, label=lab)
    for x, g in zip(xs, groups.values(), strict=True):
        same = min(r["identical_predictions"] for r in g)
        top = 100 * max(r["test_acc_original"] for r in g)
        ax.annotate(f"{100 * same:.2f}%\nidentical", (x, top + 2), ha="center", fontsize=7)
    ax.set(ylabel="test accuracy (%, mean over seeds)", ylim=(0, 119), xticks=list(xs),
           title="Test accuracy: original vs reconstruction")  # fmt: skip
    ax.set_xticklabels(labels)
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle("E7: a normally trained MLP rebuilt by setting only the norms of a frozen "
                 "random net (R = max data norm)")  # fmt: skip
    return [save_figure(fig, outdir / "e7_classifier.png")]


def summarize(cfg: E7Config, rows: list[dict]) -> tuple[str, str]:
    table = md_table(
        ["dataset", "method", "target", "R", "seeds", "trainable / frozen", "test acc original",
         "test acc reconstructed", "identical predictions", "max logit err (test)",
         "max abs err (ball)", "max rel err (ball)", "certificate"],
        [
            (d, m, "→".join(map(str, g[0]["target_widths"])), g[0]["radius"], len(g),
             f"{g[0]['trainable']} / {g[0]['frozen']}",
             " ".join(f"{100 * r['test_acc_original']:.2f}%" for r in g),
             " ".join(f"{100 * r['test_acc_reconstructed']:.2f}%" for r in g),
             _pct(min(r["identical_predictions"] for r in g)),
             max(r["max_logit_error_test"] for r in g), max(_get(r, "max_abs_error") for r in g),
             max(_get(r, "max_rel_error") for r in g),
             f"{sum(r['passed'] for r in g)}/{len(g)} passed")
            for (d, m), g in group(rows, "dataset", "method").items()
        ],
    )  # fmt: skip
    if not rows:
        return table, "No E7 trials were run."
    n = len(rows)
    same_acc = sum(r["test_acc_original"] == r["test_acc_reconstructed"] for r in rows)
    gap = max(abs(r["test_acc_original"] - r["test_acc_reconstructed"]) for r in rows)
    ident = [r["identical_predictions"] for r in rows]
    passed = sum(r["passed"] for r in rows)
    acc = (
        f"the test accuracy of the norm-only network equals the original's in {same_acc} of {n}"
        + ("" if same_acc == n else f" (largest difference {_pct(gap)} points)")
    )
    if all(v == 1.0 for v in ident):
        same = "every test prediction is identical in every trial"
    else:
        same = (
            f"identical test predictions: {_pct(min(ident))} in the worst trial, median "
            f"{_pct(statistics.median(ident))}; {sum(v == 1.0 for v in ident)} of {n} trials "
            "have all predictions identical"
        )
    radii = "; ".join(f"{d} R = {g[0]['radius']:.3g}" for (d,), g in group(rows, "dataset").items())
    setting = (
        f"{n} trials ({profile_name(cfg)} profile; datasets "
        f"{', '.join(sorted({r['dataset'] for r in rows}))}; "
        f"{', '.join(sorted({r['method'] for r in rows}))} construction; seeds "
        f"{', '.join(str(v) for v in sorted({r['seed'] for r in rows}))}; classifiers trained "
        f"{cfg.epochs} epochs in float32, rebuilt in "
        f"{', '.join(sorted({r['dtype'] for r in rows}))}; certificate on "
        f"{', '.join(str(v) for v in sorted({r['n_points'] for r in rows}))} points of the ball "
        f"of radius R = the largest data norm: {radii})"
    )
    sentence = (
        f"{setting}: {acc}; {same}; the max logit error on the test set was "
        f"{spread([r['max_logit_error_test'] for r in rows])} and on points of the ball "
        f"{spread([_get(r, 'max_abs_error') for r in rows])}; "
        f"{passed} of {n} certificates passed."
    )
    return table, sentence




def _pct(fraction: float) -> str:
    """A fraction in [0, 1] as a percentage that never rounds a shortfall up to 100%."""
    text = f"{100 * fraction:.2f}%"
    if fraction < 1 and text == "100.00%":
        return ">99.99%"
    if fraction > 0 and text == "0.00%":
        return "<0.01%"
    return text




def _get(row: dict, key: str) -> float:
    """A certificate error of a row (rows stored before the shared row keys said ``<key>_ball``)."""
    return row[key] if key in row else row[f"{key}_ball"]


EXPERIMENT = Experiment(
    name="E7",
    title="Exact reconstruction of a trained classifier",
    question="Does a frozen random net whose normalization parameters alone are set "
    "reproduce a normally trained classifier on real data: same predictions, same accuracy?",
    config_cls=E7Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
