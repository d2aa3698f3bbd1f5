"""E8 — a trained CNN rebuilt exactly through BatchNorm2d γ/β.

See ``docs/theory.md#convolutional-networks``.

A small ReLU CNN (``Conv2d 3×3 → ReLU → AvgPool2d(2) → Conv2d 3×3 → ReLU → AvgPool2d(2) →
Flatten → Linear(·, 10)``) is trained with plain PyTorch (Adam, cross-entropy, float32) on
scikit-learn's 8×8 digits, read with :meth:`normonly.TargetCNN.from_torch`, and rebuilt by a
frozen random CNN whose BatchNorm2d/1d weights and biases alone are set (the convolutional wide
construction), on the ball of radius R = the largest image norm. The trial reports test
accuracies, the fraction of identical test predictions, the max logit error on the test set, the
certificate (sampled error on the ball and its sphere, proven bound), the channel widths m next
to Burkholz's feature count ``c_out·c_in·kh·kw`` (ICLR 2024) and to the width Theorem 1 needs
for the same function as a flattened MLP (``d_in·d_out`` per layer), and trainable vs frozen
parameter counts. A sweep over random CNNs of the same shape measures the error against
overparam.

Seeds: ``seed`` fixes the CNN's initialisation (``seed``), its mini-batch order (``seed + 1``)
and the frozen random weights; ``data_seed`` is the digits split.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

from normonly.experiments._common import group, md_table, profile_name, pyplot, spread
from normonly.experiments.base import Experiment, ExperimentConfig, save_figure
from normonly.experiments.rows import certificate_row, prediction_row

__all__ = ["E8Config", "EXPERIMENT"]

IMAGE = (1, 8, 8)


@dataclass(frozen=True)
class E8Config(ExperimentConfig):
    """E8 settings: the digits CNN, its training, and the random-CNN sweep."""

    channels: tuple[int, ...] = (4, 8)
    seeds: tuple[int, ...] = (0,)
    data_seed: int = 0
    epochs: int = 20
    lr: float = 3e-2
    batch_size: int = 64
    overparam: float = 2.0
    sweep_overparams: tuple[float, ...] = (1.0, 2.0)
    sweep_seeds: tuple[int, ...] = (0,)
    n_points: int = 1000

    def validate(self) -> None:
        from normonly._checks import check_int, check_overparam

        for c in self.channels:
            check_int("channels", c, minimum=1)
        for name, low in (("epochs", 1), ("batch_size", 1), ("n_points", 2), ("data_seed", 0)):
            check_int(name, getattr(self, name), minimum=low)
        for s in (*self.seeds, *self.sweep_seeds):
            check_int("seeds", s, minimum=0)
        for op in (self.overparam, *self.sweep_overparams):
            check_overparam(op)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"E8Config.lr must be a finite number > 0, got {self.lr}")

    @classmethod
    def full(cls) -> E8Config:
        return cls(channels=(8, 16), seeds=(0, 1, 2), epochs=40, sweep_seeds=(0, 1, 2),
                   sweep_overparams=(1.0, 1.5, 2.0, 4.0), n_points=10_000)  # fmt: skip


def trials(cfg: E8Config) -> list[dict]:
    out = [{"key": f"digits-s{s}", "kind": "digits", "seed": s, "overparam": cfg.overparam}
           for s in cfg.seeds]  # fmt: skip
    out += [{"key": f"random-op{op:g}-s{s}", "kind": "random", "seed": s, "overparam": op}
            for op in cfg.sweep_overparams for s in cfg.sweep_seeds]  # fmt: skip
    return out


def _cnn(channels, seed: int):
    """The digits CNN with PyTorch's default init drawn from a private generator."""
    import torch
    from torch import nn

    layers: list[nn.Module] = [nn.Unflatten(1, IMAGE)]
    c, hw = IMAGE[0], IMAGE[1]
    for c_out in channels:
        layers += [nn.Conv2d(c, c_out, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
        c, hw = c_out, hw // 2
    layers += [nn.Flatten(), nn.Linear(c * hw * hw, 10)]
    model = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-bound, bound, generator=g)
    return model


@functools.lru_cache(maxsize=4)
def _trained(cfg: E8Config, seed: int):
    from normonly.data.classifiers import fit_classifier
    from normonly.data.datasets import load_dataset

    data = load_dataset("digits", cfg.data_seed)
    model = _cnn(cfg.channels, seed)
    t0 = time.perf_counter()
    fit_classifier(model, data, [(p, None) for p in model.parameters()], epochs=cfg.epochs,
                   lr=cfg.lr, seed=seed + 1, batch_size=cfg.batch_size)  # fmt: skip
    return model, data, time.perf_counter() - t0


def _counts(target, overparam: float) -> dict:
    """Channel widths and feature counts: conv construction vs Theorem 1 on the flat MLP."""
    from normonly.construct.cnn import cnn_feature_counts
    from normonly.construct.layout import scaled_width

    burkholz = cnn_feature_counts(target)
    mlp = target.to_mlp()
    mlp_need = [w.shape[0] * w.shape[1] for w in mlp.weights]
    mlp_frozen = sum(scaled_width(overparam, n) * (w.shape[0] + w.shape[1])
                     for n, w in zip(mlp_need, mlp.weights, strict=True))  # fmt: skip
    return {
        "target_widths": target.widths,
        "widths": [scaled_width(overparam, n) for n in burkholz],
        "burkholz_count": burkholz,
        "mlp_count": mlp_need,
        "mlp_frozen": mlp_frozen,
    }


def run_trial(cfg: E8Config, trial: dict) -> dict:
    import torch

    from normonly._threads import limit_threads
    from normonly.api import reconstruct
    from normonly.nets.cnn import TargetCNN

    seed, op = trial["seed"], trial["overparam"]
    with limit_threads(1):
        if trial["kind"] == "random":
            target = TargetCNN.random(IMAGE, list(cfg.channels), d_out=10, pool=2, seed=seed)
            rec = reconstruct(target, radius=1.0, overparam=op, seed=seed, n_points=cfg.n_points,
                              verify_seed=seed)  # fmt: skip
            return {**trial, **_counts(target, op), **certificate_row(rec.certificate),
                    "construct_time_s": rec.wall_time_s}  # fmt: skip
        model, data, train_time = _trained(cfg, seed)
        target = TargetCNN.from_torch(model[1:], input_shape=IMAGE)
        radius = data.max_input_norm()
        rec = reconstruct(target, radius=radius, overparam=op, seed=seed, n_points=cfg.n_points,
                          verify_seed=seed)  # fmt: skip
        with torch.no_grad():
            images = data.X_test.to(torch.float64).reshape(-1, *IMAGE)
            logits_t = target(images)  # (n_test, 10) float64, the trained weights
            logits_r = rec.net(images)  # (n_test, 10) float64, norms only
            logits_32 = model(data.X_test.to(torch.float32))  # as trained (float32)
    return {
        **trial,
        **_counts(target, op),
        "data_seed": data.seed,
        **prediction_row(logits_t, logits_r, logits_32, data.y_test),
        **certificate_row(rec.certificate),
        "train_time_s": train_time,
        "construct_time_s": rec.wall_time_s,
    }


def figures(cfg: E8Config, rows: list[dict], outdir: Path) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    digits = [r for r in rows if r["kind"] == "digits"]
    for i, (key, lab) in enumerate([("max_logit_error_test", "test set (measured)"),
                                    ("max_abs_error", "ball (measured)"),
                                    ("error_bound", "whole ball (proven bound)")]):  # fmt: skip
        vals = [r[key] for r in digits if r.get(key) is not None]
        ax.plot([i] * len(vals), vals, "osv"[i], color=f"C{i}", label=lab)
    ax.set(yscale="log", xticks=[0, 1, 2], ylabel="max |logit error| (float64)",
           title="Trained digits CNN rebuilt by BatchNorm γ/β only")  # fmt: skip
    ax.set_xticklabels(["test", "ball", "bound"])
    ax.legend(fontsize=8)
    ax = axes[1]
    sweep = group([r for r in rows if r["kind"] == "random"], "overparam")
    xs = [op for (op,) in sweep]
    for key, lab, mark in [("max_rel_error", "measured (ball and sphere)", "o-"),
                           ("bound_rel", "proven bound", "v--")]:  # fmt: skip
        ax.plot(xs, [max(r[key] for r in g if r[key] is not None) for g in sweep.values()],
                mark, label=lab)  # fmt: skip
    ax.axhline(1e-9, color="gray", lw=0.8, ls=":", label="tolerance 1e-9")
    ax.set(xscale="log", yscale="log", xlabel="overparam (m / c_out·c_in·kh·kw)",
           ylabel="max error / output scale (worst seed)", title="Random CNNs: error vs overparam")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])  # the overparams run, not powers of ten
    ax.minorticks_off()
    ax.legend(fontsize=8)
    fig.suptitle("E8: a CNN reproduced exactly by tuning only BatchNorm2d/1d parameters")
    return [save_figure(fig, outdir / "e8_cnn.png")]


