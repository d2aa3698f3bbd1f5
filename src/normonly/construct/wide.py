"""Wide construction (Theorem 1 of Giannou, Rajput, Papailiopoulos;
docs/theory.md#wide-construction).

Every target layer ``u ↦ σ(W u + b)`` (``‖u‖ ≤ R_in``) is rebuilt by two frozen random layers,
a wide one ``B ∈ R^{m×d_in}`` (m ≥ d_in·d_out) and a narrow one ``A ∈ R^{d_out×m}``::

    u ──► B ──► γ ⊙ · + β ──► σ (always on) ──► A ──► 1 ⊙ · + β' ──► σ  ==  σ(W u + b)

1. scales: ``A diag(γ) B = W`` is the Khatri-Rao system ``K γ = vec(W)`` (minimum-norm γ);
2. ReLU on: ``β_k = (1 + margin) |γ_k| ‖B[k,:]‖ R_in`` keeps every wide pre-activation ≥ 0
   (after the first layer the input is a ReLU output, ``u ≥ 0``, and ``‖(γ_k B[k,:])^−‖``
   replaces ``|γ_k| ‖B[k,:]‖``);
3. bias: ``β' = b − A β`` cancels the shifts and adds the target bias;
4. next bound: ``R_out`` from ``‖σ(Wu + b)‖ ≤ ‖(|W_i| R_in + b_i)_+‖`` and ``‖W‖₂ R_in + ‖b‖``.

The output layer's narrow random layer has no ReLU. In the *uniform-width* variant every random
layer but the last has the same width M; a narrow layer switches off all but ``d_out`` units with
γ = β = 0, and the next wide layer sees only those.
"""

from __future__ import annotations

import time

import torch

from normonly.construct.layout import wide_widths
from normonly.construct.record import LayerCertificate, construction_meta
from normonly.construct.spec import ConstructionSpec
from normonly.linalg.solve import solve_scales
from normonly.linalg.sparse_check import require_full_row_rank
from normonly.nets.target import TargetMLP
from normonly.nets.wide import NormNet

__all__ = ["build_wide", "relu_on_shift", "relu_on_need", "next_radius", "RELU_MARGIN"]

RELU_MARGIN = 2.0**-6  # relative slack on the always-on shifts, far above round-off


