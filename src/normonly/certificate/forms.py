"""Affine forms with error bounds, pushed through the layers of a network (see .bound)."""

from __future__ import annotations

import math

import torch
from torch import nn

from normonly.certificate.rigorous import U64, gamma, rownorm, tree_matmul, up
from normonly.nets.layers import summation_depth

__all__ = ["Forms", "norm_params", "frozen_weight"]

_NORM_ROUNDINGS = 16  # c of certificate.bound: per-unit rounding allowance of a normalization layer


class Forms:
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

    def _new(self, T, t, e_w, e_fp) -> Forms:
        return Forms(T, t, e_w, e_fp, carry=self.carry, radius=self.radius,
                      nonneg=self.nonneg, u=self.u)  # fmt: skip

    @property
    def E(self) -> torch.Tensor:
        return self.e_w + self.e_fp

    def mag(self) -> torch.Tensor:
        """Upper bound on ``|ŝ_k|`` over the ball (the form's exact range, plus ``E``)."""
        lo, hi = self._range()
        return up(torch.maximum(lo.abs(), hi.abs()) + self.E, 2)

    def linear(self, M: torch.Tensor, *, blocked: bool = False) -> Forms:
        """The forms after the frozen map ``M`` (``blocked``: the net sums as blocked_linear)."""
        return self._finish_linear(self._linear_parts(M), M.shape[1], blocked)

    def _linear_parts(self, M: torch.Tensor) -> list:
        """The sums over the columns of ``M`` that :meth:`linear` is made of.

        ``[|M| e_w, |M| e_fp, |M| mag, M [T t], nonzero terms per row, k]``; sums over disjoint
        column blocks add up (:meth:`wide_pair`), with one rounding more per block for ``M [T t]``.
        """
        Ma = M.abs()
        mag = self.mag()
        sel = _selection(self.T)
        if sel is not None:  # T only picks inputs (first layer: T = I): M T is exact, no rounding
            Tt = M.new_zeros(M.shape[0], self.T.shape[1] + 1)
            Tt[:, sel[1]] = M[:, sel[0]]
            tcol, k = tree_matmul(M, self.t[:, None])
            Tt[:, -1] = tcol[:, 0]
        else:
            Tt, k = tree_matmul(M, torch.cat([self.T, self.t[:, None]], dim=1))
        nz = M != 0
        if not bool((mag > 0).all()):
            nz &= (mag > 0)[None, :]
        return [Ma @ self.e_w, Ma @ self.e_fp, Ma @ mag, Tt, nz.sum(dim=1), k]

    def _finish_linear(self, parts: list, n: int, blocked: bool) -> Forms:
        Sw, Sf, Smag, Tt, nnz, k = parts
        # The network's own product rounds with γ_n per output, n the roundings one term can
        # go through: at most the number of nonzero terms (a term whose weight or input is
        # exactly zero is an exact zero, and adding it is exact in any order: switched-off
        # units of a uniform-width net, masked weights), and at most the depth of the blocked
        # summation of nets.layers.blocked_linear. Ours (a summation tree) rounds with γ_k.
        nnz = nnz.to(Smag.dtype)
        nu = (nnz.clamp(max=summation_depth(n)) if blocked else nnz) * self.u
        g_net = nu / (1.0 - nu)
        e_w = up(Sw, n)
        e_fp = up(Sf + g_net * Smag + gamma(k) * Smag, n)
        return self._new(Tt[:, :-1], Tt[:, -1], e_w, e_fp)

    def wide_pair(
        self, B: torch.Tensor, wide_norm: nn.Module, A: torch.Tensor, *, blocked_b: bool,
        blocked_a: bool, stage: str, log: list[dict], budget_bytes: int = 64 * 2**20,
    ) -> Forms:  # fmt: skip
        """``self.linear(B).norm(wide_norm).relu(stage, log).linear(A)``, over blocks of units.

        The m wide units are independent until ``A`` sums them, so they are handled
        ``budget_bytes // (8 (d+1))`` at a time and only ``A``'s sums are kept: memory
        O(budget), not O(m d), whatever the width (a width-512 layer has m = 524,288).
        """
        m = B.shape[0]
        params = norm_params(wide_norm, self.t.dtype)
        rows = max(1, budget_bytes // (8 * (self.T.shape[1] + 1)))
        entries: list[dict] = []
        acc: list | None = None
        for s in range(0, m, rows):
            e = min(m, s + rows)
            f = self.linear(B[s:e], blocked=blocked_b)._affine([p[s:e] for p in params])
            parts = f.relu(stage, entries)._linear_parts(A[:, s:e])
            if acc is None:
                acc = parts
            else:  # one more rounding per block for the sequential sum of M [T t]
                k = max(acc[5], parts[5]) + 1
                acc = [a + b for a, b in zip(acc[:5], parts[:5], strict=True)] + [k]
        log.append(_merge_entries(entries))
        return self._finish_linear(acc, m, blocked_a)

    def norm(self, layer: nn.Module) -> Forms:
        return self._affine(norm_params(layer, self.t.dtype))

    def _affine(self, params) -> Forms:
        """The forms after a per-unit affine map given by ``norm_params``' six vectors."""
        g, b, e_g, e_b, mean_abs, bias_abs = params
        mag = self.mag()
        ga = g.abs()
        fwd = _NORM_ROUNDINGS * self.u * (ga * (mag + mean_abs) + bias_abs)
        here = 3 * U64 * (ga * mag + b.abs())  # rounding of γ̂ T and γ̂ t + β̂ below
        e_fp = up(ga * self.e_fp + e_g * mag + e_b + here + fwd, 6)
        e_w = up(ga * self.e_w, 1)
        return self._new(g[:, None] * self.T, g * self.t + b, e_w, e_fp)

    def add(self, other: Forms) -> Forms:
        mag = self.mag() + other.mag()
        e_fp = up(self.e_fp + other.e_fp + (self.u + 2 * U64) * mag, 3)
        e_w = up(self.e_w + other.e_w, 1)
        return self._new(self.T + other.T, self.t + other.t, e_w, e_fp)

    def rows(self, idx: slice | torch.Tensor) -> Forms:
        return self._new(self.T[idx], self.t[idx], self.e_w[idx], self.e_fp[idx])

    def pad(self, n: int) -> Forms:
        """Append ``n`` units that are exactly zero."""

        def cat(a: torch.Tensor) -> torch.Tensor:
            return torch.cat([a, a.new_zeros((n, *a.shape[1:]))])

        return self._new(cat(self.T), cat(self.t), cat(self.e_w), cat(self.e_fp))

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of ``T_k ĥ + t_k`` over the set of ĥ."""
        if self.nonneg:
            lo_n, hi_n = rownorm(self.T.clamp(max=0.0)), rownorm(self.T.clamp(min=0.0))
        else:
            lo_n = hi_n = rownorm(self.T)
        slack = 2 * U64 * self.t.abs()
        return (self.t - up(lo_n * self.radius, 2) - slack,
                self.t + up(hi_n * self.radius, 2) + slack)  # fmt: skip

    def relu(self, stage: str, log: list[dict], skip: torch.Tensor | None = None) -> Forms:
        """A ReLU inside a target layer: every unit should be proven on or off.

        ``skip`` marks units handled elsewhere (the carriers of a target ReLU): not logged.
        """
        lo, hi = self._range()
        trivial = (self.T == 0).all(dim=1) & (self.t == 0) & (self.E == 0)  # exactly zero
        on = (lo >= 0) & ~trivial
        zero = up(hi + self.E, 2) <= 0  # computed value surely <= 0: exactly 0 after ReLU
        off = ((hi <= 0) & ~on) | trivial
        unproven = ~(on | off)
        T, t = self.T.clone(), self.t.clone()
        e_w, e_fp = self.e_w.clone(), self.e_fp.clone()
        rest = ~on
        T[rest] = 0.0
        t[rest] = 0.0
        mid = hi.clamp_min(0.0) / 2  # an unproven unit lies in [0, hi]: midpoint ± hi/2
        t[unproven] = mid[unproven]
        e_w[unproven] = up(e_w[unproven] + mid[unproven], 2)
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
        rn = rownorm(W)
        carry_w, carry_f, norm_w, norm_f = self.carry
        mismatch = up(rownorm(c.T - W) * self.radius + (c.t - b.to(self.t)).abs(), 3)
        fresh_w = up(c.e_w + mismatch, 2)
        prop_w = torch.minimum(up(Wa @ carry_w, n), up(rn * norm_w, 1))
        prop_f = torch.minimum(up(Wa @ carry_f, n), up(rn * norm_f, 1))
        err_w = up(fresh_w + prop_w, 1)
        err_f = up(c.e_fp + prop_f, 1)
        size = err_w.numel() + 2
        new_norm_w = min(float(up(err_w.norm(), size)),
                         float(up(up(fresh_w.norm(), size) + sigma * norm_w, 2)))  # fmt: skip
        new_norm_f = min(float(up(err_f.norm(), size)),
                         float(up(up(c.e_fp.norm(), size) + sigma * norm_f, 2)))  # fmt: skip
        return err_w, err_f, new_norm_w, new_norm_f

    def target_relu(
        self, W: torch.Tensor, b: torch.Tensor, carriers: torch.Tensor, radius_next: float,
        stage: str, log: list[dict], sigma: float,
    ) -> Forms:  # fmt: skip
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
        e_w = up(after.e_w + rownorm(after.T) * self.radius, 3)
        e_fp = after.e_fp.clone()
        e_w[carriers] = 0.0
        e_fp[carriers] = 0.0
        log[-1]["carriers"] = d_out
        grown = float(up(radius_next + carry[2] + carry[3], 2))  # ‖ĥ‖ <= ‖h‖ + ‖ĥ − h‖
        return Forms(T, t, e_w, e_fp, carry=carry, radius=grown, nonneg=True, u=self.u)


def _selection(T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(rows, cols)`` of the ones if ``T`` is 0/1 with at most one 1 per row and column."""
    if T.shape[0] and not bool(((T[0] == 0) | (T[0] == 1)).all()):
        return None  # the forms of a wide layer: decided by their first row, at no cost
    ones = T == 1
    if not bool((ones | (T == 0)).all()):
        return None
    if bool((ones.sum(dim=0) > 1).any()) or bool((ones.sum(dim=1) > 1).any()):
        return None
    rows, cols = ones.nonzero(as_tuple=True)
    return rows, cols


def _merge_entries(entries: list[dict]) -> dict:
    """One ReLU log entry for a stage handled in blocks."""
    margins = [e["margin"] for e in entries if not math.isnan(e["margin"])]
    return {
        "stage": entries[0]["stage"],
        "on": sum(e["on"] for e in entries),
        "off": sum(e["off"] for e in entries),
        "unproven": sum(e["unproven"] for e in entries),
        "margin": min(margins) if margins else math.nan,
    }


def _relu_entry(stage, on, off, unproven, lo) -> dict:
    margin = float(lo[on].min()) if bool(on.any()) else math.nan
    return {
        "stage": stage,
        "on": int(on.sum()),
        "off": int(off.sum()),
        "unproven": int(unproven.sum()),
        "margin": margin,
    }


def norm_params(layer: nn.Module, dtype: torch.dtype):
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


def frozen_weight(lin: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    w = lin.weight.detach()
    mask = getattr(lin, "mask", None)
    if mask is not None:
        w = w * mask  # exact: the mask is 0/1
    return w.to(dtype)

