"""A proven error bound for a rebuilt CNN, by the affine forms of :mod:`.bound` on flat vectors.

A :class:`~normonly.nets.normcnn.NormCNN` is, on flattened inputs, a wide network whose linear
maps are convolutions: conv B is a sparse matrix whose entries are kernel weights, the 1×1 conv
A is ``A ⊗ I_positions``, an AvgPool2d is a matrix with entries ``1/divisor``, and a BatchNorm2d
is a per-unit affine map whose γ, β repeat over the positions of a channel. The affine forms of
:class:`~normonly.certificate.forms.Forms` are pushed through these maps exactly as through a
wide MLP (a conv is applied to the forms with ``conv2d`` instead of a dense product, with the
same rounding terms: Higham's ``γ_n |M| |v|`` for an n-term dot product, n counting only
non-zero terms), and compared with the target's flattened MLP (:meth:`TargetCNN.to_mlp`).

**What the bound assumes of the arithmetic.** Each conv output is computed as a sum of products
of the kernel weights with the (zero-padded) input, in any order, fused multiply-adds allowed —
true of torch's float64 CPU convolution (im2col + GEMM); an FFT or Winograd convolution would not
be covered. Each AvgPool2d output is the sum of its window divided by the divisor (or multiplied
by its reciprocal): within ``γ_(k+1)`` of the exact mean (a ``2u`` slack is added to the
``γ_k`` of a k-term dot product).

**The target side.** Three numbers close the chain from the network to the target CNN:
the forms bound ``|fl(net(x)) − f_mlp(x)|`` where ``f_mlp`` is the flattened MLP with its float64
weights; ``|f_mlp(x) − f(x)|`` (the rounding of folding a pool into the next layer's matrix,
``≤ γ_N |C| |P|`` per entry, propagated through the layers; zero without pools); and the rounding
of the target CNN's own float64 evaluation (its convolutions, pools and linear layers), so the
bound covers both ``|fl(net(x)) − f(x)|`` and ``|fl(net(x)) − fl(f(x))|``. The hidden-layer
radii are valid for both ``f`` and ``f_mlp`` (inflated by the folding error).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from normonly.certificate.bound import ErrorBound, sums_in_blocks
from normonly.certificate.forms import Forms, frozen_weight
from normonly.certificate.rigorous import (
    U64,
    gamma,
    rownorm,
    spectral_norm_upper,
    tree_matmul,
    up,
)
from normonly.nets.cnn import TargetCNN, pool_matrix
from normonly.nets.layers import conv_summation_depth
from normonly.nets.normcnn import BlockedConv2d, NormCNN

__all__ = ["cnn_error_bound"]


def _conv_apply(w: torch.Tensor, X: torch.Tensor, in_shape, conv: nn.Conv2d) -> torch.Tensor:
    """Columns of ``X`` (flattened (C, H, W) vectors) convolved with ``w``: (units, cols)."""
    cols = X.shape[1]
    out = F.conv2d(X.T.reshape(cols, *in_shape), w, stride=conv.stride, padding=conv.padding,
                   dilation=conv.dilation)  # (cols, m, H', W')  # fmt: skip
    return out.reshape(cols, -1).T


def _conv_linear(forms: Forms, conv: nn.Conv2d, in_shape) -> tuple[Forms, int]:
    """``Forms.linear`` for the conv's matrix, applied with conv2d; also the output positions."""
    w = frozen_weight(conv, torch.float64)  # (m, c, kh, kw), mask applied
    n = w[0].numel()
    wa = w.abs()
    mag = forms.mag()
    vecs = _conv_apply(wa, torch.stack([forms.e_w, forms.e_fp, mag], dim=1), in_shape, conv)
    X = torch.cat([forms.T, forms.t[:, None]], dim=1)  # (c*H*W, cols)
    if w.shape[2:] == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0):
        # a 1×1 conv is A ⊗ I: our product as a summation tree rounds with γ_k, k ≈ 32 + log n
        cols = X.shape[1]
        Tt, k_own = tree_matmul(w[:, :, 0, 0], X.reshape(w.shape[1], -1))  # (o, P*cols)
        Tt = Tt.reshape(-1, cols)  # (o*P, cols)
    else:
        Tt, k_own = _conv_apply(w, X, in_shape, conv), n
    # the network's own dot products round with γ_nnz (exact zeros, padding included, are exact)
    nnz = _conv_apply((w != 0).to(w.dtype), (mag > 0).to(w.dtype)[:, None], in_shape, conv)[:, 0]
    if isinstance(conv, BlockedConv2d):  # summed over blocks of channels: fewer roundings
        nnz = nnz.clamp(max=conv_summation_depth(w.shape[1], w.shape[2] * w.shape[3]))
    # the same finishing step as a dense map (Forms.linear), on the conv's own sums
    out = forms._finish_linear([vecs[:, 0], vecs[:, 1], vecs[:, 2], Tt, nnz, k_own], n,
                               blocked=False)  # fmt: skip
    positions = Tt.shape[0] // w.shape[0]
    return out, positions


