"""What :func:`normonly.reconstruct` returns: the network, its certificate, where time went."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from normonly.certificate.record import Certificate
from normonly.construct.record import LayerCertificate

__all__ = ["Reconstruction"]


@dataclass
class Reconstruction:
    """What :func:`reconstruct` returns: the network and its certificate."""

    net: nn.Module
    certificate: Certificate
    layers: list[LayerCertificate] = field(default_factory=list)
    wall_time_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step: ``checks`` (validating the target and options), ``frozen_weights``
    (drawing the random network; wide method), ``solve`` (Khatri-Rao solves, all layers),
    ``build`` (the rest of the construction: shifts, writing γ and β), ``measure`` (the
    seeded cross-check), ``bound`` (the proof) and ``total`` (a CNN: solve, measure, bound,
    total)."""
