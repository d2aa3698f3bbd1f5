"""Validation helpers used at the public boundary (scikit-learn style messages)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


__all__ = [
    "check_radius",
    "check_overparam",
    "check_density",
    "check_finite",
    "check_int",
    "check_device",
    "check_rtol",
    "check_data",
    "radius_from_data",
    "DATA_MARGIN",
]

# Radii beyond this make the ReLU-on shifts (proportional to R) swamp float64 precision.
MAX_RADIUS = 1e12


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_radius(radius: object, name: str = "radius") -> float:
    """Return ``radius`` as a float after checking 0 < radius <= MAX_RADIUS."""
    r = _as_float(name, radius)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(
            f"{name} must be a finite number > 0 (the radius R of the input ball ||x|| <= R), "
            f"got {radius!r}; e.g. radius=1.0, or the largest input norm of your data"
        )
    if r > MAX_RADIUS:
        raise ValueError(
            f"{name}={r:g} is too large to certify exactness in float64 (the shifts grow like R "
            f"and cancel catastrophically): use radius <= {MAX_RADIUS:g}, or rescale your inputs"
        )
    return r


def check_overparam(overparam: object) -> float:
    """Return ``overparam`` as a float after checking it is finite and >= 1."""
    f = _as_float("overparam", overparam)
    if not math.isfinite(f) or f < 1.0:
        raise ValueError(
            f"overparam must be a finite number >= 1 (wide width = overparam * d_in * d_out is "
            f"needed for exactness), got {overparam!r}; use overparam=1.0, or 2.0 for a "
            "better-conditioned solve"
        )
    return f


def check_density(density: object) -> float:
    """Return ``density`` as a float after checking 0 < density <= 1."""
    p = _as_float("density", density)
    if not math.isfinite(p) or not 0.0 < p <= 1.0:
        raise ValueError(
            f"density must be in (0, 1] (the probability of keeping each frozen weight), "
            f"got {density!r}; use density=1.0 for dense weights"
        )
    return p


def check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int after checking minimum <= value <= maximum."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {rng}, got {v}")
    return v


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ValueError if ``t`` holds NaN or Inf, saying where."""
    import torch

    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"{name} has {bad} non-finite entries (NaN or Inf); exact reconstruction needs finite "
            "weights: check the training run or the file that produced them"
        )


def check_device(device: object) -> torch.device:
    """Return ``device`` as a ``torch.device`` that exists on this machine."""
    import torch

    try:
        dev = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was requested but CUDA is not available here "
            "(torch.cuda.is_available() is False); use device='cpu'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}")
    return dev


def check_rtol(rtol: object) -> float:
    """Return ``rtol`` (the certificate's relative tolerance) after checking 0 < rtol < 1."""
    r = _as_float("rtol", rtol)
    if not math.isfinite(r) or not 0.0 < r < 1.0:
        raise ValueError(
            f"rtol must be a number in (0, 1) (the proven error bound may not exceed rtol times "
            f"the target's output scale), got {rtol!r}; the default is 1e-9"
        )
    return r


def check_solve_rtol(value: object) -> float:
    """Return ``solve_rtol`` (where iterative solves stop) after checking 0 < it < 1e-3."""
    try:
        r = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        r = math.nan
    if isinstance(value, bool) or not math.isfinite(r) or not 0.0 < r < 1e-3:
        raise ValueError(
            f"solve_rtol must be a number in (0, 1e-3) (the relative residual "
            f"||K gamma - vec(W)|| / ||W|| at which an iterative solve stops), got {value!r}; "
            "the default (None) solves to float64 round-off"
        )
    return r


def check_data(data: object, d_in: int, name: str = "data") -> torch.Tensor:
    """Return ``data`` (tensor or array of shape (n, d_in)) as a float64 CPU tensor.

    Raises
    ------
    TypeError
        Not a tensor or array of real numbers.
    ValueError
        Wrong shape, no rows, or non-finite entries.
    """
    import numpy as np
    import torch

    if isinstance(data, torch.Tensor):
        t = data.detach()
    elif isinstance(data, np.ndarray | list | tuple):
        try:
            t = torch.as_tensor(np.asarray(data))
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be an array of real numbers") from None
    else:
        raise TypeError(
            f"{name} must be a torch tensor or numpy array of shape (n, {d_in}), got "
            f"{type(data).__name__}"
        )
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.ndim == 1 and d_in == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[1] != d_in or t.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (n, {d_in}) with n >= 1 (one input per row), got "
            f"{tuple(t.shape)}"
        )
    t = t.to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t).all(dim=1)).sum())
        raise ValueError(f"{name} has {bad} rows with NaN or Inf; remove them first")
    return t


# data= sets R to the data's largest norm times (1 + DATA_MARGIN): points on the boundary and
# data a little beyond (a new batch, rounding in preprocessing) stay inside the certified ball.
DATA_MARGIN = 0.01


def radius_from_data(data: torch.Tensor) -> float:
    """The certified radius for ``data``: its largest row norm times ``1 + DATA_MARGIN``."""

    r = float(data.norm(dim=1).max()) * (1.0 + DATA_MARGIN)
    if r == 0.0:
        raise ValueError(
            "every data point is the origin, so the data give no radius; pass radius=R instead"
        )
    return check_radius(r, name="radius from data")


def domain_from_data(d_in: int, radius: object, data: object) -> tuple[float, torch.Tensor, str]:
    """The certified radius when ``data`` (n, d_in) is given, the data, and how R was set.

    Without ``radius``: the largest norm of the data times ``1 + DATA_MARGIN``. With it: the
    radius, refused when smaller than that largest norm (the data would leave the ball).
    """
    X = check_data(data, d_in)
    largest = float(X.norm(dim=1).max())
    r_data = radius_from_data(X)
    if radius is not None:
        r = check_radius(radius)
        if r * (1 + 1e-12) < largest:
            raise ValueError(
                f"radius={r:g} is smaller than the largest norm of the data, {largest:.6g}: the "
                f"data would leave the certified ball; drop radius (data=X alone gives "
                f"R = {r_data:.6g}) or use a larger one"
            )
        return r, X, f"radius given, {X.shape[0]} data points checked"
    return r_data, X, f"from data: {X.shape[0]} points, largest norm x (1 + {DATA_MARGIN:g})"
