"""Local geometry of the norm-only loss: Gauss-Newton spectrum and seeded perturbations.

For the MSE ``L(θ) = ‖f_θ(X) − Y‖² / N`` (N = number of output entries) the Gauss-Newton matrix
is ``H = 2 JᵀJ / N`` with ``J = ∂ vec f_θ(X) / ∂θ`` of shape (N, P). At an exact solution (the
construction's, residual 0) the second-order term vanishes and ``H`` *is* the Hessian, so its
spectrum says how gradient methods behave there: zero eigenvalues are flat directions (other exact
solutions), and the ratio of the largest to the smallest non-zero eigenvalue is the condition
number that slows first-order methods on the identifiable part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacfwd

from normonly._checks import check_int

__all__ = ["GaussNewtonSpectrum", "gauss_newton_spectrum", "perturb_parameters"]


@dataclass
class GaussNewtonSpectrum:
    """Eigenvalues of ``H = 2 JᵀJ / N`` and what they imply.

    Attributes
    ----------
    eigenvalues : torch.Tensor
        Shape (P,), descending, clamped at 0 (H is positive semi-definite).
    rank : int
        Eigenvalues above ``λ_max · P · eps`` (the numerical rank).
    cond : float
        ``λ_max / λ_rank``, the condition number on the non-null part.
    """

    eigenvalues: torch.Tensor
    rank: int
    lambda_max: float
    lambda_min: float
    lambda_min_nonzero: float
    cond: float

    @property
    def n_params(self) -> int:
        return int(self.eigenvalues.numel())

    @property
    def n_flat(self) -> int:
        """Directions along which the loss is flat to second order."""
        return self.n_params - self.rank


def gauss_newton_spectrum(net: nn.Module, x: torch.Tensor) -> GaussNewtonSpectrum:
    """Spectrum of the Gauss-Newton matrix of the MSE w.r.t. ``net``'s trainable parameters.

    Parameters
    ----------
    net : nn.Module
        Evaluated in eval mode; its parameters with ``requires_grad`` are θ (call
        :func:`~normonly.train.freeze.freeze_all_but_norm` first for the norm-only loss).
    x : torch.Tensor
        Inputs of shape (n, d_in); J has ``n * d_out`` rows.

    Returns
    -------
    GaussNewtonSpectrum

    Raises
    ------
    ValueError
        ``net`` has no trainable parameter.

    Example
    -------
    >>> from normonly import NormNet
    >>> net = NormNet([2, 4, 1], norm="affine", seed=0)
    >>> s = gauss_newton_spectrum(net, torch.randn(32, 2, dtype=torch.float64))
    >>> s.n_params, s.rank <= s.n_params
    (10, True)
    """
    theta = {n: p.detach() for n, p in net.named_parameters() if p.requires_grad}
    if not theta:
        raise ValueError("net has no trainable parameter (requires_grad); nothing to differentiate")
    p0 = next(iter(theta.values()))
    x = x.to(p0.device, p0.dtype)
    was_training = net.training
    net.eval()
    try:
        # forward mode: P tangents are cheaper than n*d_out cotangents here
        jac = jacfwd(lambda params: functional_call(net, params, (x,)).reshape(-1))(theta)
    finally:
        net.train(was_training)
    J = torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1)  # (n*d_out, P)
    H = 2.0 * J.T @ J / J.shape[0]  # (P, P)
    eig = torch.linalg.eigvalsh(H).flip(0).clamp_min(0.0)  # descending
    lam_max = float(eig[0])
    rank = int((eig > lam_max * eig.numel() * torch.finfo(H.dtype).eps).sum())
    smallest = float(eig[rank - 1]) if rank else 0.0
    return GaussNewtonSpectrum(
        eigenvalues=eig,
        rank=rank,
        lambda_max=lam_max,
        lambda_min=float(eig[-1]),
        lambda_min_nonzero=smallest,
        cond=lam_max / smallest if smallest > 0 else float("inf"),
    )


def perturb_parameters(
    params: list[nn.Parameter], rel_size: float, *, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add a seeded Gaussian direction ``δ`` with ``‖δ‖ = rel_size · ‖θ‖`` to ``params`` in place.

    Parameters
    ----------
    params : list of nn.Parameter
        θ, flattened in order.
    rel_size : float
        Relative size ε >= 0 of the perturbation.
    seed : int
        Seed of the direction.

    Returns
    -------
    theta, delta : torch.Tensor
        The flat parameters before the perturbation and the perturbation, shape (P,).
    """
    if not rel_size >= 0:
        raise ValueError(f"rel_size must be >= 0, got {rel_size!r}")
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    theta = nn.utils.parameters_to_vector(params).detach().clone()  # (P,)
    delta = torch.randn(theta.shape, generator=g, dtype=theta.dtype).to(theta.device)
    delta *= rel_size * theta.norm() / delta.norm()
    with torch.no_grad():
        nn.utils.vector_to_parameters(theta + delta, params)
    return theta, delta
