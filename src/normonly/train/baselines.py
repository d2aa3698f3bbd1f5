"""Baselines for norm-only training, with the interface of :func:`fit_norm_only`.

* :func:`fit_all_weights` — every parameter of the same network (weights and norms).
* :func:`fit_last_layer` — only the last ``nn.Linear``, restricted to exactly ``n_params`` entries
  (default: as many as the network has norm parameters). The entries are taken column by column
  (all outputs of the first input unit, then of the second, ...), i.e. a readout from the first
  ``ceil(n_params / d_out)`` units of the last hidden layer, so that every output gets the same
  number of trainable weights; then the layer's bias if it has one.
* :func:`fit_random_weights` — exactly ``n_params`` weight entries chosen uniformly at random
  (without replacement) among all entries of ``nn.Linear`` and convolution weights, the control
  of Frankle, Schwab and Morcos ("Training BatchNorm and Only BatchNorm", ICLR 2021).

Entries pruned by a ``MaskedLinear`` mask are never chosen (training them would change nothing).
Restriction to entries is done by a gradient mask (:func:`~normonly.train.fit.train_entries`), so
the other entries of a partly trained tensor keep their bytes. The baselines leave every
``requires_grad`` flag as they found it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from normonly._checks import check_int
from normonly.data.regression import regression_data
from normonly.train.fit import FitResult, _check_lr, train_entries
from normonly.train.freeze import DEFAULT_KINDS, norm_kind

__all__ = [
    "fit_all_weights",
    "fit_last_layer",
    "fit_random_weights",
    "count_norm_parameters",
    "last_layer_entries",
    "random_weight_entries",
]

_DATA_KEYS = ("radius", "n_train", "n_val", "n_test")


def count_norm_parameters(model: nn.Module, kinds=DEFAULT_KINDS) -> int:
    """Scalar parameters :func:`freeze_all_but_norm` would leave trainable (nothing is changed).

    Example
    -------
    >>> count_norm_parameters(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    8
    """
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if norm_kind(module) in kinds:
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total


def _kept(lin: nn.Module) -> torch.Tensor:
    """Bool tensor of the weight entries a sparse mask kept (all True for a dense layer)."""
    mask = getattr(lin, "mask", None)
    w = lin.weight
    return torch.ones_like(w, dtype=torch.bool) if mask is None else mask.to(w.device) != 0


def _resolve_n(model: nn.Module, n_params: int | None) -> int:
    if n_params is None:
        n_params = count_norm_parameters(model)
        if n_params == 0:
            raise ValueError(
                f"{type(model).__name__} has no normalization parameters to match; pass n_params"
            )
    return check_int("n_params", n_params, minimum=1)


def last_layer_entries(
    model: nn.Module, n_params: int, layer: nn.Linear | None = None
) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Exactly ``n_params`` entries of the last ``nn.Linear`` (column by column, then its bias).

    Returns
    -------
    list of (parameter, 0/1 mask)

    Raises
    ------
    ValueError
        No ``nn.Linear``, or the layer has fewer than ``n_params`` trainable entries.
    """
    if layer is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear layer to train")
        layer = linears[-1]
    kept_t = _kept(layer).t().contiguous()  # (d_in, d_out): row j = all outputs of input unit j
    order = kept_t.reshape(-1).nonzero().squeeze(1)  # column-major positions of kept entries
    n_w = min(n_params, order.numel())
    mask_t = torch.zeros(kept_t.shape, dtype=layer.weight.dtype, device=layer.weight.device)
    mask_t.view(-1)[order[:n_w]] = 1.0
    w_mask = mask_t.t()  # (d_out, d_in)
    entries = [(layer.weight, w_mask)]
    rest = n_params - n_w
    if rest and layer.bias is not None and rest <= layer.bias.numel():
        b_mask = torch.zeros_like(layer.bias)
        b_mask[:rest] = 1.0
        entries.append((layer.bias, b_mask))
        rest = 0
    if rest:
        have = order.numel() + (0 if layer.bias is None else layer.bias.numel())
        raise ValueError(
            f"the last layer {layer} has only {have} trainable entries, fewer than "
            f"n_params={n_params}: pass a smaller n_params or use fit_random_weights"
        )
    return entries


def random_weight_entries(
    model: nn.Module, n_params: int, *, seed: int
) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Exactly ``n_params`` weight entries of Linear/Conv layers, uniformly at random.

    Returns
    -------
    list of (parameter, 0/1 mask)

    Raises
    ------
    ValueError
        The model has fewer than ``n_params`` (kept) weight entries.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | _ConvNd)]
    kept = [_kept(m).reshape(-1) for m in layers]
    sizes = [int(k.sum()) for k in kept]
    total = sum(sizes)
    if n_params > total:
        raise ValueError(
            f"{type(model).__name__} has {total} (kept) Linear/Conv weight entries, fewer than "
            f"n_params={n_params}"
        )
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    chosen = torch.randperm(total, generator=g)[:n_params]  # indices into the kept entries
    entries = []
    offset = 0
    for m, k, size in zip(layers, kept, sizes, strict=True):
        local = chosen[(chosen >= offset) & (chosen < offset + size)] - offset
        offset += size
        if local.numel() == 0:
            continue
        flat_kept = k.nonzero().squeeze(1).to("cpu")  # positions of kept entries in the weight
        mask = torch.zeros(m.weight.numel(), dtype=m.weight.dtype)
        mask[flat_kept[local]] = 1.0
        entries.append((m.weight, mask.reshape(m.weight.shape)))
    return entries


