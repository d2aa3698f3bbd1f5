"""The per-layer record of a construction: one line per solved Khatri-Rao system."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerCertificate", "construction_meta"]


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


def construction_meta(
    method: str, radius: float, target_widths: list[int], layers: list[LayerCertificate],
    domain: str = "radius given",
) -> dict:
    """The facts a built network carries (``net.meta``, saved with it): what it was built for.

    ``radius`` switches on the network's input check and is the default radius of
    :func:`normonly.verify`; ``layers`` lets the proven bound map residual blocks to target layers.
    """  # fmt: skip
    return {
        "method": method,
        "radius": float(radius),
        "domain": domain,
        "target_widths": list(target_widths),
        "layers": [dict(lc.__dict__) for lc in layers],
    }
