"""Building blocks of the frozen networks: per-unit normalizations and frozen random weights.

* :class:`Affine` — a plain per-unit ``γ ⊙ z + β``;
* ``nn.BatchNorm1d`` in eval mode — ``weight·(z − μ)/√(var+ε) + bias`` with fixed running
  statistics; a per-unit affine map ``a·z + b`` is realised exactly by ``weight = a·√(var+ε)``,
  ``bias = b + a·μ`` (:func:`set_norm_affine`, read back by :func:`norm_affine`);
* :class:`MaskedLinear` / :func:`random_linear` — frozen N(0, 1/fan_in) weights, optionally kept
  with probability ``density`` by a fixed Bernoulli mask (sparse networks).

LayerNorm is refused (:func:`check_norm`): it normalises each sample across units, so it is not
a per-unit affine map (see ``docs/theory.md#the-networks``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "NORMS", "Affine", "MaskedLinear", "norm_layer", "random_linear", "check_norm",
    "set_norm_affine", "norm_affine",
]  # fmt: skip

NORMS = ("batchnorm", "affine")


class Affine(nn.Module):
    """Per-unit affine normalization ``γ ⊙ z + β`` (γ = ``weight``, β = ``bias``)."""

    def __init__(self, num_features: int, *, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_features, dtype=dtype))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}"


class MaskedLinear(nn.Linear):
    """``nn.Linear`` (no bias) whose weight is multiplied by a fixed 0/1 ``mask`` buffer.

    The mask keeps pruned weights at zero even if a baseline later trains the weights.
    """

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, **kw) -> None:
        super().__init__(in_features, out_features, bias=False, **kw)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask)


def norm_layer(norm: str, m: int, dtype: torch.dtype) -> nn.Module:
    if norm == "batchnorm":
        bn = nn.BatchNorm1d(m, dtype=dtype)
        bn.eval()
        return bn
    return Affine(m, dtype=dtype)


def random_linear(
    d_in: int, d_out: int, g: torch.Generator, *, density: float, dtype: torch.dtype
) -> nn.Linear:
    """A frozen ``nn.Linear(d_in, d_out, bias=False)`` with N(0, 1/d_in) weights.

    The weight is drawn first, then (only if ``density < 1``) the mask, so dense networks are
    byte-identical whatever the density code path.
    """
    w = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / d_in**0.5
    if density < 1.0:
        mask = (torch.rand(d_out, d_in, generator=g, dtype=torch.float64) < density).to(dtype)
        lin: nn.Linear = MaskedLinear(d_in, d_out, mask, dtype=dtype)
        w = w * mask
    else:
        lin = nn.Linear(d_in, d_out, bias=False, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
    lin.weight.requires_grad_(False)
    return lin


def check_norm(norm: str) -> str:
    if norm == "layernorm":
        raise ValueError(
            "norm='layernorm' cannot give an exact construction: LayerNorm normalises each sample "
            "across units, so it is not a per-unit affine map; use norm='batchnorm' "
            "(eval mode) or norm='affine', or fit a LayerNorm model by gradient with "
            "normonly.fit_norm_only"
        )
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def set_norm_affine(layer: nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    """Write the per-unit affine map ``γ ⊙ z + β`` into a BatchNorm1d (eval) or Affine layer."""
    with torch.no_grad():
        if isinstance(layer, nn.BatchNorm1d):
            std = torch.sqrt(layer.running_var + layer.eps)
            layer.weight.copy_(gamma * std)
            layer.bias.copy_(beta + gamma * layer.running_mean)
        else:
            layer.weight.copy_(gamma)
            layer.bias.copy_(beta)


def norm_affine(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-unit ``(γ, β)`` a BatchNorm1d (eval) or Affine layer computes."""
    with torch.no_grad():
        if isinstance(layer, nn.BatchNorm1d):
            gamma = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            return gamma.clone(), (layer.bias - gamma * layer.running_mean).clone()
        return layer.weight.clone(), layer.bias.clone()
