"""A proven bound on the error of a reconstructed network over the whole input ball.

:func:`error_bound` returns a number ``B`` such that, for **every** ``x`` with ``‖x‖₂ ≤ R`` (not
only sampled ones), ``‖net(x) − f(x)‖∞ ≤ B`` when the network is evaluated in its floating-point
dtype and ``f`` is the target evaluated either exactly or in float64. It reads the network's own
current parameters (frozen weights and masks, BatchNorm weight/bias/running statistics/eps or the
plain affine γ/β), so a network edited after its construction is judged as it is.

How the bound is derived
------------------------
Write ``h_l`` for the target's hidden vector after its layer ``l`` (``h_0 = x``) and ``ĥ_l`` for
the values the network itself computes for it (the units that carry the target's units, in
floating point). Over the ball, ``‖h_0‖ ≤ R``, and for ``l ≥ 1`` ``h_l ≥ 0`` with
``‖h_l‖ ≤ R_l``, where ``R_{l+1}`` is the smaller of ``‖(‖W_i^+‖ R_l + b_i)_+‖`` (row by row:
ReLU is monotone) and ``‖W‖₂ R_l + ‖b‖`` (a rigorous upper bound on the spectral norm, below).
We carry a bound ``c_l`` on ``|ĥ_l − h_l|`` (elementwise, and as a 2-norm), so ``ĥ_l ≥ 0`` lies in
the ball of radius ``R_l + ‖c_l‖``: the input ball *enlarged by the error carried in*.

While the network computes the part that stands for target layer ``l``, every unit ``k`` it
holds is described by an *affine form* in ``ĥ_l``::

    |ŝ_k − (T_k · ĥ_l + t_k)| ≤ E_k        for every x in the ball,

where ``ŝ_k`` is the value the network actually computes and ``T, t, E`` are computed numbers.
The forms start as ``x`` itself (``T = I, t = 0, E = 0``) and are pushed through every
operation of the network:

* **frozen linear map M** (masks applied): ``T ← M T``, ``t ← M t``,
  ``E ← |M| E + 2γ_n |M| S``. ``S_k = ‖T_k‖ ‖ĥ‖ + |t_k| + E_k`` bounds ``|ŝ_k|``, and
  ``γ_n = n u / (1 − n u)`` is the worst-case relative error of a floating-point dot product of
  length ``n`` (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3:
  ``|fl(Mv) − Mv| ≤ γ_n |M||v|`` for every summation order, fused multiply-adds included). One
  ``γ_n |M| S`` is the rounding of the forward pass itself — the large always-on shifts
  included, since they are part of ``S`` —, the other covers rounding in computing ``M T`` and
  ``M t`` here.
* **normalization** (per unit ``γ ⊙ z + β``; for an eval BatchNorm ``γ = weight/√(var + eps)``,
  ``β = bias − γ·mean``, real numbers we compute to within a few ulps as ``γ̂, β̂``):
  ``T ← γ̂ T``, ``t ← γ̂ t + β̂``,
  ``E ← |γ̂| E + |γ − γ̂| S + |β − β̂| + c·u·(|γ̂| (S + |mean|) + |bias|)``. The constant ``c = 16``
  is generous: any evaluation order of an eval BatchNorm rounds at most six times per unit.
* **ReLU** (1-Lipschitz, so it never increases ``E``): the exact range of a form is
  ``t_k ± ‖T_k‖ ‖ĥ‖`` (``t_k − ‖T_k^−‖ ‖ĥ‖`` .. ``t_k + ‖T_k^+‖ ‖ĥ‖`` when ``ĥ ≥ 0``). A unit
  whose range is ``≥ 0`` is proven *always on* (the ReLU is the identity on the form: it is
  kept); one whose range plus ``E`` is ``≤ 0`` is exactly zero. Any other unit is unproven: its
  value lies in ``[0, max range]`` and is replaced by the midpoint with half the range added to
  ``E``, so a network whose shifts do not keep its ReLUs on gets a large, honest bound.
* **target ReLU** (where the network realises ``h_{l+1} = σ(W h_l + b)``: the narrow layer of the
  wide construction, the post-add ReLU of a target layer's last block in the residual one): for
  unit ``k`` carrying target unit ``i`` (ReLU is 1-Lipschitz),
  ``|ĥ_{l+1,i} − h_{l+1,i}| ≤ E_k + ‖T_k − W_i‖ ‖ĥ_l‖ + |t_k − b_i| + |W_i (ĥ_l − h_l)|``,
  with the last term the smaller of ``|W_i| c_l`` and ``‖W_i‖ ‖c_l‖`` (its 2-norm is
  propagated with ``‖W‖₂``, which grows more slowly with depth than ``|W|``). This is the new
  ``c_{l+1}``; the carriers' new forms are ``ĥ_{l+1,i}`` exactly, and every other unit keeps its
  constant ``t_k`` with ``‖T_k‖ ‖ĥ_l‖`` added to its error.
* **output**: ``|ŷ_i − f_i(x)|`` is bounded by the same expression for the output units.

``‖T_k − W_i‖ ‖ĥ‖`` is where the error of the effective weights ``A diag(γ) B − W`` of each layer
enters (the Khatri-Rao solve's residual, or an edited γ); ``E`` carries the floating-point
rounding within the layer. The bound is split into a ``weights`` part (effective weights and
shifts, unproven ReLUs) and a ``rounding`` part, plus a bound on the rounding of the target's own
float64 evaluation, so that it covers both ``|fl(net(x)) − f(x)|`` and
``|fl(net(x)) − fl(f(x))|``; the sampled error can never exceed it. Every norm, product and sum
computed here is rounded upwards by a factor ``1 + γ_(n+4)``, so the bound is an upper bound on
real numbers, not an estimate.

The spectral norm ``‖W‖₂`` comes from Kahan's residual theorem: for symmetric ``G`` and any
``V``, ``Λ``, the eigenvalues of ``G`` lie within ``‖G V − V Λ‖₂ / σ_min(V)`` of those of ``Λ``;
with ``G = W Wᵀ`` (or ``Wᵀ W``) and ``V, Λ`` from ``eigh``, plus the rounding of ``G``, this gives
an upper bound within a few ulps of ``‖W‖₂``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ErrorBound", "error_bound", "spectral_norm_upper", "target_radii"]

U64 = 2.0**-53  # unit roundoff of float64, the arithmetic of this module
_NORM_ROUNDINGS = 16  # c of the docstring: per-unit rounding allowance of a normalization layer


def _gamma(n: int, u: float = U64) -> float:
    """``γ_n = n u / (1 − n u)``: worst-case relative error of an n-term dot product."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 0.5 else math.inf


