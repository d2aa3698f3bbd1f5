"""Building blocks of the frozen networks: per-unit normalizations and frozen random weights.

* :class:`Affine` — a plain per-unit ``γ ⊙ z + β``;
* ``nn.BatchNorm1d`` in eval mode — ``weight·(z − μ)/√(var+ε) + bias`` with fixed running
  statistics; a per-unit affine map ``a·z + b`` is realised exactly by ``weight = a·√(var+ε)``,
  ``bias = b + a·μ`` (:func:`set_norm_affine`, read back by :func:`norm_affine`);
* :class:`MaskedLinear` / :func:`random_linear` — frozen N(0, 1/fan_in) weights, optionally kept
  with probability ``density`` by a fixed Bernoulli mask (sparse networks);
* :func:`blocked_linear` — the product of a frozen layer with its ``n`` inputs summed in blocks
  of about ``√n`` (one BLAS call each, accumulated in order), so that each output goes through
  at most :func:`summation_depth` roundings instead of ``n``: the wide constructions sum
  ``m = overparam·d_in·d_out`` large always-on terms in their narrow layers, and the proven
  error bound (``normonly.certificate``) scales with that depth.

LayerNorm is refused (:func:`check_norm`): it normalises each sample across units, so it is not
a per-unit affine map (see ``docs/theory.md#the-networks``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "NORMS", "Affine", "MaskedLinear", "norm_layer", "random_linear", "check_norm",
    "set_norm_affine", "norm_affine", "blocked_linear", "BlockedLinear", "sum_block",
    "channel_block", "conv_summation_depth",
    "summation_depth", "SUM_BLOCK_MIN",
]  # fmt: skip

NORMS = ("batchnorm", "affine")
SUM_BLOCK_MIN = 256  # smallest block of blocked_linear: below it BLAS loses speed


def sum_block(n: int) -> int:
    """Inputs per BLAS call when :func:`blocked_linear` sums ``n`` terms: ``max(256, ⌈√n⌉)``."""
    return max(SUM_BLOCK_MIN, math.isqrt(max(n - 1, 0)) + 1)


def summation_depth(n: int) -> int:
    """The most roundings one term goes through in :func:`blocked_linear` over ``n`` inputs.

    ``n`` when one call does it all (``n <= sum_block(n)``); otherwise ``c + ⌈n/c⌉`` with
    ``c = sum_block(n)``: at most ``c`` inside its block's dot product and one per block
    accumulated after it. The error of every output is then at most ``γ_depth Σ|w_j x_j|``
    (Higham's bound, valid for any order within a block), about ``2√n`` instead of ``n``.

    >>> summation_depth(100), summation_depth(131072)
    (100, 725)
    """
    c = sum_block(n)
    return n if n <= c else c + -(-n // c)


def channel_block(c_in: int, kernel_elems: int) -> int:
    """Input channels per conv call when a conv sums ``c_in·kernel_elems`` terms in blocks."""
    return max(1, sum_block(c_in * kernel_elems) // kernel_elems)


def conv_summation_depth(c_in: int, kernel_elems: int) -> int:
    """:func:`summation_depth` for a conv summed over blocks of :func:`channel_block` channels."""
    n, cb = c_in * kernel_elems, channel_block(c_in, kernel_elems)
    return n if cb >= c_in else min(n, cb * kernel_elems + -(-c_in // cb))


def blocked_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weightᵀ`` with the inputs summed in blocks of :func:`sum_block` (see above).

    The full blocks are one batched product (views, no copies) whose ``P`` partial results
    are then added (in any order: ``P − 1`` roundings), the remainder block one more product.

    Parameters
    ----------
    x : (n_points, n) tensor
    weight : (d_out, n) tensor

    Returns
    -------
    (n_points, d_out) tensor; differentiable.
    """
    n = weight.shape[1]
    c = sum_block(n)
    if n <= c:
        return nn.functional.linear(x, weight)
    full = n // c * c
    x3 = x[:, :full].unflatten(1, (-1, c)).transpose(0, 1)  # (P, n_points, c)
    w3 = weight[:, :full].unflatten(1, (-1, c)).permute(1, 2, 0)  # (P, c, d_out)
    out = torch.bmm(x3, w3).sum(dim=0)  # (n_points, d_out)
    if full < n:
        out = out + nn.functional.linear(x[:, full:], weight[:, full:])
    return out


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


class BlockedLinear(nn.Linear):
    """A frozen bias-free ``nn.Linear`` whose product sums its inputs in blocks.

    Same parameters and state_dict as ``nn.Linear``; only the summation order of the forward
    pass is fixed (:func:`blocked_linear`), so that the proven error bound can use it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blocked_linear(x, self.weight)


class MaskedLinear(BlockedLinear):
    """A :class:`BlockedLinear` whose weight is multiplied by a fixed 0/1 ``mask`` buffer.

    The mask keeps pruned weights at zero even if a baseline later trains the weights.
    """

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, **kw) -> None:
        super().__init__(in_features, out_features, bias=False, **kw)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blocked_linear(x, self.weight * self.mask)


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
    dev = g.device  # drawn where the generator lives (CPU unless a CUDA generator is given)
    w = torch.randn(d_out, d_in, generator=g, dtype=torch.float64, device=dev).div_(d_in**0.5)
    # built on the meta device: nn.Linear's own random init would be drawn and thrown away
    if density < 1.0:
        mask = torch.rand(d_out, d_in, generator=g, dtype=torch.float64, device=dev) < density
        mask = mask.to(dtype)
        lin: nn.Linear = MaskedLinear(d_in, d_out, mask, device="meta", dtype=dtype)
        w.mul_(mask)
    else:
        lin = BlockedLinear(d_in, d_out, bias=False, device="meta", dtype=dtype)
    lin.weight = nn.Parameter(w.to(dtype), requires_grad=False)
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