def _fit(model, target_or_data, entries, method: str, kw: dict) -> FitResult:
    _check_lr(kw.get("lr", 1e-2))
    data_kw = {k: kw.pop(k) for k in _DATA_KEYS if k in kw}
    data = regression_data(target_or_data, seed=kw.get("seed", 0), **data_kw)
    return train_entries(model, data, entries, method=method, **kw)


def fit_all_weights(model: nn.Module, target_or_data, **kwargs) -> FitResult:
    """Train every parameter of ``model`` (weights and norms) by MSE.

    Parameters
    ----------
    model : nn.Module
    target_or_data : as in :func:`~normonly.train.fit.fit_norm_only`
    **kwargs
        ``optimizer, lr, steps, batch_size, seed, radius, n_train, n_val, n_test, bn_mode,
        momentum, log_every, log_splits, time_limit_s, device`` as in :func:`fit_norm_only`.

    Returns
    -------
    FitResult
        ``method="all_weights"``.
    """
    entries = [(p, None) for p in model.parameters()]
    return _fit(model, target_or_data, entries, "all_weights", dict(kwargs))


def fit_last_layer(
    model: nn.Module, target_or_data, *, n_params: int | None = None, **kwargs
) -> FitResult:
    """Train exactly ``n_params`` entries of the last ``nn.Linear`` (see the module docstring).

    Parameters
    ----------
    n_params : int, optional
        Default: the number of norm parameters of ``model`` (matched count).
    **kwargs
        As in :func:`fit_all_weights`.

    Returns
    -------
    FitResult
        ``method="last_layer"``; ``n_trainable == n_params``.

    Example
    -------
    >>> from normonly import NormNet, TargetMLP
    >>> net = NormNet([2, 6, 3, 6, 1], seed=0)
    >>> f = TargetMLP.random([2, 3, 1], seed=0)
    >>> fit_last_layer(net, f, n_params=4, steps=2, n_train=32, n_val=8, n_test=8).n_trainable
    4
    """
    entries = last_layer_entries(model, _resolve_n(model, n_params))
    return _fit(model, target_or_data, entries, "last_layer", dict(kwargs))


def fit_random_weights(
    model: nn.Module,
    target_or_data,
    *,
    n_params: int | None = None,
    mask_seed: int | None = None,
    **kwargs,
) -> FitResult:
    """Train exactly ``n_params`` randomly chosen weight entries (Frankle et al.'s control).

    Parameters
    ----------
    n_params : int, optional
        Default: the number of norm parameters of ``model`` (matched count).
    mask_seed : int, optional
        Seed of the random choice (default: ``seed``).
    **kwargs
        As in :func:`fit_all_weights`.

    Returns
    -------
    FitResult
        ``method="random_weights"``; ``n_trainable == n_params``.
    """
    seed = kwargs.get("seed", 0) if mask_seed is None else mask_seed
    entries = random_weight_entries(model, _resolve_n(model, n_params), seed=seed)
    return _fit(model, target_or_data, entries, "random_weights", dict(kwargs))