def _up(x: torch.Tensor | float, n: int = 1) -> torch.Tensor | float:
    """``x`` (non-negative, computed with about n roundings) rounded up to a safe upper bound."""
    return x * (1.0 + _gamma(n + 4))


def _rownorm(T: torch.Tensor) -> torch.Tensor:
    """Upper bounds on the 2-norms of the rows of ``T``."""
    if T.shape[1] == 0:
        return torch.zeros(T.shape[0], dtype=T.dtype, device=T.device)
    return _up(T.norm(dim=1), T.shape[1])


def spectral_norm_upper(W: torch.Tensor) -> float:
    """A rigorous upper bound on ``‖W‖₂`` (float64), within a few ulps of it.

    Example
    -------
    >>> W = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    >>> 4.0 <= spectral_norm_upper(W) < 4.0 * (1 + 1e-12)
    True
    """
    W = W.to(torch.float64)
    if W.numel() == 0:
        return 0.0
    if W.shape[0] > W.shape[1]:
        W = W.T
    n_inner = W.shape[1]
    G = W @ W.T  # (p, p), p = min dimension
    Ga = W.abs() @ W.abs().T
    dG = _up(_gamma(n_inner) * Ga.norm(), Ga.numel())  # ‖fl(WWᵀ) − WWᵀ‖_F
    G = torch.triu(G) + torch.triu(G, 1).T  # exactly symmetric
    lam, V = torch.linalg.eigh(G)
    p = G.shape[0]
    res = G @ V - V * lam
    res_err = _gamma(p + 1) * (G.abs() @ V.abs() + V.abs() * lam.abs())
    r = _up(res.norm() + res_err.norm(), 2 * res.numel())
    orth = V.T @ V - torch.eye(p, dtype=V.dtype, device=V.device)
    orth_err = _gamma(p + 1) * (V.abs().T @ V.abs() + 1.0)
    alpha = float(_up(orth.norm() + orth_err.norm(), 2 * orth.numel()))
    if not alpha < 0.5:
        return float(_up(W.norm(), W.numel()))  # Frobenius: always valid
    lam_max = float(lam.max()) + float(r) / math.sqrt(1.0 - alpha) + float(dG)
    bound = math.sqrt(max(lam_max, 0.0) * (1 + 4 * U64)) * (1 + 4 * U64)
    return min(bound, float(_up(W.norm(), W.numel())))


