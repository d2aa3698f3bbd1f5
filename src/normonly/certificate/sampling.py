"""The one sampler of the ball ``‖x‖ ≤ R``: seeded points inside it and on its sphere."""

from __future__ import annotations

import torch

__all__ = ["sample_ball"]


def sample_ball(
    n: int, d: int, radius: float, *, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded points: ``n - n//2`` uniform in the ball ``‖x‖ ≤ R`` and ``n//2`` on its sphere.

    Returns ``(inside, sphere)`` of shapes ``(n - n//2, d)`` and ``(n//2, d)``; the origin is
    the first inside point.
    """
    g = torch.Generator().manual_seed(seed)
    n_sphere = n // 2
    n_in = n - n_sphere
    dirs = torch.randn(n_in + n_sphere, d, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    r_in = radius * torch.rand(n_in, 1, generator=g, dtype=torch.float64) ** (1.0 / d)
    inside = dirs[:n_in] * r_in
    if n_in:
        inside[0] = 0.0
    sphere = dirs[n_in:] * radius
    return inside.to(dtype), sphere.to(dtype)
