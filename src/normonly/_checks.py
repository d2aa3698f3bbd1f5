"""Validation helpers used at the public boundary (scikit-learn style messages)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

__all__ = [
    "check_radius",
    "check_overparam",
    "check_density",
    "check_finite",
    "check_int",
    "check_device",
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
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"{name} has {bad} non-finite entries (NaN or Inf); exact reconstruction needs finite "
            "weights: check the training run or the file that produced them"
        )


def check_device(device: object) -> torch.device:
    """Return ``device`` as a ``torch.device`` that exists on this machine."""
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
