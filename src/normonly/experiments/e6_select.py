"""E6's rows read back: the learning rates chosen on validation, the accuracy curves at them,
and the external anchors they are drawn against (``references.toml``)."""

from __future__ import annotations

from normonly.experiments._common import median

__all__ = ["CHANCE", "MODE_LABEL", "cifar_anchor", "mnist1d_baselines", "chosen_lrs", "acc_at",
           "accuracy_curve", "median_of", "model_optimizers"]  # fmt: skip

CHANCE = 10.0
MODE_LABEL = {"bn": "BN-only", "random": "same # random weights", "all": "all weights"}


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


def acc_at(r: dict, lr: float, key: str = "test_acc") -> float:
    return r[f"{key}_by_lr"][r["lrs"].index(lr)]


def accuracy_curve(rows: list[dict], model: str, mode: str, opt: str) -> dict[float, list[float]]:
    """kept fraction -> test accuracies (%) over seeds, at the group's chosen lr."""
    lr = chosen_lrs(rows).get((model, opt, mode))
    out: dict[float, list[float]] = {}
    for r in rows:
        if (r["model"], r["mode"], r["optimizer"]) == (model, mode, opt):
            out.setdefault(r["density"], []).append(100 * acc_at(r, lr))
    return dict(sorted(out.items(), reverse=True))


def median_of(v: list[float]) -> float:
    return median([{"v": x} for x in v], "v")


def model_optimizers(rows: list[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["model"], r["optimizer"]) for r in rows))
