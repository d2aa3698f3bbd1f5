"""normonly: reproduce ReLU networks exactly by tuning only normalization layers.

Freeze every weight of a random ReLU network, set only the per-unit scale γ and shift β of its
normalization layers, and it reproduces any ReLU network O(√width) times narrower exactly on a
ball (Giannou, Rajput, Papailiopoulos, COLT 2023).

Public names are imported lazily (PEP 562) so that ``normonly --help`` does not pay for torch.

Example
-------
>>> import normonly
>>> f = normonly.TargetMLP.random([4, 8, 3], seed=0)
>>> rec = normonly.reconstruct(f, radius=1.0, overparam=2.0, n_points=500)
>>> rec.certificate.passed        # proven: error <= 1e-9 x output scale on the whole ball
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "Certificate": "normonly.certificate",
    "LayerCertificate": "normonly.construct.record",
    "sample_ball": "normonly.certificate",
    "verify": "normonly.certificate",
    "Reconstruction": "normonly.reconstruction",
    "reconstruct": "normonly.api",
    "CertificateError": "normonly.errors",
    "IllConditionedWarning": "normonly.errors",
    "InfeasibleError": "normonly.errors",
    "NormonlyError": "normonly.errors",
    "RankDeficientError": "normonly.errors",
    "OutsideBallError": "normonly.errors",
    "OutsideBallWarning": "normonly.errors",
    "ErrorBound": "normonly.certificate",
    "error_bound": "normonly.certificate",
    "UncertifiedDtypeWarning": "normonly.errors",
    "khatri_rao": "normonly.linalg",
    "solve_scales": "normonly.linalg",
    "Affine": "normonly.nets.layers",
    "MaskedLinear": "normonly.nets.layers",
    "NormNet": "normonly.nets.wide",
    "load_network": "normonly.nets.io",
    "export_onnx": "normonly.nets.export",
    "TargetMLP": "normonly.nets.target",
    "TargetCNN": "normonly.nets.cnn",
    "NormCNN": "normonly.nets.normcnn",
    "ResidualNormNet": "normonly.nets.residual",
    "fit_norm_only": "normonly.train",
    "freeze_all_but_norm": "normonly.train",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'normonly' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from normonly.api import reconstruct
    from normonly.certificate.bound import ErrorBound, error_bound
    from normonly.certificate.record import Certificate
    from normonly.certificate.sampling import sample_ball
    from normonly.certificate.verify import verify
    from normonly.construct.record import LayerCertificate
    from normonly.errors import (
        CertificateError,
        IllConditionedWarning,
        InfeasibleError,
        NormonlyError,
        OutsideBallError,
        OutsideBallWarning,
        RankDeficientError,
        UncertifiedDtypeWarning,
    )
    from normonly.linalg import khatri_rao, solve_scales
    from normonly.nets.cnn import TargetCNN
    from normonly.nets.export import export_onnx
    from normonly.nets.io import load_network
    from normonly.nets.layers import Affine, MaskedLinear
    from normonly.nets.normcnn import NormCNN
    from normonly.nets.residual import ResidualNormNet
    from normonly.nets.target import TargetMLP
    from normonly.nets.wide import NormNet
    from normonly.reconstruction import Reconstruction
    from normonly.train import fit_norm_only, freeze_all_but_norm