def _pool(forms: Forms, P: torch.Tensor) -> Forms:
    """An AvgPool2d (dense ``P``, entries fl(1/divisor)): γ_nnz from ``linear`` plus ``2u``."""
    slack = up(2 * forms.u * (P @ forms.mag()), P.shape[1])
    out = forms.linear(P)
    return out._new(out.T, out.t, out.e_w, up(out.e_fp + slack, 1))


def _per_unit(bn: nn.Module, positions: int) -> nn.Module:
    """A BatchNorm1d over flat units with the channel's parameters repeated over positions."""
    if not isinstance(bn, nn.BatchNorm2d):
        return bn
    if bn.training:
        raise ValueError("a BatchNorm2d is in training mode: no bound holds; call net.eval()")
    flat = nn.BatchNorm1d(bn.num_features * positions, eps=bn.eps, dtype=bn.weight.dtype)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(flat, name).copy_(getattr(bn, name).repeat_interleave(positions))
    return flat.eval()


def _fold_slack(target: TargetCNN) -> list[torch.Tensor | None]:
    """Per layer a bound on ``|W_mlp − C P|`` elementwise (None where no pool is folded)."""
    out: list[torch.Tensor | None] = []
    for C, pools, _ in target.dense_layers():
        if not pools:
            out.append(None)
            continue
        M, n = C.abs(), 0
        for P in pools[::-1]:
            n += M.shape[1]
            M = M @ P  # P >= 0
        N = n + len(pools) + 2
        out.append(up(gamma(N) * M, N))
    return out


def _radii(mlp, deltas, radius: float, sigmas) -> list[float]:
    """Bounds on the hidden norms of both ``f`` and ``f_mlp`` (the target_radii formula)."""
    radii = [float(radius)]
    for l in range(mlp.depth - 1):
        W, b, D, R = mlp.weights[l], mlp.biases[l], deltas[l], radii[-1]
        rows = W.clamp_min(0.0) if l > 0 else W  # h_l >= 0 after a ReLU
        dn = rownorm(D) if D is not None else torch.zeros_like(b)
        pre = up((rownorm(rows) + dn) * R, 3) + b + up(U64 * b.abs(), 1)
        per_row = float(up(pre.clamp_min(0.0).norm(), pre.numel()))
        dF = 0.0 if D is None else float(up(D.norm(), D.numel()))
        spectral = float(up((sigmas[l] + dF) * R + up(b.norm(), b.numel()), 4))
        radii.append(min(per_row, spectral))
    return radii


def _definition_error(mlp, deltas, radii) -> float:
    """A bound on ``|f_mlp(x) − f(x)|`` over the ball (pool folding rounding)."""
    err = torch.zeros(mlp.d_in, dtype=torch.float64)
    for l, (W, D) in enumerate(zip(mlp.weights, deltas, strict=True)):
        fresh = rownorm(D) * radii[l] if D is not None else 0.0
        err = up(W.abs() @ err + fresh, W.shape[1] + 2)
    return float(err.max())


def _cnn_rounding(target: TargetCNN, radii) -> float:
    """A bound on ``|fl(f(x)) − f(x)|`` for the target CNN evaluated by torch in float64."""
    err = torch.zeros(target.d_in, dtype=torch.float64)
    for l, (C, pools, b) in enumerate(target.dense_layers()):
        R = radii[l]
        for P in pools:
            k = int((P != 0).sum(dim=1).max())
            Pe = P @ err
            err = up((1 + 2 * U64) * (Pe + gamma(k + 1) * (rownorm(P) * R + Pe)), P.shape[1] + 4)
            R = float(up(spectral_norm_upper(P) * R * (1 + 2 * U64), 2))
        n = target.weights[l][0].numel()  # terms of each dot product (zero padding included)
        Ca = C.abs()
        Ce = Ca @ err
        dot = up(rownorm(C) * R + Ce, C.shape[1])
        err = up(Ce + gamma(n + 1) * (dot + b.abs()), C.shape[1] + 2)
    return float(err.max())