def summarize(cfg: E8Config, rows: list[dict]) -> tuple[str, str]:
    digits = [r for r in rows if r["kind"] == "digits"]
    sweep = [r for r in rows if r["kind"] == "random"]
    table = md_table(
        ["target", "overparam", "seed", "channel widths m", "Burkholz count",
         "MLP (Theorem 1) count",
         "trainable / frozen", "frozen (flat MLP construction)", "identical predictions",
         "max logit err (test)", "max rel err (ball)", "bound / scale", "certificate"],
        [(("digits CNN " if r["kind"] == "digits" else "random CNN ")
          + "→".join(map(str, r["target_widths"])), r["overparam"], r["seed"],
          " ".join(map(str, r["widths"])), " ".join(map(str, r["burkholz_count"])),
          " ".join(map(str, r["mlp_count"])), f"{r['trainable']} / {r['frozen']}",
          r["mlp_frozen"], _pct(r["identical_predictions"]) if "identical_predictions" in r
          else "–", r.get("max_logit_error_test", "–"), r["max_rel_error"], r["bound_rel"],
          "passed" if r["passed"] else "failed") for r in digits + sweep],
    )  # fmt: skip
    if not rows:
        return table, "No E8 trials were run."
    parts = [f"{len(rows)} trials ({profile_name(cfg)} profile, float64, certificate on "
             f"{cfg.n_points} points of the ball and its sphere plus the proven bound)"]
    if digits:
        ident = [r["identical_predictions"] for r in digits]
        same = ("every test prediction is identical in every trial" if min(ident) == 1.0
                else f"identical test predictions in {_pct(min(ident))} of the test images in the "
                "worst trial")  # fmt: skip
        r0 = digits[0]
        ratio = sum(r0["mlp_count"]) / sum(r0["burkholz_count"])
        parts.append(
            "the trained digits CNN (test accuracy "
            f"{spread([r['test_acc_original'] for r in digits], '{:.3f}')}, "
            f"R = {r0['radius']:.3g}): {same}; max logit error on the test set "
            f"{spread([r['max_logit_error_test'] for r in digits])}; "
            f"{sum(r['passed'] for r in digits)} of {len(digits)} certificates passed; the "
            f"convolutional construction needs {sum(r0['burkholz_count'])} channels/units at "
            f"overparam 1 (Burkholz's count), the flattened MLP {sum(r0['mlp_count'])} "
            f"({ratio:.0f}x more); {r0['trainable']} trainable vs {r0['frozen']} frozen parameters "
            f"(the flat MLP construction would freeze {r0['mlp_frozen']})"
        )  # fmt: skip
    if sweep:
        by_op = group(sweep, "overparam")
        passed = [op for (op,), g in by_op.items() if all(r["passed"] for r in g)]
        worst = {op: max(r["max_rel_error"] for r in g) for (op,), g in by_op.items()}
        parts.append(
            "random CNNs: the measured max relative error was "
            + ", ".join(f"{v:.1e} at overparam {op:g}" for op, v in worst.items())
            + ("; every certificate passed" if len(passed) == len(by_op) else
               f"; certificates passed at every seed for overparam in {passed or 'none'}")
        )  # fmt: skip
    return table, "; ".join(parts) + "."


def _pct(fraction: float) -> str:
    text = f"{100 * fraction:.2f}%"
    if fraction < 1 and text == "100.00%":
        return ">99.99%"
    return text


EXPERIMENT = Experiment(
    name="E8",
    title="Exact reconstruction of a trained CNN through BatchNorm2d",
    question="Does a frozen random CNN whose BatchNorm γ/β alone are set reproduce a trained "
    "convolutional classifier exactly, with Burkholz's channel count instead of the flattened "
    "MLP's width?",
    config_cls=E8Config,
    trials=trials,
    run_trial=run_trial,
    figures=figures,
    summarize=summarize,
)
