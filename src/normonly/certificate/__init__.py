"""Certificates: what a reconstructed network is proven to do, and what was measured.

``verify`` (:mod:`~normonly.certificate.verify`) measures the error on seeded points
(:mod:`~normonly.certificate.sampling`), proves a bound over the whole ball
(:mod:`~normonly.certificate.bound`, with :mod:`~normonly.certificate.forms` and
:mod:`~normonly.certificate.rigorous`) and returns a :class:`Certificate`
(:mod:`~normonly.certificate.record`) with the verdict; :mod:`~normonly.certificate.cnn` proves
the bound for a rebuilt CNN.
"""

from normonly.certificate.bound import ErrorBound, error_bound
from normonly.certificate.record import Certificate
from normonly.certificate.sampling import sample_ball
from normonly.certificate.verify import DEFAULT_RTOL, verify

__all__ = ["Certificate", "DEFAULT_RTOL", "ErrorBound", "error_bound", "sample_ball", "verify"]
