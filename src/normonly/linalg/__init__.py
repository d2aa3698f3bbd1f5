"""Linear algebra underneath the constructions: Khatri-Rao systems and their solvers."""

from normonly.linalg.cgne import CgneResult, cgne
from normonly.linalg.khatri_rao import (
    KhatriRaoOperator,
    khatri_rao,
    kr_gram,
    kr_matvec,
    kr_rmatvec,
)
from normonly.linalg.lsqr import LsqrResult, lsqr
from normonly.linalg.solve import SolveInfo, choose_solver, dead_units, solve_scales

__all__ = [
    "khatri_rao",
    "kr_gram",
    "kr_matvec",
    "kr_rmatvec",
    "KhatriRaoOperator",
    "cgne",
    "CgneResult",
    "lsqr",
    "LsqrResult",
    "solve_scales",
    "SolveInfo",
    "choose_solver",
    "dead_units",
]
