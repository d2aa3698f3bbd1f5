"""Constructions: set the normalization parameters of a frozen random net to a target.

``reconstruct`` is the entry point; one module per theorem does the work:
:mod:`normonly.construct.wide` (Theorem 1, also sparse weights, Theorem 3) and
:mod:`normonly.construct.residual` (Theorem 2, width traded for depth).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from normonly._checks import (
    check_density,
    check_device,
    check_int,
    check_overparam,
    check_radius,
)
from normonly.certificate import Certificate, LayerCertificate, verify
from normonly.errors import UncertifiedDtypeWarning
from normonly.network import check_norm
from normonly.target import TargetMLP

__all__ = ["reconstruct", "Reconstruction", "METHODS"]

METHODS = ("wide", "residual")


@dataclass
class Reconstruction:
    """What :func:`reconstruct` returns: the network and its certificate."""

    net: nn.Module
    certificate: Certificate
    layers: list[LayerCertificate] = field(default_factory=list)
    wall_time_s: float = 0.0


def reconstruct(
    target: TargetMLP | nn.Module,
    *,
    method: str = "wide",
    radius: float = 1.0,
    overparam: float = 1.0,
    width: int | None = None,
    uniform_width: bool = False,
    norm: str = "batchnorm",
    density: float = 1.0,
    k: int | None = None,
    seed: int = 0,
    solver: str = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    n_points: int = 10_000,
    verify_seed: int = 0,
    net: nn.Module | None = None,
) -> Reconstruction:
    """Build a frozen random network and set its normalizations so it equals ``target``.

    Parameters
    ----------
    target : TargetMLP or nn.Sequential of Linear/ReLU
    method : {"wide", "residual"}
        ``"wide"``: Theorem 1 (width ``overparam * d_in * d_out`` per target layer);
        ``"residual"``: Theorem 2 (skip connections, ``ceil(d_in/k)`` blocks of hidden width
        ``overparam * d_out * k`` per target layer).
    radius : float
        Exactness is guaranteed on ``‖x‖ ≤ radius``.
    overparam : float
        Wide width relative to the minimum ``d_in*d_out`` (>= 1; 2 is much better conditioned).
    width : int, optional
        Explicit wide width (wide method); must be >= d_in*d_out of every layer.
    uniform_width : bool
        Wide method: all random layers (but the output) of one width.
    norm : {"batchnorm", "affine"}
        BatchNorm1d in eval mode, or a plain per-unit affine map.
    density : float
        Probability of keeping each frozen random weight (Theorem 3).
    k : int, optional
        Partition size of the residual method: 1 <= k <= the largest d_in of the target's
        layers, clipped to each layer's d_in (default: each layer's d_in, one block per layer).
    seed : int
        Seed of the frozen random weights.
    solver : {"auto", "svd", "qr", "lu", "mixed", "cg", "lsqr"}
        Khatri-Rao solver (see :mod:`normonly.linalg.solve`).
    device : str or torch.device
        Where to solve and put the network ("cuda" works when available).
    dtype : torch.dtype
        Dtype of the returned network; the construction is always solved in float64, and only
        float64 is certified (a lower dtype warns with the error it measured).
    n_points, verify_seed : int
        Points and seed of the certificate's error measurement.
    net : nn.Module, optional
        Your own frozen network of the right architecture to set (e.g. with BatchNorm running
        statistics of its own).

    Returns
    -------
    Reconstruction
        ``.net`` (the module) and ``.certificate``.

    Raises
    ------
    InfeasibleError (ValueError)
        Too narrow, rank-deficient sparse system, LayerNorm semantics.
    ValueError, TypeError
        Bad arguments or a target that is not a ReLU MLP.

    Example
    -------
    >>> f = TargetMLP.random([3, 4, 2], seed=0)
    >>> rec = reconstruct(f, radius=1.0, n_points=200)
    >>> rec.certificate.passed
    True
    """
    t0 = time.perf_counter()
    if isinstance(target, nn.Module):
        target = TargetMLP.from_torch(target)
    if not isinstance(target, TargetMLP):
        raise TypeError(
            f"target must be a TargetMLP or an nn.Sequential of Linear/ReLU, got "
            f"{type(target).__name__}"
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    radius = check_radius(radius)
    overparam = check_overparam(overparam)
    density = check_density(density)
    norm = check_norm(norm)
    seed = check_int("seed", seed, minimum=0)
    device = check_device(device)
    if width is not None:
        width = check_int("width", width, minimum=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if method == "wide":
        from normonly.construct.wide import build_wide

        if k is not None:
            raise ValueError("k (partition size) applies to method='residual' only")
        net, layers = build_wide(
            target, radius=radius, overparam=overparam, width=width,
            uniform_width=uniform_width, norm=norm, density=density, seed=seed,
            solver=solver, device=device, net=net,
        )  # fmt: skip
    else:
        from normonly.construct.residual import build_residual

        if width is not None or uniform_width:
            raise ValueError("width and uniform_width apply to method='wide' only; use k")
        net, layers = build_residual(
            target, radius=radius, overparam=overparam, k=k, norm=norm, density=density,
            seed=seed, solver=solver, device=device, net=net,
        )  # fmt: skip
    net.meta = {
        "method": method,
        "radius": radius,
        "target_widths": target.widths,
        "layers": [lc.__dict__ for lc in layers],
    }
    if dtype != torch.float64:
        net = net.to(dtype)
    cert = verify(net, target, radius=radius, n_points=n_points, seed=verify_seed, layers=layers)
    if dtype != torch.float64:
        warnings.warn(
            f"the network was cast to {dtype}: exactness is certified in float64 only; the "
            f"measured max relative error in {dtype} is {cert.max_rel_error:.2e}",
            UncertifiedDtypeWarning,
            stacklevel=2,
        )
    cert.wall_time_s = time.perf_counter() - t0
    return Reconstruction(net=net, certificate=cert, layers=layers, wall_time_s=cert.wall_time_s)