def target_radii(target, radius: float) -> list[float]:
    """Upper bounds ``[R_0 = R, R_1, ..., R_{L-1}]`` on the norms of the target's hidden vectors."""
    radii = [float(radius)]
    for l, (W, b) in enumerate(zip(target.weights[:-1], target.biases[:-1], strict=True)):
        R = radii[-1]
        rows = W.clamp_min(0.0) if l > 0 else W  # h_l >= 0 after a ReLU
        pre = _up(_rownorm(rows) * R, 2) + b + _up(U64 * b.abs(), 1)
        per_row = float(_up(pre.clamp_min(0.0).norm(), pre.numel()))
        spectral = float(_up(spectral_norm_upper(W) * R + _up(b.norm(), b.numel()), 3))
        radii.append(min(per_row, spectral))
    return radii


@dataclass
class ErrorBound:
    """A proven bound on ``max_{‖x‖≤R} ‖net(x) − f(x)‖∞`` and where it comes from.

    Attributes
    ----------
    bound : float
        ``weights + rounding + target_rounding`` (``inf`` if nothing finite could be proven).
    weights : float
        The part due to the effective weights and shifts differing from the target's (solve
        residuals, edited parameters, ReLUs not proven on).
    rounding : float
        The part due to the network's own floating-point rounding (and its propagation).
    target_rounding : float
        A bound on the rounding of the target's float64 evaluation (so the bound also covers a
        comparison with the target computed in float64).
    dtype : str
        The dtype whose rounding was bounded.
    relu : list of dict
        One entry per ReLU stage: ``stage``, units proven ``on``, proven ``off``, ``unproven``,
        and ``margin`` (the smallest proven lower bound of an always-on pre-activation).
    """

    bound: float
    weights: float
    rounding: float
    target_rounding: float
    dtype: str
    radius: float
    relu: list[dict] = field(default_factory=list)

    @property
    def unproven_relus(self) -> int:
        return sum(s["unproven"] for s in self.relu)


