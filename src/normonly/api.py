"""The front door: ``reconstruct`` validates its arguments, builds the network, certifies it.

One module per theorem does the building (:mod:`normonly.construct.wide` — Theorem 1, also with
sparse weights, Theorem 3 — and :mod:`normonly.construct.residual` — Theorem 2); the certificate
(:mod:`normonly.certificate`) proves how well the result reproduces the target.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from normonly._checks import (
    DATA_MARGIN,
    check_data,
    check_density,
    check_device,
    check_int,
    check_overparam,
    check_radius,
    radius_from_data,
)
from normonly.certificate.record import Certificate
from normonly.certificate.verify import verify
from normonly.construct.layout import check_k, scaled_width, wide_widths
from normonly.construct.record import LayerCertificate
from normonly.errors import InfeasibleError, UncertifiedDtypeWarning
from normonly.nets.layers import check_norm
from normonly.nets.target import TargetMLP

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
    radius: float | None = None,
    data: object | None = None,
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
        Exactness is guaranteed and certified on ``‖x‖ ≤ radius``. Give ``radius`` or ``data``
        (there is no default: a silently wrong domain is the easiest way to a wrong network).
    data : tensor or array of shape (n, d_in)
        Your inputs: the radius becomes their largest norm times ``1 + DATA_MARGIN`` (1%,
        recorded in ``net.meta``), and the certificate checks the error on them too.
    overparam : float
        Width relative to the minimum ``d_in*d_out`` (>= 1). 2 is much better conditioned than
        1: smaller γ, smaller always-on shifts, and so a smaller proven error bound (at 1 the
        bound exceeds the default tolerance, 1e-9 of the output scale, for a few percent of
        random depth-4 targets although the measured error is ~1e-12; at 2 it did not in 1,200
        random targets).
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
    overparam = _check_overparam_for(target, overparam)
    density = check_density(density)
    norm = check_norm(norm)
    seed = check_int("seed", seed, minimum=0)
    device = check_device(device)
    if width is not None:
        width = check_int("width", width, minimum=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if method == "wide":

        if k is not None:
            raise ValueError("k (partition size) applies to method='residual' only")
        wide_widths(target, overparam=overparam, width=width, uniform_width=uniform_width)
    else:

        if width is not None or uniform_width:
            raise ValueError("width and uniform_width apply to method='wide' only; use k")
        check_k(k, target)
    radius, X, domain = _domain(target, radius, data)
    if method == "wide":
        from normonly.construct.wide import build_wide

        net, layers = build_wide(
            target, radius=radius, overparam=overparam, width=width,
            uniform_width=uniform_width, norm=norm, density=density, seed=seed,
            solver=solver, device=device, net=net,
        )  # fmt: skip
    else:
        from normonly.construct.residual import build_residual

        net, layers = build_residual(
            target, radius=radius, overparam=overparam, k=k, norm=norm, density=density,
            seed=seed, solver=solver, device=device, net=net,
        )  # fmt: skip
    net.meta = {
        "method": method,
        "radius": radius,
        "domain": domain,
        "target_widths": target.widths,
        "layers": [lc.__dict__ for lc in layers],
    }
    if dtype != torch.float64:
        net = net.to(dtype)
    cert = verify(
        net, target, radius=radius, data=X, n_points=n_points, seed=verify_seed, layers=layers
    )
    if dtype != torch.float64:
        warnings.warn(
            f"the network was cast to {dtype}: exactness is certified in float64 only; the "
            f"measured max relative error in {dtype} is {cert.max_rel_error:.2e}",
            UncertifiedDtypeWarning,
            stacklevel=2,
        )
    cert.wall_time_s = time.perf_counter() - t0
    return Reconstruction(net=net, certificate=cert, layers=layers, wall_time_s=cert.wall_time_s)


def _domain(target: TargetMLP, radius: object, data: object) -> tuple[float, object, str]:
    """The certified radius from ``radius`` or ``data`` (exactly one), and how it was chosen."""
    if radius is None and data is None:
        raise ValueError(
            "reconstruct needs the input domain: pass radius=R (exactness on ||x|| <= R) or "
            "data=X (your inputs, shape (n, d_in); R becomes their largest norm + 1%); there is "
            "no default, because a network certified on the wrong ball is silently wrong on "
            "your data"
        )
    if data is None:
        return check_radius(radius), None, "radius given"
    X = check_data(data, target.d_in)
    r_data = radius_from_data(X)
    if radius is not None:
        r = check_radius(radius)
        if r * (1 + 1e-12) < float(X.norm(dim=1).max()):
            raise ValueError(
                f"radius={r:g} is smaller than the largest norm of the data, "
                f"{float(X.norm(dim=1).max()):.6g}: the data would leave the certified ball; "
                f"drop radius (data=X alone gives R = {r_data:.6g}) or use a larger one"
            )
        return r, X, f"radius given, {X.shape[0]} data points checked"
    return r_data, X, (
        f"from data: {X.shape[0]} points, largest norm x (1 + {DATA_MARGIN:g})"
    )


def _check_overparam_for(target: TargetMLP, overparam: object) -> float:
    """``check_overparam``, naming the width the target needs when overparam < 1."""
    try:
        return check_overparam(overparam)
    except ValueError as e:
        try:
            value = float(overparam)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise e from None
        if not 0 < value < 1:
            raise
        need = [w.shape[0] * w.shape[1] for w in target.weights]
        i = max(range(len(need)), key=lambda j: need[j])
        d_out, d_in = target.weights[i].shape
        raise InfeasibleError(
            f"{e}; for this target that is width {scaled_width(value, need[i])} for the "
            f"{d_in}->{d_out} layer {i}, which needs width >= {need[i]} (= d_in*d_out) to be "
            "reproduced exactly"
        ) from None
