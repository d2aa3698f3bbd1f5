"""Convolutional construction: Theorem 1 channel by channel (docs/theory.md#convolutional-networks).

A target conv layer ``u ↦ σ(conv(u; W) + b)`` (``c_in → c_out`` channels, kernel ``kh × kw``)
is rebuilt by a frozen random conv B (``c_in → m`` channels, the same kernel, stride, padding
and dilation), a BatchNorm2d on its m channels, ReLU, a frozen random 1×1 conv A (``m → c_out``)
and a BatchNorm2d on c_out::

    conv_A(σ(γ ⊙ conv_B(u) + β)) + β'  ==  conv(u; A diag(γ) B) + A β + β'

1. scales: with B flattened to ``(m, c_in·kh·kw)`` and W to ``(c_out, c_in·kh·kw)``, the
   effective kernel ``A diag(γ) B = W`` is the Khatri-Rao system of the MLP construction with
   ``d_in = c_in·kh·kw``, ``d_out = c_out``: ``m ≥ c_out·c_in·kh·kw`` channels (Burkholz's
   count, ICLR 2024), times overparam; the same solvers, which never form K;
2. ReLU on: every patch of u is a sub-vector of the zero-padded u, so its norm is at most
   ``‖u‖ ≤ R_in`` and the always-on shifts of the MLP construction apply per channel;
3. bias: ``β' = b − A β``.

A Linear layer after Flatten is rebuilt exactly as in the MLP construction. Average pooling is a
fixed linear map: the network applies the target's own AvgPool2d, and the radius of a pooled
input is ``‖P‖₂`` times that of the feature map before it.
"""

from __future__ import annotations

import math
import time

import torch

from normonly._checks import check_density, check_device, check_int, check_radius
from normonly.construct.layout import scaled_width
from normonly.construct.record import LayerCertificate, construction_meta
from normonly.construct.wide import RELU_MARGIN, next_radius, relu_on_need
from normonly.errors import InfeasibleError
from normonly.linalg.solve import solve_scales
from normonly.linalg.sparse_check import require_full_row_rank
from normonly.nets.cnn import TargetCNN, conv_matrix, pool_matrix
from normonly.nets.normcnn import NormCNN

__all__ = ["build_cnn", "cnn_plan", "cnn_feature_counts"]


def _check_overparam(target: TargetCNN, overparam: object) -> float:
    if isinstance(overparam, bool) or not isinstance(overparam, int | float):
        raise TypeError(f"overparam must be a real number, got {type(overparam).__name__}")
    value = float(overparam)
    if not math.isfinite(value) or value < 1.0:
        need = cnn_feature_counts(target)
        l = max(range(len(need)), key=lambda i: need[i])
        raise InfeasibleError(
            f"overparam must be a finite number >= 1, got {overparam!r}: layer {l} of this CNN "
            f"needs m >= {need[l]} channels (c_out*c_in*kh*kw) to be reproduced exactly; use "
            "overparam=1.0, or 2.0 for a better-conditioned solve"
        )
    return value


def cnn_feature_counts(target: TargetCNN) -> list[int]:
    """Per layer the minimum width m: ``c_out·c_in·kh·kw`` (conv) or ``d_out·d_in`` (Linear)."""
    return [int(w.numel()) for w in target.weights]


def cnn_plan(target: TargetCNN, overparam: float) -> list[dict]:
    """The :class:`NormCNN` plan (one dict per target layer) for ``target`` at ``overparam``."""
    plan = []
    for layer, w, n in zip(target.layers, target.weights, cnn_feature_counts(target), strict=True):
        pools = [p.to_json() for p in layer["pools"]]
        m = scaled_width(overparam, n)
        if layer["kind"] == "conv":
            plan.append({"kind": "conv", "c_in": int(w.shape[1]), "width": m,
                         "c_out": int(w.shape[0]), "geometry": layer["geometry"].to_json(),
                         "pools": pools})  # fmt: skip
        else:
            plan.append({"kind": "linear", "d_in": int(w.shape[1]), "width": m,
                         "d_out": int(w.shape[0]), "pools": pools})  # fmt: skip
    return plan


def _pooled_radius(layer: dict, radius: float) -> float:
    """A bound on the norm of the layer's pooled input from that of its feature map."""
    for p in layer["pools"]:
        radius *= float(torch.linalg.matrix_norm(pool_matrix(p), ord=2)) * (1 + 2.0**-40)
    return radius