class _Forms:
    """Affine forms ``T ĥ + t`` with residual error bounds ``e_w`` (weights) and ``e_fp``.

    ``ĥ`` is the vector of values the network itself computed for the current target layer's
    input (``x`` for the first layer): ``|ĥ − h| ≤ carry_w + carry_fp`` elementwise, ``ĥ ≥ 0``
    after the first layer, and ``‖ĥ‖ ≤ radius`` (the target's radius enlarged by the carried
    error).
    """

    def __init__(self, T, t, e_w, e_fp, *, carry, radius, nonneg, u) -> None:
        self.T, self.t, self.e_w, self.e_fp = T, t, e_w, e_fp
        # carry = (elementwise weights part, elementwise rounding part, 2-norms of the two)
        self.carry = carry
        self.radius, self.nonneg, self.u = radius, nonneg, u

    def _new(self, T, t, e_w, e_fp) -> _Forms:
        return _Forms(T, t, e_w, e_fp, carry=self.carry, radius=self.radius,
                      nonneg=self.nonneg, u=self.u)  # fmt: skip

    @property
    def E(self) -> torch.Tensor:
        return self.e_w + self.e_fp

    def mag(self) -> torch.Tensor:
        """Upper bound on ``|ŝ_k|`` over the ball (the form's exact range, plus ``E``)."""
        lo, hi = self._range()
        return _up(torch.maximum(lo.abs(), hi.abs()) + self.E, 2)

    def linear(self, M: torch.Tensor) -> _Forms:
        n = M.shape[1]
        Ma = M.abs()
        mag = self.mag()
        e_w = _up(Ma @ self.e_w, n)
        e_fp = _up(Ma @ (self.e_fp + (_gamma(n, self.u) + _gamma(n)) * mag), n)
        return self._new(M @ self.T, M @ self.t, e_w, e_fp)

    def norm(self, layer: nn.Module) -> _Forms:
        g, b, e_g, e_b, mean_abs, bias_abs = _norm_params(layer, self.t.dtype)
        mag = self.mag()
        ga = g.abs()
        fwd = _NORM_ROUNDINGS * self.u * (ga * (mag + mean_abs) + bias_abs)
        here = 3 * U64 * (ga * mag + b.abs())  # rounding of γ̂ T and γ̂ t + β̂ below
        e_fp = _up(ga * self.e_fp + e_g * mag + e_b + here + fwd, 6)
        e_w = _up(ga * self.e_w, 1)
        return self._new(g[:, None] * self.T, g * self.t + b, e_w, e_fp)

    def add(self, other: _Forms) -> _Forms:
        mag = self.mag() + other.mag()
        e_fp = _up(self.e_fp + other.e_fp + (self.u + 2 * U64) * mag, 3)
        e_w = _up(self.e_w + other.e_w, 1)
        return self._new(self.T + other.T, self.t + other.t, e_w, e_fp)

    def rows(self, idx: slice | torch.Tensor) -> _Forms:
        return self._new(self.T[idx], self.t[idx], self.e_w[idx], self.e_fp[idx])

    def pad(self, n: int) -> _Forms:
        """Append ``n`` units that are exactly zero."""

        def cat(a: torch.Tensor) -> torch.Tensor:
            return torch.cat([a, a.new_zeros((n, *a.shape[1:]))])

        return self._new(cat(self.T), cat(self.t), cat(self.e_w), cat(self.e_fp))

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of ``T_k ĥ + t_k`` over the set of ĥ."""
        if self.nonneg:
            lo_n, hi_n = _rownorm(self.T.clamp(max=0.0)), _rownorm(self.T.clamp(min=0.0))
        else:
            lo_n = hi_n = _rownorm(self.T)
        slack = 2 * U64 * self.t.abs()
        return (self.t - _up(lo_n * self.radius, 2) - slack,
                self.t + _up(hi_n * self.radius, 2) + slack)  # fmt: skip

    def relu(self, stage: str, log: list[dict], skip: torch.Tensor | None = None) -> _Forms:
        """A ReLU inside a target layer: every unit should be proven on or off.

        ``skip`` marks units handled elsewhere (the carriers of a target ReLU): not logged.
        """
        lo, hi = self._range()
        trivial = (self.T == 0).all(dim=1) & (self.t == 0) & (self.E == 0)  # exactly zero
        on = (lo >= 0) & ~trivial
        zero = _up(hi + self.E, 2) <= 0  # computed value surely <= 0: exactly 0 after ReLU
        off = ((hi <= 0) & ~on) | trivial
        unproven = ~(on | off)
        T, t = self.T.clone(), self.t.clone()
        e_w, e_fp = self.e_w.clone(), self.e_fp.clone()
        rest = ~on
        T[rest] = 0.0
        t[rest] = 0.0
        mid = hi.clamp_min(0.0) / 2  # an unproven unit lies in [0, hi]: midpoint ± hi/2
        t[unproven] = mid[unproven]
        e_w[unproven] = _up(e_w[unproven] + mid[unproven], 2)
        e_w[zero & ~on] = 0.0
        e_fp[zero & ~on] = 0.0
        keep = torch.ones_like(on) if skip is None else ~skip
        log.append(_relu_entry(stage, on & keep, off & keep, unproven & keep, lo))
        return self._new(T, t, e_w, e_fp)

    def carried_error(self, W: torch.Tensor, b: torch.Tensor, carriers: torch.Tensor,
                      sigma: float):  # fmt: skip
        """Bounds on ``|ŝ_k − (W_i h + b_i)|`` for carrier ``k`` of target unit ``i``.

        ``≤ E_k + ‖T_k − W_i‖ ‖ĥ‖ + |t_k − b_i| + |W_i (ĥ − h)|``, where the last term is the
        smaller of ``|W_i| |ĥ − h|`` (elementwise) and ``‖W_i‖ ‖ĥ − h‖₂``. Returns the weights
        and rounding parts, elementwise and as 2-norms (the latter propagated with ``σ ≥ ‖W‖₂``,
        which grows more slowly with depth than ``|W|``).
        """
        W = W.to(self.T)
        c = self.rows(carriers)
        n = W.shape[1]
        Wa = W.abs()
        rn = _rownorm(W)
        carry_w, carry_f, norm_w, norm_f = self.carry
        mismatch = _up(_rownorm(c.T - W) * self.radius + (c.t - b.to(self.t)).abs(), 3)
        fresh_w = _up(c.e_w + mismatch, 2)
        prop_w = torch.minimum(_up(Wa @ carry_w, n), _up(rn * norm_w, 1))
        prop_f = torch.minimum(_up(Wa @ carry_f, n), _up(rn * norm_f, 1))
        err_w = _up(fresh_w + prop_w, 1)
        err_f = _up(c.e_fp + prop_f, 1)
        size = err_w.numel() + 2
        new_norm_w = min(float(_up(err_w.norm(), size)),
                         float(_up(_up(fresh_w.norm(), size) + sigma * norm_w, 2)))  # fmt: skip
        new_norm_f = min(float(_up(err_f.norm(), size)),
                         float(_up(_up(c.e_fp.norm(), size) + sigma * norm_f, 2)))  # fmt: skip
        return err_w, err_f, new_norm_w, new_norm_f

    def target_relu(
        self, W: torch.Tensor, b: torch.Tensor, carriers: torch.Tensor, radius_next: float,
        stage: str, log: list[dict], sigma: float,
    ) -> _Forms:  # fmt: skip
        """Re-express the units in the network's own values of the next hidden vector.

        ``carriers[i]`` is the unit that carries target unit ``i`` (its ReLU is the target's);
        every other unit goes through an ordinary ReLU and keeps only its constant part.
        """
        d_out = W.shape[0]
        carry = self.carried_error(W, b, carriers, sigma)
        is_carrier = torch.zeros(self.t.shape[0], dtype=torch.bool, device=self.t.device)
        is_carrier[carriers] = True
        after = self.relu(stage, log, skip=is_carrier)
        n = self.t.shape[0]
        T = self.T.new_zeros(n, d_out)
        T[carriers, torch.arange(d_out, device=T.device)] = 1.0
        t = after.t.clone()
        t[carriers] = 0.0
        # the other units keep their constant part and lose their dependence on ĥ
        e_w = _up(after.e_w + _rownorm(after.T) * self.radius, 3)
        e_fp = after.e_fp.clone()
        e_w[carriers] = 0.0
        e_fp[carriers] = 0.0
        log[-1]["carriers"] = d_out
        grown = float(_up(radius_next + carry[2] + carry[3], 2))  # ‖ĥ‖ <= ‖h‖ + ‖ĥ − h‖
        return _Forms(T, t, e_w, e_fp, carry=carry, radius=grown, nonneg=True, u=self.u)


def _relu_entry(stage, on, off, unproven, lo) -> dict:
    margin = float(lo[on].min()) if bool(on.any()) else math.nan
    return {
        "stage": stage,
        "on": int(on.sum()),
        "off": int(off.sum()),
        "unproven": int(unproven.sum()),
        "margin": margin,
    }


def _norm_params(layer: nn.Module, dtype: torch.dtype):
    """``γ̂, β̂`` of a normalization layer with bounds on ``|γ − γ̂|``, ``|β − β̂|``, |mean|, |bias|."""
    with torch.no_grad():
        w = layer.weight.detach().to(dtype)
        bias = layer.bias.detach().to(dtype)
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            if layer.training or layer.running_mean is None:
                raise ValueError(
                    "a BatchNorm layer uses batch statistics (training mode or no running "
                    "statistics): its output depends on the batch, so no bound holds; call "
                    "net.eval()"
                )
            mean = layer.running_mean.detach().to(dtype)
            var = layer.running_var.detach().to(dtype)
            g = w / torch.sqrt(var + layer.eps)
            b = bias - g * mean
            e_g = 8 * U64 * g.abs()
            e_b = 16 * U64 * ((g * mean).abs() + b.abs())
            return g, b, e_g, e_b, mean.abs(), bias.abs()
        zero = torch.zeros_like(w)
        return w, bias, zero, zero, zero, bias.abs()


def _weight(lin: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    w = lin.weight.detach()
    mask = getattr(lin, "mask", None)
    if mask is not None:
        w = w * mask  # exact: the mask is 0/1
    return w.to(dtype)


def target_rounding_bound(target, radii: list[float]) -> float:
    """A bound on ``‖fl(f(x)) − f(x)‖∞`` over the ball for the target evaluated in float64.

    ``|fl(W h̃ + b) − (W h̃ + b)| ≤ γ_(n+1) (|W||h̃| + |b|)`` per layer, with
    ``|W_i||h̃| ≤ ‖W_i‖ R_l + |W_i| err`` (Cauchy-Schwarz) and the error carried in through |W|.
    """
    err = torch.zeros(target.d_in, dtype=torch.float64)
    for l, (W, b) in enumerate(zip(target.weights, target.biases, strict=True)):
        n = W.shape[1]
        Wa = W.abs()
        dot = _up(_rownorm(W) * radii[l] + Wa @ err, n)
        err = _up(Wa @ err + _gamma(n + 1) * (dot + b.abs()), n + 2)
    return float(err.max())


def error_bound(net: nn.Module, target, radius: float) -> ErrorBound:
    """Prove a bound on ``max_{‖x‖ ≤ radius} ‖net(x) − target(x)‖∞`` (see the module docstring).

    Parameters
    ----------
    net : NormNet or ResidualNormNet
        A wide (also sparse) or residual construction; its own current parameters are used.
    target : TargetMLP
    radius : float

    Returns
    -------
    ErrorBound

    Raises
    ------
    ValueError
        The network's structure does not match the target (not a construction of it), or a
        BatchNorm is in training mode.
    """
    from normonly.network import NormNet
    from normonly.residual_network import ResidualNormNet

    p = next(net.parameters())
    u = torch.finfo(p.dtype).eps / 2
    dev = p.device
    radii = target_radii(target, radius)
    relu_log: list[dict] = []
    Ws = [w.to(dev) for w in target.weights]
    bs = [b.to(dev) for b in target.biases]
    d_in = target.d_in
    eye = torch.eye(d_in, dtype=torch.float64, device=dev)
    zeros = torch.zeros(d_in, dtype=torch.float64, device=dev)
    carry = (zeros.clone(), zeros.clone(), 0.0, 0.0)
    forms = _Forms(eye, zeros, zeros.clone(), zeros.clone(), carry=carry, radius=radii[0],
                   nonneg=False, u=u)  # fmt: skip
    sigmas = [spectral_norm_upper(w) for w in target.weights]
    if isinstance(net, ResidualNormNet):
        out = _residual(net, target, forms, Ws, bs, radii, sigmas, relu_log)
    elif isinstance(net, NormNet):
        out = _wide(net, target, forms, Ws, bs, radii, sigmas, relu_log)
    else:
        raise TypeError(
            f"a proven bound is available for NormNet and ResidualNormNet, got {type(net).__name__}"
        )
    tr = target_rounding_bound(target, radii)
    w_part, fp_part = float(out[0].max()), float(out[1].max())
    total = w_part + fp_part + tr
    if not math.isfinite(total):
        total = math.inf
    return ErrorBound(
        bound=float(_up(total, 3)) if math.isfinite(total) else math.inf,
        weights=w_part,
        rounding=fp_part,
        target_rounding=tr,
        dtype=str(p.dtype).replace("torch.", ""),
        radius=float(radius),
        relu=relu_log,
    )


def _check_shape(what: str, have: int, need: int) -> None:
    if have < need:
        raise ValueError(
            f"the network does not match the target: {what} has {have} units, the target needs "
            f"at least {need}"
        )


def _wide(net, target, forms: _Forms, Ws, bs, radii, sigmas, log):
    if len(net.linears) != 2 * target.depth:
        raise ValueError(
            f"the network has {len(net.linears)} layers, a wide construction of a depth-"
            f"{target.depth} target has {2 * target.depth}"
        )
    dt = torch.float64
    for l in range(target.depth):
        wide, narrow = 2 * l, 2 * l + 1
        Bm = _weight(net.linears[wide], dt)
        if Bm.shape[1] != forms.t.shape[0]:
            raise ValueError(
                f"the network's layer {wide} takes {Bm.shape[1]} inputs, the previous layer "
                f"gives {forms.t.shape[0]}"
            )
        forms = forms.linear(Bm).norm(net.norms[wide]).relu(f"layer {l} wide", log)
        forms = forms.linear(_weight(net.linears[narrow], dt)).norm(net.norms[narrow])
        d_out = Ws[l].shape[0]
        _check_shape(f"layer {narrow}", forms.t.shape[0], d_out)
        carriers = torch.arange(d_out, device=forms.t.device)
        if l == target.depth - 1:
            if forms.t.shape[0] != d_out:
                raise ValueError(
                    f"the network has {forms.t.shape[0]} outputs, the target {d_out}"
                )
            return forms.carried_error(Ws[l], bs[l], carriers, sigmas[l])
        forms = forms.target_relu(Ws[l], bs[l], carriers, radii[l + 1], f"layer {l} output",
                                  log, sigmas[l])  # fmt: skip
    raise AssertionError("unreachable")


def _residual(net, target, forms: _Forms, Ws, bs, radii, sigmas, log):
    layers = [c.get("layer") for c in (getattr(net, "meta", {}) or {}).get("layers", [])]
    if len(layers) != net.depth or sorted(set(layers)) != list(range(target.depth)):
        raise ValueError(
            "the residual network does not record which target layer each of its blocks "
            f"computes (meta['layers'] has {len(layers)} entries for {net.depth} blocks and "
            f"{target.depth} target layers): rebuild it with normonly.reconstruct"
        )
    r = net.register
    dt = torch.float64
    forms = forms.norm(net.lift).pad(2 * r - target.d_in)
    for idx, blk in enumerate(net.blocks):
        l = layers[idx]
        last_block = idx == len(layers) - 1 or layers[idx + 1] != l
        inner = forms.norm(blk.norm_in).linear(_weight(blk.linear_in, dt)).norm(blk.norm_hid)
        inner = inner.relu(f"layer {l} block {idx} hidden", log)
        delta = inner.linear(_weight(blk.linear_out, dt)).norm(blk.norm_out)
        pre = forms.add(delta)
        if last_block and l < target.depth - 1:
            dst = ((l + 1) % 2) * r
            carriers = torch.arange(dst, dst + Ws[l].shape[0], device=pre.t.device)
            forms = pre.target_relu(Ws[l], bs[l], carriers, radii[l + 1], f"layer {l} output",
                                    log, sigmas[l])  # fmt: skip
        else:
            forms = pre.relu(f"layer {l} block {idx} stream", log)
    start = net.config["out_register"] * r
    out = forms.rows(slice(start, start + target.d_out)).norm(net.readout)
    carriers = torch.arange(target.d_out, device=out.t.device)
    return out.carried_error(Ws[-1], bs[-1], carriers, sigmas[-1])
