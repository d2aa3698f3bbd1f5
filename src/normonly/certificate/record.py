"""The certificate a user reads: domain, proven bound, measured error, verdict and why."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from normonly.construct.record import LayerCertificate

__all__ = ["Certificate", "strict_json"]


def strict_json(value):
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no NaN/inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


@dataclass
class Certificate:
    """The result of :func:`verify`: the proven bound, the measured error and the verdict."""

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
    tolerance: float  # rtol: the bound may not exceed tolerance * output_scale
    passed: bool
    error_bound: float | None = None  # proven bound on max ||net(x) - f(x)||_inf over the ball
    bound_rel: float | None = None  # error_bound / output_scale
    bound_weights: float | None = None  # the part from effective weights differing from W, b
    bound_rounding: float | None = None  # the part from floating-point rounding (net + target)
    relu_proven: int | None = None  # always-on ReLUs proven on over the whole ball
    relu_unproven: int | None = None  # always-on/off ReLUs the bound could not prove
    relu_margin: float | None = None  # smallest proven margin of an always-on pre-activation
    reason: str = ""
    domain: str = ""  # how the radius was chosen (given, or from data with its margin)
    data_points: int = 0  # user data points checked (0: none given)
    data_outside: int = 0  # of those, outside the certified ball
    data_max_norm: float | None = None
    max_abs_error_data: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    layers: list[LayerCertificate] = field(default_factory=list)
    target_widths: list[int] = field(default_factory=list)
    wall_time_s: float = 0.0
    bound_time_s: float = 0.0
    measure_time_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON types; a non-finite number (an overflowing bound, an infinite condition
        number) becomes ``None`` so that the JSON is strict (no ``NaN``/``Infinity`` tokens)."""
        d = json.loads(json.dumps(asdict(self), default=str))
        return strict_json(d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """What a user needs: domain, proven bound, sampled max, verdict and why."""
        verdict = "PASS" if self.passed else "FAIL"
        bound = "none" if self.error_bound is None else f"{self.error_bound:.3e}"
        lines = [
            f"certificate: {self.method} construction, {self.dtype}, ball ||x|| <= "
            f"{self.radius:g}" + (f" ({self.domain})" if self.domain else ""),
            f"  proven bound  max ||net(x) - f(x)||_inf <= {bound} over the whole ball"
            + (
                f" (relative {self.bound_rel:.2e}; weights {self.bound_weights:.1e}, rounding "
                f"{self.bound_rounding:.1e})"
                if self.error_bound is not None and self.bound_rel is not None
                else ""
            ),
            f"  measured      max error {self.max_abs_error:.3e} on {self.n_points} seeded points"
            f" (seed {self.seed}) inside the ball and on its sphere"
            + (
                f", {self.max_abs_error_data:.3e} on {self.data_points} data points"
                if self.max_abs_error_data is not None
                else ""
            ),
            f"  output scale  {self.output_scale:.4g}; tolerance {self.tolerance:.0e} x scale",
        ]
        if self.relu_proven is not None:
            lines.append(
                f"  ReLUs         {self.relu_proven} always-on units proven on over the ball"
                + (f" (smallest margin {self.relu_margin:.3g})" if self.relu_margin else "")
                + (f", {self.relu_unproven} NOT proven" if self.relu_unproven else "")
            )
        lines += [
            f"  {verdict}: {self.reason}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_table(self) -> str:
        """The summary followed by the construction's per-layer solve diagnostics."""
        lines = [
            self.summary(),
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
        return "\n".join(lines)
