"""A proven bound on the error of a reconstructed network over the whole input ball.

:func:`error_bound` returns a number ``B`` such that, for **every** ``x`` with ``‖x‖₂ ≤ R`` (not
only sampled ones), ``‖net(x) − f(x)‖∞ ≤ B`` when the network is evaluated in its floating-point
dtype and ``f`` is the target evaluated either exactly or in float64. It reads the network's own
current parameters (frozen weights and masks, BatchNorm weight/bias/running statistics/eps or the
plain affine γ/β), so a network edited after its construction is judged as it is.

How the bound is derived
------------------------
Write ``h_l`` for the target's hidden vector after its layer ``l`` (``h_0 = x``) and ``ĥ_l`` for
the values the network itself computes for it (the units that carry the target's units, in
floating point). Over the ball, ``‖h_0‖ ≤ R``, and for ``l ≥ 1`` ``h_l ≥ 0`` with
``‖h_l‖ ≤ R_l``, where ``R_{l+1}`` is the smaller of ``‖(‖W_i^+‖ R_l + b_i)_+‖`` (row by row:
ReLU is monotone) and ``‖W‖₂ R_l + ‖b‖`` (a rigorous upper bound on the spectral norm, below).
We carry a bound ``c_l`` on ``|ĥ_l − h_l|`` (elementwise, and as a 2-norm), so ``ĥ_l ≥ 0`` lies in
the ball of radius ``R_l + ‖c_l‖``: the input ball *enlarged by the error carried in*.

While the network computes the part that stands for target layer ``l``, every unit ``k`` it
holds is described by an *affine form* in ``ĥ_l``::

    |ŝ_k − (T_k · ĥ_l + t_k)| ≤ E_k        for every x in the ball,

where ``ŝ_k`` is the value the network actually computes and ``T, t, E`` are computed numbers.
The forms start as ``x`` itself (``T = I, t = 0, E = 0``) and are pushed through every
operation of the network:

* **frozen linear map M** (masks applied): ``T ← M T``, ``t ← M t``,
  ``E ← |M| E + 2γ_n |M| S``. ``S_k = ‖T_k‖ ‖ĥ‖ + |t_k| + E_k`` bounds ``|ŝ_k|``, and
  ``γ_n = n u / (1 − n u)`` is the worst-case relative error of a floating-point dot product
  whose terms go through at most ``n`` roundings (the number of nonzero terms, and for the
  network's blocked products — ``nets.layers.blocked_linear``, about ``√n`` terms per BLAS call
  — at most ``2√n``) (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3:
  ``|fl(Mv) − Mv| ≤ γ_n |M||v|`` for every summation order, fused multiply-adds included). One
  ``γ_n |M| S`` is the rounding of the forward pass itself — the large always-on shifts
  included, since they are part of ``S`` —, the other covers rounding in computing ``M T`` and
  ``M t`` here.
* **normalization** (per unit ``γ ⊙ z + β``; for an eval BatchNorm ``γ = weight/√(var + eps)``,
  ``β = bias − γ·mean``, real numbers we compute to within a few ulps as ``γ̂, β̂``):
  ``T ← γ̂ T``, ``t ← γ̂ t + β̂``,
  ``E ← |γ̂| E + |γ − γ̂| S + |β − β̂| + c·u·(|γ̂| (S + |mean|) + |bias|)``. The constant ``c = 16``
  is generous: any evaluation order of an eval BatchNorm rounds at most six times per unit.
* **ReLU** (1-Lipschitz, so it never increases ``E``): the exact range of a form is
  ``t_k ± ‖T_k‖ ‖ĥ‖`` (``t_k − ‖T_k^−‖ ‖ĥ‖`` .. ``t_k + ‖T_k^+‖ ‖ĥ‖`` when ``ĥ ≥ 0``). A unit
  whose range is ``≥ 0`` is proven *always on* (the ReLU is the identity on the form: it is
  kept); one whose range plus ``E`` is ``≤ 0`` is exactly zero. Any other unit is unproven: its
  value lies in ``[0, max range]`` and is replaced by the midpoint with half the range added to
  ``E``, so a network whose shifts do not keep its ReLUs on gets a large, honest bound.
* **target ReLU** (where the network realises ``h_{l+1} = σ(W h_l + b)``: the narrow layer of the
  wide construction, the post-add ReLU of a target layer's last block in the residual one): for
  unit ``k`` carrying target unit ``i`` (ReLU is 1-Lipschitz),
  ``|ĥ_{l+1,i} − h_{l+1,i}| ≤ E_k + ‖T_k − W_i‖ ‖ĥ_l‖ + |t_k − b_i| + |W_i (ĥ_l − h_l)|``,
  with the last term the smaller of ``|W_i| c_l`` and ``‖W_i‖ ‖c_l‖`` (its 2-norm is
  propagated with ``‖W‖₂``, which grows more slowly with depth than ``|W|``). This is the new
  ``c_{l+1}``; the carriers' new forms are ``ĥ_{l+1,i}`` exactly, and every other unit keeps its
  constant ``t_k`` with ``‖T_k‖ ‖ĥ_l‖`` added to its error.
* **output**: ``|ŷ_i − f_i(x)|`` is bounded by the same expression for the output units.

``‖T_k − W_i‖ ‖ĥ‖`` is where the error of the effective weights ``A diag(γ) B − W`` of each layer
enters (the Khatri-Rao solve's residual, or an edited γ); ``E`` carries the floating-point
rounding within the layer. The bound is split into a ``weights`` part (effective weights and
shifts, unproven ReLUs) and a ``rounding`` part, plus a bound on the rounding of the target's own
float64 evaluation, so that it covers both ``|fl(net(x)) − f(x)|`` and
``|fl(net(x)) − fl(f(x))|``; the sampled error can never exceed it. Every norm, product and sum
computed here is rounded upwards by a factor ``1 + γ_(n+4)``, so the bound is an upper bound on
real numbers, not an estimate.

The spectral norm ``‖W‖₂`` comes from Kahan's residual theorem: for symmetric ``G`` and any
``V``, ``Λ``, the eigenvalues of ``G`` lie within ``‖G V − V Λ‖₂ / σ_min(V)`` of those of ``Λ``;
with ``G = W Wᵀ`` (or ``Wᵀ W``) and ``V, Λ`` from ``eigh``, plus the rounding of ``G``, this gives
an upper bound within a few ulps of ``‖W‖₂``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from normonly.certificate.forms import Forms, frozen_weight
from normonly.certificate.rigorous import (
    spectral_norm_upper,
    target_radii,
    target_rounding_bound,
    up,
)
from normonly.nets.layers import BlockedLinear

__all__ = ["ErrorBound", "error_bound", "spectral_norm_upper", "target_radii"]


@dataclass
class ErrorBound:
    """A proven bound on ``max_{‖x‖≤R} ‖net(x) − f(x)‖∞`` and where it comes from.

    Attributes
    ----------
    bound : float
        ``weights + rounding + target_rounding`` (``inf`` if nothing finite could be proven).
    weights : float
        The part due to the effective weights and shifts differing from the target's (solve
        residuals, edited parameters, ReLUs not proven on).
    rounding : float
        The part due to the network's own floating-point rounding (and its propagation).
    target_rounding : float
        A bound on the rounding of the target's float64 evaluation (so the bound also covers a
        comparison with the target computed in float64).
    dtype : str
        The dtype whose rounding was bounded.
    relu : list of dict
        One entry per ReLU stage: ``stage``, units proven ``on``, proven ``off``, ``unproven``,
        and ``margin`` (the smallest proven lower bound of an always-on pre-activation).
    """

    bound: float
    weights: float
    rounding: float
    target_rounding: float
    dtype: str
    radius: float
    relu: list[dict] = field(default_factory=list)

    @property
    def unproven_relus(self) -> int:
        return sum(s["unproven"] for s in self.relu)

def error_bound(net: nn.Module, target, radius: float) -> ErrorBound:
    """Prove a bound on ``max_{‖x‖ ≤ radius} ‖net(x) − target(x)‖∞`` (see the module docstring).

    Parameters
    ----------
    net : NormNet or ResidualNormNet
        A wide (also sparse) or residual construction; its own current parameters are used.
    target : TargetMLP
    radius : float

    Returns
    -------
    ErrorBound

    Raises
    ------
    ValueError
        The network's structure does not match the target (not a construction of it), or a
        BatchNorm is in training mode.
    """
    from normonly.nets.residual import ResidualNormNet
    from normonly.nets.wide import NormNet

    p = next(net.parameters())
    u = torch.finfo(p.dtype).eps / 2
    dev = p.device
    sigmas = [spectral_norm_upper(w) for w in target.weights]
    radii = target_radii(target, radius, sigmas)
    relu_log: list[dict] = []
    Ws = [w.to(dev) for w in target.weights]
    bs = [b.to(dev) for b in target.biases]
    d_in = target.d_in
    eye = torch.eye(d_in, dtype=torch.float64, device=dev)
    zeros = torch.zeros(d_in, dtype=torch.float64, device=dev)
    carry = (zeros.clone(), zeros.clone(), 0.0, 0.0)
    forms = Forms(eye, zeros, zeros.clone(), zeros.clone(), carry=carry, radius=radii[0],
                   nonneg=False, u=u)  # fmt: skip
    if isinstance(net, ResidualNormNet):
        out = _residual(net, target, forms, Ws, bs, radii, sigmas, relu_log)
    elif isinstance(net, NormNet):
        out = _wide(net, target, forms, Ws, bs, radii, sigmas, relu_log)
    else:
        raise TypeError(
            f"a proven bound is available for NormNet and ResidualNormNet, got {type(net).__name__}"
        )
    tr = target_rounding_bound(target, radii)
    w_part, fp_part = float(out[0].max()), float(out[1].max())
    total = w_part + fp_part + tr
    if not math.isfinite(total):
        total = math.inf
    return ErrorBound(
        bound=float(up(total, 3)) if math.isfinite(total) else math.inf,
        weights=w_part,
        rounding=fp_part,
        target_rounding=tr,
        dtype=str(p.dtype).replace("torch.", ""),
        radius=float(radius),
        relu=relu_log,
    )


def sums_in_blocks(layer: nn.Module) -> bool:
    """The layer sums its inputs in blocks (nets.layers.blocked_linear), not in one product."""
    return isinstance(layer, BlockedLinear)


def _check_shape(what: str, have: int, need: int) -> None:
    if have < need:
        raise ValueError(
            f"the network does not match the target: {what} has {have} units, the target needs "
            f"at least {need}"
        )


def _wide(net, target, forms: Forms, Ws, bs, radii, sigmas, log):
    if len(net.linears) != 2 * target.depth:
        raise ValueError(
            f"the network has {len(net.linears)} layers, a wide construction of a depth-"
            f"{target.depth} target has {2 * target.depth}"
        )
    dt = torch.float64
    for l in range(target.depth):
        wide, narrow = 2 * l, 2 * l + 1
        Bm = frozen_weight(net.linears[wide], dt)
        if Bm.shape[1] != forms.t.shape[0]:
            raise ValueError(
                f"the network's layer {wide} takes {Bm.shape[1]} inputs, the previous layer "
                f"gives {forms.t.shape[0]}"
            )
        forms = forms.wide_pair(
            Bm, net.norms[wide], frozen_weight(net.linears[narrow], dt),
            blocked_b=sums_in_blocks(net.linears[wide]),
            blocked_a=sums_in_blocks(net.linears[narrow]),
            stage=f"layer {l} wide", log=log,
        ).norm(net.norms[narrow])  # fmt: skip
        d_out = Ws[l].shape[0]
        _check_shape(f"layer {narrow}", forms.t.shape[0], d_out)
        carriers = torch.arange(d_out, device=forms.t.device)
        if l == target.depth - 1:
            if forms.t.shape[0] != d_out:
                raise ValueError(
                    f"the network has {forms.t.shape[0]} outputs, the target {d_out}"
                )
            return forms.carried_error(Ws[l], bs[l], carriers, sigmas[l])
        forms = forms.target_relu(Ws[l], bs[l], carriers, radii[l + 1], f"layer {l} output",
                                  log, sigmas[l])  # fmt: skip
    raise AssertionError("unreachable")


def _residual(net, target, forms: Forms, Ws, bs, radii, sigmas, log):
    layers = [c.get("layer") for c in (getattr(net, "meta", {}) or {}).get("layers", [])]
    if len(layers) != net.depth or sorted(set(layers)) != list(range(target.depth)):
        raise ValueError(
            "the residual network does not record which target layer each of its blocks "
            f"computes (meta['layers'] has {len(layers)} entries for {net.depth} blocks and "
            f"{target.depth} target layers): rebuild it with normonly.reconstruct"
        )
    r = net.register
    dt = torch.float64
    forms = forms.norm(net.lift).pad(2 * r - target.d_in)
    for idx, blk in enumerate(net.blocks):
        l = layers[idx]
        last_block = idx == len(layers) - 1 or layers[idx + 1] != l
        inner = forms.norm(blk.norm_in).linear(
            frozen_weight(blk.linear_in, dt), blocked=sums_in_blocks(blk.linear_in)
        ).norm(blk.norm_hid)
        inner = inner.relu(f"layer {l} block {idx} hidden", log)
        delta = inner.linear(
            frozen_weight(blk.linear_out, dt), blocked=sums_in_blocks(blk.linear_out)
        ).norm(blk.norm_out)
        pre = forms.add(delta)
        if last_block and l < target.depth - 1:
            dst = ((l + 1) % 2) * r
            carriers = torch.arange(dst, dst + Ws[l].shape[0], device=pre.t.device)
            forms = pre.target_relu(Ws[l], bs[l], carriers, radii[l + 1], f"layer {l} output",
                                    log, sigmas[l])  # fmt: skip
        else:
            forms = pre.relu(f"layer {l} block {idx} stream", log)
    start = net.config["out_register"] * r
    out = forms.rows(slice(start, start + target.d_out)).norm(net.readout)
    carriers = torch.arange(target.d_out, device=out.t.device)
    return out.carried_error(Ws[-1], bs[-1], carriers, sigmas[-1])