def cnn_error_bound(net: NormCNN, target: TargetCNN, radius: float) -> ErrorBound:
    """Prove a bound on ``max_{‖x‖ ≤ radius} ‖net(x) − target(x)‖∞`` (see the module docstring).

    Raises
    ------
    TypeError
        ``net`` is not a NormCNN.
    ValueError
        The network's layers do not match the target's, or a BatchNorm is in training mode.
    """
    if not isinstance(net, NormCNN):
        raise TypeError(f"a proven bound for a TargetCNN needs a NormCNN, got {type(net).__name__}")
    kinds = [layer["kind"] for layer in target.layers]
    if net.kinds != kinds or net.input_shape != target.input_shape:
        raise ValueError(
            f"the network's layers {net.kinds} (input {net.input_shape}) do not match the "
            f"target's {kinds} (input {target.input_shape}): not a construction of it"
        )
    mlp = target.to_mlp()
    deltas = _fold_slack(target)
    sigmas = [spectral_norm_upper(W) for W in mlp.weights]
    radii = _radii(mlp, deltas, radius, sigmas)
    u = torch.finfo(next(net.parameters()).dtype).eps / 2
    d = target.d_in
    eye, zeros = torch.eye(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    forms = Forms(eye, zeros, zeros.clone(), zeros.clone(),
                  carry=(zeros.clone(), zeros.clone(), 0.0, 0.0), radius=radii[0], nonneg=False,
                  u=u)  # fmt: skip
    log: list[dict] = []
    out = None
    for l, layer in enumerate(target.layers):
        for p in layer["pools"]:
            forms = _pool(forms, pool_matrix(p))
        wide, narrow = net.wide[l], net.narrow[l]
        if layer["kind"] == "conv":
            shape = layer["pools"][-1].out_shape if layer["pools"] else layer["in_shape"]
            forms, pos = _conv_linear(forms, wide, shape)
            forms = forms.norm(_per_unit(net.wide_norms[l], pos)).relu(f"layer {l} wide", log)
            forms, pos = _conv_linear(forms, narrow, (wide.out_channels, *layer["out_shape"][1:]))
            forms = forms.norm(_per_unit(net.narrow_norms[l], pos))
        else:
            forms = forms.wide_pair(
                frozen_weight(wide, torch.float64), net.wide_norms[l],
                frozen_weight(narrow, torch.float64), blocked_b=sums_in_blocks(wide),
                blocked_a=sums_in_blocks(narrow), stage=f"layer {l} wide", log=log,
            ).norm(net.narrow_norms[l])  # fmt: skip
        W, b = mlp.weights[l], mlp.biases[l]
        if forms.t.shape[0] != W.shape[0]:
            raise ValueError(
                f"layer {l} of the network has {forms.t.shape[0]} outputs, the target {W.shape[0]}"
            )
        carriers = torch.arange(W.shape[0])
        if l == target.depth - 1:
            out = forms.carried_error(W, b, carriers, sigmas[l])
        else:
            forms = forms.target_relu(W, b, carriers, radii[l + 1], f"layer {l} output", log,
                                      sigmas[l])  # fmt: skip
    assert out is not None
    tr = _definition_error(mlp, deltas, radii) + _cnn_rounding(target, radii)
    w_part, fp_part = float(out[0].max()), float(out[1].max())
    total = w_part + fp_part + tr
    finite = math.isfinite(total)
    return ErrorBound(
        bound=float(up(total, 3)) if finite else math.inf, weights=w_part, rounding=fp_part,
        target_rounding=tr, dtype=str(next(net.parameters()).dtype).replace("torch.", ""),
        radius=float(radius), relu=log,
    )  # fmt: skip



def flat_data(data: object, target: TargetCNN) -> object:
    """``data`` of shape (N, C, H, W) flattened to (N, C·H·W); anything else unchanged."""
    shape = getattr(data, "shape", None)
    if shape is not None and len(shape) == 4 and tuple(shape[1:]) == target.input_shape:
        return data.reshape(shape[0], -1)  # type: ignore[union-attr]
    return data
