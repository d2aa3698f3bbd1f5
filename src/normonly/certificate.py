"""Certificates: what a construction promises and what was measured (SPEC §5).

A :class:`Certificate` holds the domain radius and dtype, one :class:`LayerCertificate` per solved
Khatri-Rao system (shape, rank, condition, relative residual, ReLU-on margin), and the measured
max absolute and relative error of network vs target on seeded points inside the ball ``‖x‖ ≤ R``
and on its sphere. ``passed`` compares the relative error with a tolerance that scales with the
dtype's epsilon and the condition numbers of the solves; only float64 networks can pass.

Relative error is ``max_x ‖net(x) − f(x)‖_∞ / max_x ‖f(x)‖_∞`` over the same points: normalised by
the target's output scale, since a per-point ratio is meaningless where ``f(x) ≈ 0``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from normonly._checks import check_int, check_radius
from normonly.errors import CertificateError
from normonly.target import TargetMLP

__all__ = ["Certificate", "LayerCertificate", "verify", "sample_ball", "tolerance"]

# tolerance = TOL_FACTOR * eps * (depth + Σ_l cond_l): round-off of a backward-stable solve
# grows with the condition number; the shifts' cancellation adds a few more ulps per layer.
TOL_FACTOR = 1e3
_CHUNK = 2048  # points per forward pass (wide nets hold (chunk, m) activations)


@dataclass
class LayerCertificate:
    """One solved Khatri-Rao system (a wide layer, or one residual block)."""

    layer: int  # index of the target layer
    block: int  # block within the layer (0 for the wide construction)
    shape: tuple[int, int]  # K: (d_out*k, m)
    solver: str
    rank: int | None
    rank_method: str
    cond: float
    rel_residual: float
    relu_margin: float  # min over the ball of the always-on pre-activations (bound; >= 0)
    radius_in: float  # bound on the norm of this layer's input
    iterations: int
    wall_time_s: float

    @classmethod
    def from_solve(
        cls, info, *, layer: int, block: int, relu_margin: float, radius_in: float
    ) -> LayerCertificate:
        """The certificate line of one solve (``info``: a :class:`normonly.linalg.SolveInfo`)."""
        return cls(
            layer=layer,
            block=block,
            shape=info.shape,
            solver=info.solver,
            rank=info.rank,
            rank_method=info.rank_method,
            cond=info.cond,
            rel_residual=info.rel_residual,
            relu_margin=relu_margin,
            radius_in=radius_in,
            iterations=info.iterations,
            wall_time_s=info.wall_time_s,
        )


@dataclass
class Certificate:
    """The result of :func:`verify`, with the construction's per-layer diagnostics."""

    method: str
    radius: float
    dtype: str
    norm: str
    n_points: int
    seed: int
    max_abs_error: float
    max_rel_error: float
    max_abs_error_sphere: float
    output_scale: float
    tolerance: float
    passed: bool
    counts: dict[str, int] = field(default_factory=dict)
    layers: list[LayerCertificate] = field(default_factory=list)
    target_widths: list[int] = field(default_factory=list)
    wall_time_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        return json.loads(json.dumps(d, default=str))  # plain JSON types (inf -> Infinity ok)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_table(self) -> str:
        """A plain-text table for terminals."""
        lines = [
            f"certificate: {self.method} construction, norm={self.norm}, dtype={self.dtype}, "
            f"radius R={self.radius:g}",
            f"target widths {self.target_widths}; trainable {self.counts.get('trainable', '?')}, "
            f"frozen {self.counts.get('frozen', '?')} "
            f"(non-zero {self.counts.get('frozen_nonzero', '?')})",
        ]
        if self.layers:
            head = (
                f"{'layer':>5} {'block':>5} {'K shape':>15} {'solver':>6} {'rank':>6} "
                f"{'cond':>9} {'rel.resid':>9} {'relu margin':>11} {'R_in':>9}"
            )
            lines += [head, "-" * len(head)]
            for c in self.layers:
                shape = f"{c.shape[0]}x{c.shape[1]}"
                rank = "-" if c.rank is None else str(c.rank)
                lines.append(
                    f"{c.layer:>5} {c.block:>5} {shape:>15} {c.solver:>6} {rank:>6} "
                    f"{c.cond:>9.3g} {c.rel_residual:>9.2e} {c.relu_margin:>11.3g} "
                    f"{c.radius_in:>9.3g}"
                )
        verdict = "PASS" if self.passed else "FAIL"
        lines += [
            f"measured on {self.n_points} seeded points (seed {self.seed}) in the ball "
            f"||x|| <= {self.radius:g} and on its sphere, {self.dtype}:",
            f"  max abs error {self.max_abs_error:.3e} (sphere {self.max_abs_error_sphere:.3e}), "
            f"max rel error {self.max_rel_error:.3e} (output scale {self.output_scale:.3g})",
            f"  tolerance {self.tolerance:.1e} -> {verdict}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


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


def tolerance(dtype: torch.dtype, conds: list[float], depth: int) -> float:
    """Pass/fail threshold on the relative error: ``TOL_FACTOR·eps·(depth + Σ cond)``."""
    eps = torch.finfo(dtype).eps
    total = depth + sum(c for c in conds if math.isfinite(c))
    return TOL_FACTOR * eps * total


def _max_error(net: nn.Module, target: TargetMLP, x: torch.Tensor) -> tuple[float, float]:
    """Max ``‖net(x) − f(x)‖_∞`` and max ``‖f(x)‖_∞`` over the rows of x, in chunks."""
    p = next(net.parameters())
    err, scale = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], _CHUNK):
            xc = x[s : s + _CHUNK]
            y = net(xc.to(p.device, p.dtype)).to("cpu", torch.float64)
            f = target(xc.to(torch.float64))
            if not torch.isfinite(y).all():
                return math.inf, float(f.abs().max())
            err = max(err, float((y - f).abs().max()))
            scale = max(scale, float(f.abs().max()))
    return err, scale


