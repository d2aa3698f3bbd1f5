"""Freeze every parameter of a PyTorch model except those of its normalization layers.

This is the paper's setting (``docs/theory.md#the-networks``) for *any* model: after
:func:`freeze_all_but_norm`, only the per-unit scale γ (``weight``) and shift β (``bias``) of the
chosen normalization layers have ``requires_grad=True``. Layers are recognised by type and, for
third-party classes (Hugging Face's ``T5LayerNorm``, ``LlamaRMSNorm``, ...), by class name:

============  =======================================================================
kind          modules
============  =======================================================================
affine        :class:`normonly.nets.layers.Affine` (the per-unit ``γ ⊙ z + β`` of ``NormNet``)
batchnorm     ``nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``; class names ending in ``BatchNorm``
layernorm     ``nn.LayerNorm``; class names ending in ``LayerNorm`` (optionally ``2d``)
groupnorm     ``nn.GroupNorm``; class names ending in ``GroupNorm``
rmsnorm       ``nn.RMSNorm``; class names ending in ``RMSNorm``
instancenorm  ``nn.InstanceNorm1d/2d/3d`` (affine ones); not in the default kinds
============  =======================================================================

Only a norm module's *own* parameters (``recurse=False``) count as norm parameters, so a wrapper
class whose name happens to end in ``LayerNorm`` cannot unfreeze the layers inside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from normonly.nets.layers import Affine

__all__ = ["freeze_all_but_norm", "norm_kind", "FreezeSummary", "NORM_KINDS", "DEFAULT_KINDS"]

NORM_KINDS = ("affine", "batchnorm", "layernorm", "groupnorm", "rmsnorm", "instancenorm")
DEFAULT_KINDS = ("affine", "batchnorm", "layernorm", "groupnorm", "rmsnorm")

_RMSNORM = getattr(nn, "RMSNorm", None)  # torch >= 2.4
# third-party norm classes recognised by the end of their name (case-insensitive)
_NAME_PATTERN = re.compile(r"(rms|layer|group|batch)norm(\dd)?$", re.IGNORECASE)


def norm_kind(module: nn.Module) -> str | None:
    """The normalization kind of ``module`` (one of :data:`NORM_KINDS`), or None.

    Example
    -------
    >>> norm_kind(nn.LayerNorm(4)), norm_kind(nn.Linear(2, 2))
    ('layernorm', None)
    """
    if isinstance(module, Affine):
        return "affine"
    if isinstance(module, _BatchNorm):
        return "batchnorm"
    if isinstance(module, _InstanceNorm):
        return "instancenorm"
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    if isinstance(module, nn.GroupNorm):
        return "groupnorm"
    if _RMSNORM is not None and isinstance(module, _RMSNORM):
        return "rmsnorm"
    match = _NAME_PATTERN.search(type(module).__name__)
    if match:
        return match.group(1).lower() + "norm"
    return None


@dataclass
class FreezeSummary:
    """What :func:`freeze_all_but_norm` left trainable.

    Attributes
    ----------
    kinds : tuple of str
        The kinds that were asked for.
    counts : dict
        ``{kind: {"modules": int, "trainable": int, "frozen": int}}`` in scalar parameters, for
        every norm kind found (asked for or not), plus ``"bias"`` (Linear/Conv biases, trainable
        with ``include_bias=True``) and ``"other"`` (everything else, always frozen).
    trainable_names : list of str
        Names (as in ``named_parameters``) of the trainable parameters.
    """

    kinds: tuple[str, ...]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    trainable_names: list[str] = field(default_factory=list)

    @property
    def trainable(self) -> int:
        """Scalar parameters left trainable."""
        return sum(c["trainable"] for c in self.counts.values())

    @property
    def frozen(self) -> int:
        """Scalar parameters frozen."""
        return sum(c["frozen"] for c in self.counts.values())

    def to_dict(self) -> dict:
        """JSON-able form (for experiment rows)."""
        return {
            "kinds": list(self.kinds),
            "counts": {k: dict(v) for k, v in self.counts.items()},
            "trainable": self.trainable,
            "frozen": self.frozen,
        }

    def __str__(self) -> str:
        parts = [
            f"{k}: {c['trainable']} trainable, {c['frozen']} frozen ({c['modules']} modules)"
            for k, c in self.counts.items()
        ]
        return f"trainable {self.trainable}, frozen {self.frozen}; " + "; ".join(parts)


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    try:
        out = tuple(kinds)
    except TypeError:
        raise TypeError(f"kinds must be a sequence of strings, got {kinds!r}") from None
    unknown = [k for k in out if k not in NORM_KINDS]
    if unknown or not out:
        raise ValueError(
            f"kinds must be a non-empty subset of {NORM_KINDS}, got {out!r}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    return out


def freeze_all_but_norm(
    model: nn.Module,
    *,
    kinds: Iterable[str] = DEFAULT_KINDS,
    include_bias: bool = False,
) -> FreezeSummary:
    """Leave only the affine parameters of normalization layers trainable (in place).

    Every parameter of ``model`` gets ``requires_grad=False`` (and its ``.grad`` cleared),
    except the own parameters of the normalization modules whose kind is in ``kinds``.

    Parameters
    ----------
    model : nn.Module
        Any PyTorch model: a :class:`~normonly.nets.wide.NormNet`, an ``nn.Sequential`` with
        BatchNorm, a transformer with LayerNorms, ...
    kinds : sequence of str
        Which norm kinds to train, from :data:`NORM_KINDS`. The default is every kind but
        ``"instancenorm"``; it includes ``"affine"`` (normonly's
        :class:`~normonly.nets.layers.Affine`) so that ``NormNet(norm="affine")`` works as well
        as ``norm="batchnorm"``.
    include_bias : bool
        Also leave the biases of ``nn.Linear`` and convolution layers trainable (a common variant
        of norm-only tuning, e.g. BitFit-style).

    Returns
    -------
    FreezeSummary
        Per-kind trainable/frozen counts (scalar parameters) and the trainable names.

    Raises
    ------
    TypeError
        ``model`` is not an ``nn.Module``.
    ValueError
        Unknown kinds, or no trainable parameter was found in a module of the chosen kinds (the
        message lists the norm kinds that were found).

    Example
    -------
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    >>> s = freeze_all_but_norm(model)
    >>> s.trainable, s.counts["batchnorm"]["trainable"]
    (8, 8)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    kinds = _check_kinds(kinds)
    if not isinstance(include_bias, bool):
        raise TypeError(f"include_bias must be a bool, got {include_bias!r}")

    # which kind owns each parameter; the first module that registers a (shared) parameter wins
    owner: dict[int, str] = {}
    modules_of: dict[str, int] = {}
    for module in model.modules():
        kind = norm_kind(module)
        if kind is None and include_bias and isinstance(module, nn.Linear | _ConvNd):
            if module.bias is not None:
                owner.setdefault(id(module.bias), "bias")
            continue
        if kind is None:
            continue
        modules_of[kind] = modules_of.get(kind, 0) + 1
        for p in module.parameters(recurse=False):
            owner.setdefault(id(p), kind)

    chosen = set(kinds) | ({"bias"} if include_bias else set())
    counts: dict[str, dict[str, int]] = {
        k: {"modules": n, "trainable": 0, "frozen": 0} for k, n in modules_of.items()
    }
    plan = [(name, p, owner.get(id(p), "other")) for name, p in model.named_parameters()]
    for _, p, kind in plan:  # named_parameters lists a shared parameter once
        c = counts.setdefault(kind, {"modules": 0, "trainable": 0, "frozen": 0})
        c["trainable" if kind in chosen else "frozen"] += p.numel()
    if not any(counts.get(k, {}).get("trainable", 0) for k in kinds):
        raise ValueError(  # checked before anything is changed: the model is left as it was
            f"freeze_all_but_norm found no trainable parameters of kinds {kinds} in "
            f"{type(model).__name__} (norm modules found: {modules_of or 'none'}); the model "
            "needs normalization layers with affine parameters (e.g. nn.BatchNorm1d(affine=True), "
            "nn.LayerNorm(elementwise_affine=True)), or pass kinds= including the kind it has"
        )
    names = []
    for name, p, kind in plan:
        p.requires_grad_(kind in chosen)
        if kind in chosen:
            names.append(name)
        else:
            p.grad = None
    summary = FreezeSummary(kinds=kinds, counts=counts, trainable_names=names)
    return summary
