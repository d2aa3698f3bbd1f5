"""BN-only training of sparse random networks on real data (experiment E6), and its controls.

E6 follows Frankle, Schwab & Morcos ("Training BatchNorm and Only BatchNorm", ICLR 2021) and a
published CIFAR-10 BatchNorm-only sweep (``docs/theory.md#experiments``): a network keeps
PyTorch's default random weights, pruned to a kept fraction by a fixed random mask, and one of
three sets of numbers is trained (:data:`MODES`):

``"bn"``
    only BatchNorm γ and β (every weight frozen);
``"random"``
    the same *number* of randomly chosen (kept) weights, BatchNorm frozen at γ = 1, β = 0 — the
    control of Frankle et al.; if fewer weights survive the mask, all of them;
``"all"``
    every kept weight and every γ, β (ordinary training of the pruned network).

The networks (``bn_mlp``, ``bn_cnn1d``) and the one classifier training loop (``fit_classifier``)
live in :mod:`normonly.data.classifiers`; this module only chooses what is trained.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from normonly.data.classifiers import accuracy, bn_cnn1d, bn_mlp, fit_classifier
from normonly.data.datasets import Dataset
from normonly.train.baselines import random_weight_entries
from normonly.train.freeze import freeze_all_but_norm

__all__ = [
    "ARCHS",
    "MODES",
    "build_sparse_model",
    "norm_parameters",
    "select_trainable",
    "train_sparse",
    "validation_split",
]

MODES = ("bn", "random", "all")
ARCHS = ("mlp", "cnn")


def norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The γ (``weight``) and β (``bias``) of every BatchNorm layer of ``model``."""
    out: list[nn.Parameter] = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            out += [p for p in (m.weight, m.bias) if p is not None]
    return out


def _weights(model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(weight, keep-mask) of every Linear/Conv layer; dense layers get an all-ones mask."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv1d):
            mask = getattr(m, "mask", None)
            out.append((m.weight, torch.ones_like(m.weight) if mask is None else mask))
    return out


def select_trainable(
    model: nn.Module, mode: str, *, seed: int = 0
) -> tuple[list[tuple[nn.Parameter, torch.Tensor | None]], int]:
    """Set ``requires_grad`` for one E6 mode and return what is trained.

    Parameters
    ----------
    model : nn.Module
        A network from :func:`build_sparse_model`.
    mode : {"bn", "random", "all"}
        See the module docstring. ``"bn"`` uses :func:`~normonly.train.freeze.freeze_all_but_norm`,
        ``"random"`` :func:`~normonly.train.baselines.random_weight_entries`.
    seed : int
        Seed of the random choice of weights (mode ``"random"``).

    Returns
    -------
    entries : list of (parameter, 0/1 mask or None)
        What :func:`~normonly.data.classifiers.fit_classifier` trains; a mask selects entries.
    n_trainable : int
        How many numbers can change (pruned weights are not counted: they stay zero).

    Raises
    ------
    ValueError
        An unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    bn = norm_parameters(model)
    weights = _weights(model)
    n_bn = sum(p.numel() for p in bn)
    n_kept = sum(int(mask.sum()) for _, mask in weights)
    for p in model.parameters():
        p.requires_grad_(False)
    if mode == "bn":
        freeze_all_but_norm(model, kinds=("batchnorm",))
        return [(p, None) for p in bn], n_bn
    if mode == "all":
        entries: list[tuple[nn.Parameter, torch.Tensor | None]] = [(p, None) for p in bn]
        entries += [(w, None) for w, _ in weights]  # pruned entries get zero gradient (w * mask)
        for p, _ in entries:
            p.requires_grad_(True)
        return entries, n_bn + n_kept
    n_trainable = min(n_bn, n_kept)  # all surviving weights if fewer than n_bn survive the mask
    entries = list(random_weight_entries(model, n_trainable, seed=seed)) if n_trainable else []
    for p, _ in entries:
        p.requires_grad_(True)
    return entries, n_trainable


def validation_split(
    data: Dataset, fraction: float, *, seed: int
) -> tuple[Dataset, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Carve a validation split out of ``data``'s *training* split (the test split is untouched).

    Returns ``(rest, X_val, y_val, val_idx)``: ``rest`` is ``data`` with its training split
    reduced to the rows not chosen (test split unchanged); ``val_idx`` are the chosen rows of the
    original training split, a seeded random ``fraction`` of them (at least one, at most all but
    one).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    n = data.X_train.shape[0]
    n_val = min(max(1, round(fraction * n)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, keep = perm[:n_val].sort().values, perm[n_val:].sort().values
    rest = Dataset(data.name, data.X_train[keep], data.y_train[keep], data.X_test, data.y_test,
                   data.n_classes, data.seed)  # fmt: skip
    return rest, data.X_train[val_idx], data.y_train[val_idx], val_idx


def build_sparse_model(
    arch: str, data: Dataset, *, density: float, width: int, depth: int, seed: int
) -> nn.Module:
    """The E6 network for ``data``: ``"mlp"`` (``depth`` hidden layers of ``width``) or
    ``"cnn"`` (``depth`` convolutions of ``width`` channels, MNIST-1D-shaped signals)."""
    if arch == "mlp":
        widths = [data.d_in] + [width] * depth + [data.n_classes]
        return bn_mlp(widths, density=density, seed=seed)
    if arch == "cnn":
        return bn_cnn1d(
            data.d_in, data.n_classes, channels=width, n_conv=depth, density=density, seed=seed
        )
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


def train_sparse(
    data: Dataset,
    *,
    arch: str,
    mode: str,
    density: float,
    width: int,
    depth: int,
    epochs: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
    batch_size: int = 128,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """Build, train (one E6 mode) and evaluate a sparse random network; return a result row.

    The model seed fixes the mask and the weights; ``seed + 1`` the choice of random weights
    (mode ``"random"``) and ``seed + 2`` the mini-batch order.

    Returns
    -------
    dict
        ``train_acc``, ``test_acc`` (fractions), ``n_trainable``, ``n_bn`` (γ/β count),
        ``n_weights`` (all weight entries), ``n_kept`` (non-zero after the mask), ``final_loss``,
        ``train_time_s``; with ``val = (X_val, y_val)`` also ``val_acc``.
    """
    model = build_sparse_model(arch, data, density=density, width=width, depth=depth, seed=seed)
    entries, n_trainable = select_trainable(model, mode, seed=seed + 1)
    t0 = time.perf_counter()
    if entries:
        losses = fit_classifier(
            model, data, entries, epochs=epochs, lr=lr, seed=seed + 2, optimizer=optimizer,
            batch_size=batch_size,
        )  # fmt: skip
    else:  # every weight was pruned and mode "random" has nothing to train
        losses = [float("nan")]
    weights = _weights(model)
    extra = {} if val is None else {"val_acc": accuracy(model, *val)}
    return {
        **extra,
        "train_acc": accuracy(model, data.X_train, data.y_train),
        "test_acc": accuracy(model, data.X_test, data.y_test),
        "n_trainable": n_trainable,
        "n_bn": sum(p.numel() for p in norm_parameters(model)),
        "n_weights": sum(w.numel() for w, _ in weights),
        "n_kept": sum(int(m.sum()) for _, m in weights),
        "final_loss": losses[-1],
        "train_time_s": time.perf_counter() - t0,
    }
