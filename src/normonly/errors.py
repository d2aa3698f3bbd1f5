"""Exceptions and warnings raised by normonly.

Every error a user can trigger with bad input is a ``ValueError`` or ``TypeError`` subclass, so
ordinary ``except ValueError`` code keeps working, and the message says what was wrong and what
would work.
"""

from __future__ import annotations

__all__ = [
    "NormonlyError",
    "InfeasibleError",
    "RankDeficientError",
    "CertificateError",
    "OutsideBallError",
    "OutsideBallWarning",
    "IllConditionedWarning",
    "UncertifiedDtypeWarning",
]


class NormonlyError(Exception):
    """Base class of every error normonly raises on purpose."""


class InfeasibleError(NormonlyError, ValueError):
    """The requested exact construction cannot exist (too narrow, wrong semantics, ...)."""


class RankDeficientError(InfeasibleError):
    """The Khatri-Rao system of a layer does not have full row rank.

    Attributes
    ----------
    rank, needed : int
        The numerical rank found and the rank an exact solve needs (d_in * d_out).
    """

    def __init__(self, message: str, *, rank: int, needed: int) -> None:
        super().__init__(message)
        self.rank = rank
        self.needed = needed


class CertificateError(NormonlyError, ValueError):
    """A verification request outside what the certificate covers (e.g. a larger radius)."""


class OutsideBallError(CertificateError):
    """A rebuilt network in strict mode was called on inputs outside its certified ball."""


class OutsideBallWarning(UserWarning):
    """A rebuilt network was called on inputs outside the ball it is certified on.

    Outside the ball, ReLUs that the construction keeps "always on" may switch off, so the
    network can differ from the target by any amount. Issued once per network; set
    ``net.strict_domain = True`` to raise :class:`OutsideBallError` instead.
    """


class IllConditionedWarning(UserWarning):
    """The solve succeeded but the system is ill conditioned: expect lost digits."""


class UncertifiedDtypeWarning(UserWarning):
    """A dtype below float64 was requested: exactness cannot be certified."""
