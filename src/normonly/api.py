"""The front door: ``reconstruct`` validates its arguments, builds the network, certifies it.

One module per theorem does the building (:mod:`normonly.construct.wide` — Theorem 1, also with
sparse weights, Theorem 3 — and :mod:`normonly.construct.residual` — Theorem 2); the certificate
(:mod:`normonly.certificate`) proves how well the result reproduces the target.
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import nn

from normonly._checks import domain_from_data
from normonly.api_cnn import is_cnn, reconstruct_cnn
from normonly.certificate.verify import verify
from normonly.construct.record import construction_meta
from normonly.construct.residual import build_residual
from normonly.construct.spec import METHODS, ConstructionSpec
from normonly.construct.wide import build_wide
from normonly.errors import InfeasibleError, UncertifiedDtypeWarning
from normonly.nets.target import TargetMLP
from normonly.reconstruction import Reconstruction

__all__ = ["reconstruct", "Reconstruction", "METHODS"]



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
    solve_rtol: float | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    n_points: int | None = None,
    verify_seed: int = 0,
    net: nn.Module | None = None,
) -> Reconstruction:
    """Build a frozen random network and set its normalizations so it equals ``target``.

    Parameters
    ----------
    target : TargetMLP or nn.Sequential of Linear/ReLU, or a TargetCNN
        A convolutional target (or an ``nn.Sequential`` with Conv2d and ``data`` of shape
        (N, C, H, W)) is rebuilt as a :class:`~normonly.nets.normcnn.NormCNN`
        (:mod:`normonly.api_cnn`).
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
    solve_rtol : float, optional
        Relative residual ``‖K γ − vec(W)‖ / ‖W‖`` at which the *iterative* solvers (large
        layers: width ≳ 48 at overparam 2) stop; direct ones always solve to round-off. Default:
        float64 round-off (64 eps, ~1e-14). A looser value saves CG iterations (1e-12: about 13%
        of the solve at width 128; 1e-10: about 28%) but its error is amplified by the layers
        after it and measured against the output scale: at 1e-10 a two-layer target's proven
        bound already exceeded the default tolerance. The certificate judges the result either
        way.
    device : str or torch.device
        Where to solve and put the network ("cuda" works when available).
    dtype : torch.dtype
        Dtype of the returned network; the construction is always solved in float64, and only
        float64 is certified (a lower dtype warns with the error it measured).
    n_points, verify_seed : int
        Points and seed of the certificate's error measurement (default points: 10,000, down
        to 1,000 for very wide networks, see :func:`normonly.certificate.verify.default_points`).
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
    if is_cnn(target):  # convolutional targets: normonly.api_cnn
        return reconstruct_cnn(
            target, method=method, radius=radius, data=data, overparam=overparam, width=width,
            uniform_width=uniform_width, norm=norm, density=density, k=k, seed=seed,
            solver=solver, device=device, dtype=dtype, n_points=n_points,
            verify_seed=verify_seed, net=net, solve_rtol=solve_rtol,
        )  # fmt: skip
    t0 = time.perf_counter()
    if isinstance(target, nn.Module):
        target = TargetMLP.from_torch(target)
    if not isinstance(target, TargetMLP):
        raise TypeError(
            f"target must be a TargetMLP or an nn.Sequential of Linear/ReLU, got "
            f"{type(target).__name__}"
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    X, domain = None, "radius given"
    if data is not None:
        radius, X, domain = domain_from_data(target.d_in, radius, data)
    spec = ConstructionSpec.make(
        target, method=method, radius=radius, overparam=overparam, width=width,
        uniform_width=uniform_width, norm=norm, density=density, k=k, seed=seed,
        solver=solver, device=device, solve_rtol=solve_rtol,
    )  # fmt: skip
    radius = spec.radius
    _check_scale(target, spec.radius)
    if net is None:
        _check_memory(target, spec)
    timings: dict[str, float] = {}
    t_build = time.perf_counter()
    timings["checks"] = t_build - t0
    if method == "wide":
        net, layers = build_wide(target, spec, net=net, timings=timings)
    else:
        net, layers = build_residual(target, spec, net=net)
        timings["solve"] = sum(c.wall_time_s for c in layers)
    net.meta = construction_meta(spec.method, radius, target.widths, layers, domain)
    if dtype != torch.float64:
        net = net.to(dtype)
    t_verify = time.perf_counter()
    timings["build"] = t_verify - t_build - timings.get("frozen_weights", 0.0) - timings["solve"]
    cert = verify(
        net, target, radius=radius, data=X, n_points=n_points, seed=verify_seed, layers=layers
    )
    timings.update(measure=cert.measure_time_s, bound=cert.bound_time_s)
    if dtype != torch.float64:
        warnings.warn(
            f"the network was cast to {dtype}: exactness is certified in float64 only; the "
            f"measured max relative error in {dtype} is {cert.max_rel_error:.2e}",
            UncertifiedDtypeWarning,
            stacklevel=2,
        )
    cert.wall_time_s = timings["total"] = time.perf_counter() - t0
    return Reconstruction(net=net, certificate=cert, layers=layers, wall_time_s=cert.wall_time_s,
                          timings=timings)  # fmt: skip


def _check_memory(target: TargetMLP, spec: ConstructionSpec) -> None:
    """Refuse, before allocating, a network that cannot fit in this machine's memory."""
    from normonly._files import available_memory
    from normonly.construct.layout import frozen_count

    n = frozen_count(target, method=spec.method, overparam=spec.overparam, width=spec.width,
                     uniform_width=spec.uniform_width, k=spec.k)  # fmt: skip
    need = n * 8 * (2 if spec.density < 1 else 1)  # float64 weights (and masks)
    avail = available_memory()
    if avail is not None and need > avail // 2:
        raise InfeasibleError(
            f"the {spec.method} construction of this target (widths {target.widths}) needs "
            f"{n:,} frozen weights, {need / 2**30:,.1f} GiB in float64, more than this machine "
            f"can hold ({avail / 2**30:.1f} GiB available): use a smaller target, or a smaller "
            "overparam (>= 1)"
        )


MAX_VALUE = 1e100  # target values beyond this on the ball: the construction's products overflow


def _check_scale(target: TargetMLP, radius: float) -> None:
    """Refuse a target whose values on the ball are too large for float64 (or overflow)."""
    import math

    from normonly.certificate.rigorous import target_radii

    with torch.no_grad():
        radii = target_radii(target, radius)
        W, b = target.weights[-1], target.biases[-1]
        out = float((W.norm(dim=1) * radii[-1] + b.abs()).max())
    worst = max([*radii, out])
    if not math.isfinite(worst) or worst > MAX_VALUE:
        shown = "overflows float64" if not math.isfinite(worst) else f"reaches {worst:.3g}"
        raise InfeasibleError(
            f"the target's values on the ball ||x|| <= {radius:g} are too large for float64: "
            f"the bound on its hidden and output values {shown} (the limit is {MAX_VALUE:g}, "
            "beyond which the construction's products overflow); rescale the target's weights "
            "or the inputs"
        )