def build_cnn(
    target: TargetCNN,
    *,
    radius: object,
    overparam: object = 1.0,
    density: object = 1.0,
    seed: object = 0,
    solver: str = "auto",
    device: object = "cpu",
    solve_rtol: float | None = None,
) -> tuple[NormCNN, list[LayerCertificate]]:
    """Set the BatchNorms of a frozen random :class:`NormCNN` so that it equals ``target``.

    Parameters
    ----------
    target : TargetCNN
    radius : float
        Exactness on the ball ``‖x‖ ≤ radius`` of flattened inputs.
    overparam : float
        Channels ``m = ⌈overparam · c_out·c_in·kh·kw⌉`` per conv layer (>= 1).
    density : float
        Probability of keeping each frozen weight; a sparse system whose rank is too low is
        refused with the density or overparam that would work.
    seed : int
        Seed of the frozen weights (the same seed gives the same bytes).
    solver : str
        Khatri-Rao solver (:func:`normonly.linalg.solve_scales`).
    device : str or torch.device
        Where to solve (the network is returned on the CPU, float64).
    solve_rtol : float, optional
        Relative residual at which iterative solvers stop (None: float64 round-off).

    Returns
    -------
    net : NormCNN (float64)
    layers : list of LayerCertificate, one per target layer

    Raises
    ------
    TypeError, ValueError
        A bad option (named); InfeasibleError for overparam < 1 or a rank-deficient sparse mask.

    Example
    -------
    >>> from torch import nn
    >>> seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    >>> f = TargetCNN.from_torch(seq, input_shape=(1, 4, 4))
    >>> net, layers = build_cnn(f, radius=1.0, seed=0)
    >>> x = torch.randn(5, 1, 4, 4, dtype=torch.float64) / 8
    >>> bool((net(x) - f(x)).abs().max() < 1e-12)
    True
    """
    if not isinstance(target, TargetCNN):
        raise TypeError(f"target must be a TargetCNN, got {type(target).__name__}")
    radius = check_radius(radius)
    overparam = _check_overparam(target, overparam)
    density = check_density(density)
    seed = check_int("seed", seed, minimum=0)
    dev = check_device(device)
    net = NormCNN(target.input_shape, cnn_plan(target, overparam), density=density, seed=seed)
    certs: list[LayerCertificate] = []
    radius_in = radius  # bound on the norm of layer l's feature map (before its pools)
    for l, (layer, W, b) in enumerate(zip(target.layers, target.weights, target.biases,
                                          strict=True)):  # fmt: skip
        t0 = time.perf_counter()
        A, B = (M.to(dev) for M in net.frozen_matrices(l))  # A (c_out, m), B (m, c_in*kh*kw)
        Wm = target.kernel_matrix(l).to(dev)  # (c_out, c_in*kh*kw)
        if bool((A == 0).any()) or bool((B == 0).any()):
            require_full_row_rank(A, B, layer=l)  # sparse: raises with the fix
        gamma, info = solve_scales(A, B, Wm, solver=solver, rtol=solve_rtol)
        r_u = _pooled_radius(layer, radius_in)  # every patch of u has norm <= ||u|| <= r_u
        need = relu_on_need(gamma, B, r_u, nonneg=l > 0)  # after a ReLU (and pools) u >= 0
        beta = (1.0 + RELU_MARGIN) * need  # = relu_on_shift, the need computed once
        net.set_affine(2 * l, gamma.cpu(), beta.cpu())
        net.set_affine(2 * l + 1, torch.ones_like(b), b - (A @ beta).cpu())
        margin = float((beta - need).min())
        info.wall_time_s = time.perf_counter() - t0
        certs.append(LayerCertificate.from_solve(info, layer=l, block=0, relu_margin=margin,
                                                 radius_in=r_u))  # fmt: skip
        if l < target.depth - 1:
            if layer["kind"] == "conv":
                shape = layer["pools"][-1].out_shape if layer["pools"] else layer["in_shape"]
                C = conv_matrix(W, layer["geometry"], shape)  # (c_out*H'*W', c_in*H*W)
                _, h, w = layer["out_shape"]
                radius_in = next_radius(C, b.repeat_interleave(h * w), r_u)
            else:
                radius_in = next_radius(W, b, r_u)
    net.meta = construction_meta("cnn", radius, target.widths, certs)
    return net, certs
