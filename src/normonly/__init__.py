"""normonly: reproduce ReLU networks exactly by tuning only normalization layers.

Freeze every weight of a random ReLU network, set only the per-unit scale γ and shift β of its
normalization layers, and it reproduces any ReLU network O(√width) times narrower exactly on a
ball (Giannou, Rajput, Papailiopoulos, COLT 2023).

Example
-------
>>> import normonly
>>> f = normonly.TargetMLP.random([4, 8, 3], seed=0)
>>> rec = normonly.reconstruct(f, radius=1.0, n_points=500)
>>> rec.certificate.max_rel_error < 1e-9
True
"""

from normonly.certificate import Certificate, LayerCertificate, sample_ball, verify
from normonly.construct import Reconstruction, reconstruct
from normonly.errors import (
    CertificateError,
    IllConditionedWarning,
    InfeasibleError,
    NormonlyError,
    RankDeficientError,
    UncertifiedDtypeWarning,
)
from normonly.linalg import khatri_rao, solve_scales
from normonly.network import Affine, MaskedLinear, NormNet, load_network
from normonly.target import TargetMLP

__version__ = "0.1.0"

__all__ = [
    "Affine",
    "Certificate",
    "CertificateError",
    "IllConditionedWarning",
    "InfeasibleError",
    "LayerCertificate",
    "MaskedLinear",
    "NormNet",
    "NormonlyError",
    "RankDeficientError",
    "Reconstruction",
    "TargetMLP",
    "UncertifiedDtypeWarning",
    "khatri_rao",
    "load_network",
    "reconstruct",
    "sample_ball",
    "solve_scales",
    "verify",
]