def verify(
    net: nn.Module,
    target: TargetMLP,
    *,
    radius: float,
    n_points: int = 10_000,
    seed: int = 0,
    layers: list[LayerCertificate] | None = None,
    method: str | None = None,
) -> Certificate:
    """Measure max absolute and relative error of ``net`` vs ``target`` on the ball of ``radius``.

    Parameters
    ----------
    net : NormNet or ResidualNormNet (any module mapping (n, d_in) -> (n, d_out))
    target : TargetMLP
    radius : float
        Radius R of the ball; it may not exceed the radius the net was built for
        (``net.meta["radius"]``) since exactness holds only there.
    n_points : int
        Half inside the ball (uniform), half on the sphere ``‖x‖ = R``.
    seed : int
        Seed of the points.
    layers : list of LayerCertificate, optional
        The construction's per-layer diagnostics (default: those saved in ``net.meta``).

    Raises
    ------
    CertificateError
        ``radius`` exceeds the certified radius.
    ValueError
        Input dimensions of net and target differ, or bad radius/n_points.
    """
    import time

    t0 = time.perf_counter()
    radius = check_radius(radius)
    n_points = check_int("n_points", n_points, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(target, TargetMLP):
        raise TypeError(f"target must be a TargetMLP, got {type(target).__name__}")
    meta = getattr(net, "meta", {}) or {}
    built_for = meta.get("radius")
    if built_for is not None and radius > float(built_for) * (1 + 1e-12):
        raise CertificateError(
            f"radius {radius:g} exceeds the radius {float(built_for):g} the network was "
            f"constructed for: exactness is only certified for ||x|| <= {float(built_for):g} "
            f"(ReLUs kept 'always on' may switch off outside); reconstruct with radius={radius:g}"
        )
    widths = meta.get("target_widths")
    if widths is not None and list(widths) != target.widths:
        raise ValueError(
            f"this network was built for a target with widths {widths}, got a target with "
            f"widths {target.widths}"
        )
    p = next(net.parameters())
    d_in = getattr(net, "d_in", None) or _input_dim(net)
    if d_in is not None and d_in != target.d_in:
        raise ValueError(f"the network takes {d_in} inputs but the target takes {target.d_in}")
    if layers is None:
        layers = [
            LayerCertificate(**{**c, "shape": tuple(c["shape"])}) for c in meta.get("layers", [])
        ]
    inside, sphere = sample_ball(n_points, target.d_in, radius, seed=seed)
    e_in, s_in = _max_error(net, target, inside)
    e_sp, s_sp = _max_error(net, target, sphere)
    abs_err = max(e_in, e_sp)
    scale = max(s_in, s_sp)
    rel_err = abs_err / scale if scale > 0 else abs_err
    tol = tolerance(p.dtype, [c.cond for c in layers], target.depth)
    notes = []
    certifiable = p.dtype == torch.float64
    if not certifiable:
        notes.append(
            f"{p.dtype} is below float64: exactness is certified for float64 only, so this "
            f"certificate fails whatever the error (tolerance shown for {p.dtype})"
        )
    counts = net.parameter_counts() if hasattr(net, "parameter_counts") else {}
    return Certificate(
        method=method or meta.get("method", "unknown"),
        radius=radius,
        dtype=str(p.dtype).replace("torch.", ""),
        norm=getattr(net, "norm", "unknown"),
        n_points=n_points,
        seed=seed,
        max_abs_error=abs_err,
        max_rel_error=rel_err,
        max_abs_error_sphere=e_sp,
        output_scale=scale,
        tolerance=tol,
        passed=bool(certifiable and rel_err <= tol),
        counts=counts,
        layers=list(layers),
        target_widths=target.widths,
        wall_time_s=time.perf_counter() - t0,
        notes=notes,
    )


def _input_dim(net: nn.Module) -> int | None:
    for m in net.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    return None
