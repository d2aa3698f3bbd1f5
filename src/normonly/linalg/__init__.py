"""Linear algebra underneath the constructions: Khatri-Rao systems and their solvers."""

from normonly.linalg.khatri_rao import khatri_rao, kr_gram, kr_matvec, kr_rmatvec
from normonly.linalg.lsqr import LsqrResult, lsqr
from normonly.linalg.solve import SolveInfo, dead_units, solve_scales

__all__ = [
    "khatri_rao",
    "kr_gram",
    "kr_matvec",
    "kr_rmatvec",
    "lsqr",
    "LsqrResult",
    "solve_scales",
    "SolveInfo",
    "dead_units",
]
