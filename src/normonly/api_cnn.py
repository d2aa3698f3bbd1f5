"""``reconstruct`` for convolutional targets: build a :class:`NormCNN`, then certify it.

:func:`normonly.reconstruct` hands a :class:`~normonly.nets.cnn.TargetCNN` (or an
``nn.Sequential`` holding a ``Conv2d``) to :func:`reconstruct_cnn`, which returns the same
:class:`~normonly.reconstruction.Reconstruction` as for an MLP: the network and its
certificate (sampled error inside the ball of flattened inputs and on its sphere, and the
proven bound of
:mod:`normonly.certificate.cnn`).
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import nn

from normonly._checks import check_radius, check_solve_rtol, domain_from_data
from normonly.errors import UncertifiedDtypeWarning
from normonly.nets.cnn import TargetCNN
from normonly.reconstruction import Reconstruction

__all__ = ["is_cnn", "reconstruct_cnn"]

_MLP_ONLY = {"width": None, "uniform_width": False, "k": None, "net": None}


def is_cnn(target: object) -> bool:
    """True for a TargetCNN or a torch module that contains an ``nn.Conv2d``."""
    if isinstance(target, TargetCNN):
        return True
    return isinstance(target, nn.Module) and any(
        isinstance(m, nn.Conv2d) for m in target.modules()
    )


def _as_target(target: object, data: object) -> TargetCNN:
    if isinstance(target, TargetCNN):
        return target
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            "a torch module with Conv2d layers needs its input shape: pass "
            "TargetCNN.from_torch(module, input_shape=(C, H, W)) as the target, or data= of "
            "shape (N, C, H, W)"
        )
    return TargetCNN.from_torch(target, input_shape=tuple(int(v) for v in shape[1:]))


def reconstruct_cnn(target: object, *, method: str = "wide", radius=None, data=None,
                    overparam=1.0, norm: str = "batchnorm", density=1.0, seed=0,
                    solver: str = "auto", device="cpu", dtype=torch.float64,
                    n_points: int | None = None, verify_seed: int = 0,
                    **mlp_only: object):  # fmt: skip
    """The convolutional branch of :func:`normonly.reconstruct` (same arguments and result).

    Raises
    ------
    ValueError
        An option that applies to MLPs only (``method="residual"``, ``width``,
        ``uniform_width``, ``k``, ``net``, ``norm="affine"``), or no domain.
    """
    from normonly.certificate.cnn import flat_data
    from normonly.certificate.verify import verify
    from normonly.construct.cnn import build_cnn
    from normonly.construct.record import construction_meta
    from normonly.construct.spec import NO_DOMAIN

    t0 = time.perf_counter()
    target = _as_target(target, data)
    bad = [k for k, v in mlp_only.items() if k in _MLP_ONLY and v != _MLP_ONLY[k]]
    if method != "wide" or norm != "batchnorm" or bad:
        what = bad + (["method"] if method != "wide" else []) + (["norm"] if norm != "batchnorm"
                                                                   else [])  # fmt: skip
        raise ValueError(
            f"{', '.join(what)}: not available for a convolutional target; a CNN is rebuilt by "
            "the wide construction with BatchNorm2d (set overparam, density, seed)"
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    X, domain = None, "radius given"
    if data is not None:
        radius, X, domain = domain_from_data(target.d_in, radius, flat_data(data, target))
    if radius is None:
        raise ValueError(NO_DOMAIN.replace("(n, d_in)", "(N, C, H, W) or (N, C*H*W)"))
    radius = check_radius(radius)
    net, layers = build_cnn(target, radius=radius, overparam=overparam, density=density,
                            solve_rtol=_solve_rtol(mlp_only.get("solve_rtol")),
                            seed=seed, solver=solver, device=device)  # fmt: skip
    net.meta = construction_meta("cnn", radius, target.widths, layers, domain)
    if dtype != torch.float64:
        net = net.to(dtype)
    cert = verify(net, target, radius=radius, data=X, n_points=n_points, seed=verify_seed,
                  layers=layers, method="cnn")  # fmt: skip
    if dtype != torch.float64:
        warnings.warn(
            f"the network was cast to {dtype}: exactness is certified in float64 only; the "
            f"measured max relative error in {dtype} is {cert.max_rel_error:.2e}",
            UncertifiedDtypeWarning,
            stacklevel=3,
        )
    cert.wall_time_s = time.perf_counter() - t0
    timings = {"solve": sum(c.wall_time_s for c in layers), "measure": cert.measure_time_s,
               "bound": cert.bound_time_s, "total": cert.wall_time_s}  # fmt: skip
    return Reconstruction(net=net, certificate=cert, layers=layers, wall_time_s=cert.wall_time_s,
                          timings=timings)  # fmt: skip


def _solve_rtol(value: object) -> float | None:
    return None if value is None else check_solve_rtol(value)