def relu_on_need(
    gamma: torch.Tensor, B: torch.Tensor, radius_in: float, *, nonneg: bool = False
) -> torch.Tensor:
    """``max_u −γ_k (B u)_k`` over ``‖u‖ ≤ R_in`` (and ``u ≥ 0`` if ``nonneg``), shape (m,).

    Over the ball it is ``|γ_k| ‖B_k‖ R_in``; when the input is a ReLU output (``u ≥ 0``) only
    the negative part of ``γ_k B_k`` can pull the pre-activation down: ``‖(γ_k B_k)^−‖ R_in``,
    about ``1/√2`` of it — smaller shifts, less float64 cancellation.
    """
    if not nonneg:
        return gamma.abs() * B.norm(dim=1) * radius_in
    rows = max(1, (32 * 2**20) // (8 * max(1, B.shape[1])))  # blocks of rows: O(32 MiB) extra
    need = torch.empty_like(gamma)
    for s in range(0, B.shape[0], rows):
        part = (gamma[s : s + rows, None] * B[s : s + rows]).clamp_(max=0.0)
        need[s : s + rows] = part.norm(dim=1)
    return need * radius_in


def relu_on_shift(
    gamma: torch.Tensor, B: torch.Tensor, radius_in: float, *, nonneg: bool = False
) -> torch.Tensor:
    """β with ``γ_k (B u)_k + β_k ≥ 0`` for all ``‖u‖ ≤ R_in`` (``u ≥ 0`` if ``nonneg``).

    The always-on shifts (step 2 of the construction), with a relative margin ``RELU_MARGIN``.
    """
    return (1.0 + RELU_MARGIN) * relu_on_need(gamma, B, radius_in, nonneg=nonneg)


def next_radius(W: torch.Tensor, b: torch.Tensor, radius_in: float) -> float:
    """A bound on ``‖σ(W u + b)‖`` over ``‖u‖ ≤ R_in`` (tightened per row)."""
    per_row = torch.clamp(W.norm(dim=1) * radius_in + b, min=0.0).norm()  # σ is monotone
    spectral = torch.linalg.matrix_norm(W, ord=2) * radius_in + b.norm()
    return float(torch.minimum(per_row, spectral))


DEVICE_DRAW_MIN = 1 << 27  # frozen weights from which a GPU construction draws them on the GPU


def _draw_device(widths: list[int], device: torch.device) -> torch.device | None:
    """Where to draw the frozen weights: the CPU (the same seed gives the same network on every
    device), except for GPU constructions of more than ``DEVICE_DRAW_MIN`` weights (1 GiB in
    float64; a width-512 layer at overparam 2 has 5·10⁸), which one CPU generator would take
    minutes to draw: those are drawn by the GPU's own generator, another random stream."""
    count = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return device if device.type == "cuda" and count > DEVICE_DRAW_MIN else None


def build_wide(
    target: TargetMLP,
    spec: ConstructionSpec | None = None,
    *,
    net: NormNet | None = None,
    timings: dict[str, float] | None = None,
    **options: object,
) -> tuple[NormNet, list[LayerCertificate]]:
    """Set the normalization parameters of a frozen random ``NormNet`` to reproduce ``target``.

    Parameters
    ----------
    target : TargetMLP
    spec : ConstructionSpec, optional
        The validated options; without it, ``options`` (the keywords of
        :func:`normonly.reconstruct`: radius, overparam, width, uniform_width, norm, density,
        seed, solver, device, and ``least_squares`` for a best fit below ``d_in*d_out``) are
        validated into one.
    net : NormNet, optional
        A user's own NormNet (e.g. with non-trivial BatchNorm running statistics) with the
        right widths.
    timings : dict, optional
        Filled with seconds spent: ``frozen_weights`` (drawing the random network) and
        ``solve`` (the Khatri-Rao solves, all layers).

    Returns
    -------
    net : NormNet (float64, on ``spec.device``)
    layers : list of LayerCertificate, one per target layer
    """
    if spec is None:
        spec = ConstructionSpec.make(target, method="wide", **options)
    elif options:
        raise TypeError(f"give a spec or options, not both (got {sorted(options)})")
    widths = wide_widths(
        target, overparam=spec.overparam, width=spec.width, uniform_width=spec.uniform_width,
        least_squares=spec.least_squares,
    )  # fmt: skip
    t0 = time.perf_counter()
    if net is None:
        net = NormNet(widths, norm=spec.norm, density=spec.density, seed=spec.seed,
                      device=_draw_device(widths, spec.device))  # fmt: skip
    elif net.widths != widths:
        raise ValueError(
            f"the given NormNet has widths {net.widths}, but this target with "
            f"overparam={spec.overparam} needs {widths}"
        )
    device, radius, solver = spec.device, spec.radius, spec.solver
    least_squares = spec.least_squares
    net = net.to(device=device, dtype=torch.float64)
    dev = torch.device(device)
    t_weights, t_solve = time.perf_counter() - t0, 0.0
    certs: list[LayerCertificate] = []
    radius_in = radius
    for l, (W, b) in enumerate(zip(target.weights, target.biases, strict=True)):
        d_out, d_in = W.shape
        W, b = W.to(dev), b.to(dev)
        B = net.weight(2 * l)[:, :d_in]  # (m, d_in): a uniform net's extra inputs are 0
        A_full = net.weight(2 * l + 1)  # (m_next, m)
        A = A_full[:d_out]  # (d_out, m): the narrow units that carry the output
        if not least_squares and (bool((A == 0).any()) or bool((B == 0).any())):
            require_full_row_rank(A, B, layer=l)  # sparse (Theorem 3): raises with the fix
        gamma, info = solve_scales(A, B, W, solver=solver, allow_rank_deficient=least_squares,
                                   rtol=spec.solve_rtol)  # fmt: skip
        t_solve += info.wall_time_s
        need = relu_on_need(gamma, B, radius_in, nonneg=l > 0)  # layer l > 0: input ≥ 0
        beta = (1.0 + RELU_MARGIN) * need  # = relu_on_shift, the need computed once
        net.set_affine(2 * l, gamma, beta)
        # narrow layer: unit scale on the d_out carriers, everything else switched off
        g_out = torch.zeros(A_full.shape[0], dtype=W.dtype, device=dev)
        b_out = torch.zeros_like(g_out)
        g_out[:d_out] = 1.0
        b_out[:d_out] = b - A @ beta  # cancels the always-on shifts, adds the target bias
        net.set_affine(2 * l + 1, g_out, b_out)
        margin = float((beta - need).min())
        certs.append(
            LayerCertificate.from_solve(
                info, layer=l, block=0, relu_margin=margin, radius_in=radius_in
            )
        )
        radius_in = next_radius(W, b, radius_in)
    net.meta = construction_meta("wide", radius, target.widths, certs)
    if timings is not None:
        timings.update(frozen_weights=t_weights, solve=t_solve)
    return net, certs
