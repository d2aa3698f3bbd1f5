"""The options of a construction, validated once at the door into a frozen spec trusted below.

:meth:`ConstructionSpec.make` checks every option (with messages that say what would work) and
the feasibility of the requested widths; :func:`~normonly.construct.wide.build_wide` and
:func:`~normonly.construct.residual.build_residual` take the spec and check nothing again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from normonly._checks import (
    check_density,
    check_device,
    check_int,
    check_overparam,
    check_radius,
    check_solve_rtol,
)
from normonly.construct.layout import check_k, scaled_width, wide_widths
from normonly.errors import InfeasibleError
from normonly.nets.layers import check_norm
from normonly.nets.target import TargetMLP

__all__ = ["ConstructionSpec", "METHODS", "NO_DOMAIN"]

METHODS = ("wide", "residual")

NO_DOMAIN = (
    "reconstruct needs the input domain: pass radius=R (exactness on ||x|| <= R) or "
    "data=X (your inputs, shape (n, d_in); R becomes their largest norm + 1%); there is "
    "no default, because a network certified on the wrong ball is silently wrong on "
    "your data"
)


@dataclass(frozen=True)
class ConstructionSpec:
    """Validated options of one construction (see :func:`normonly.reconstruct` for each)."""

    method: str
    radius: float
    overparam: float
    width: int | None
    uniform_width: bool
    norm: str
    density: float
    k: int | None
    seed: int
    solver: str
    device: torch.device
    least_squares: bool = False  # wide only: allow widths below d_in*d_out (best fit)
    solve_rtol: float | None = None  # iterative solvers stop here (None: round-off, 64 eps)

    @classmethod
    def make(
        cls,
        target: TargetMLP,
        *,
        method: str = "wide",
        radius: object = None,
        overparam: object = 1.0,
        width: object = None,
        uniform_width: bool = False,
        norm: str = "batchnorm",
        density: object = 1.0,
        k: object = None,
        seed: object = 0,
        solver: str = "auto",
        device: object = "cpu",
        least_squares: bool = False,
        solve_rtol: object = None,
    ) -> ConstructionSpec:
        """Check every option for ``target``; the missing domain is reported last.

        Raises
        ------
        ValueError, TypeError
            A bad option, naming it and what would work.
        InfeasibleError
            Widths too small for an exact construction (naming the width needed).
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        overparam = _check_overparam_for(target, overparam)
        density = check_density(density)
        norm = check_norm(norm)
        seed = check_int("seed", seed, minimum=0)
        device = check_device(device)
        if width is not None:
            width = check_int("width", width, minimum=1)
        if method == "wide":
            if k is not None:
                raise ValueError("k (partition size) applies to method='residual' only")
            wide_widths(target, overparam=overparam, width=width, uniform_width=uniform_width,
                        least_squares=least_squares)  # fmt: skip
        else:
            if width is not None or uniform_width:
                raise ValueError("width and uniform_width apply to method='wide' only; use k")
            check_k(k, target)
        if solve_rtol is not None:
            solve_rtol = check_solve_rtol(solve_rtol)
        if radius is None:
            raise ValueError(NO_DOMAIN)
        return cls(
            method=method, radius=check_radius(radius), overparam=overparam, width=width,
            uniform_width=bool(uniform_width), norm=norm, density=density,
            k=None if k is None else int(k), seed=seed, solver=solver, device=device,
            least_squares=bool(least_squares), solve_rtol=solve_rtol,
        )  # fmt: skip



def _check_overparam_for(target: TargetMLP, overparam: object) -> float:
    """``check_overparam``, naming the width the target needs when overparam < 1."""
    try:
        return check_overparam(overparam)
    except ValueError as e:
        try:
            value = float(overparam)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise e from None
        if not 0 < value < 1:
            raise
        need = [w.shape[0] * w.shape[1] for w in target.weights]
        i = max(range(len(need)), key=lambda j: need[j])
        d_out, d_in = target.weights[i].shape
        raise InfeasibleError(
            f"{e}; for this target that is width {scaled_width(value, need[i])} for the "
            f"{d_in}->{d_out} layer {i}, which needs width >= {need[i]} (= d_in*d_out) to be "
            "reproduced exactly"
        ) from None
