"""The proven whole-ball bound: sound against exact arithmetic and attacks, tight, and pinned."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from normonly import TargetMLP, reconstruct, verify
from normonly.certificate.bound import error_bound, spectral_norm_upper
from normonly.certificate.verify import DEFAULT_RTOL
from normonly.nets.layers import Affine, MaskedLinear
from normonly.nets.residual import ResidualNormNet
from normonly.nets.wide import NormNet

F64 = torch.float64


# --------------------------------------------------------------------------- helpers
def _ball_points(n: int, d: int, radius: float, seed: int) -> torch.Tensor:
    """n points: half strictly inside the ball, half on its sphere (norm R, rounded down)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    x = x / x.norm(dim=1, keepdim=True)
    r = torch.rand(n, 1, generator=g, dtype=F64) ** (1 / d)
    r[n // 2 :] = 1.0
    return x * r * radius * (1 - 1e-15)


def attack(net, f: TargetMLP, radius: float, *, starts: int = 48, steps: int = 60) -> float:
    """Projected gradient ascent on ‖net(x) − f(x)‖∞ from many starts, plus sphere points."""
    ref = f.to_torch(F64)
    x = _ball_points(starts, f.d_in, radius, seed=11).requires_grad_(True)
    best = 0.0
    step = 0.05 * radius
    for _ in range(steps):
        err = (net(x) - ref(x)).abs().max(dim=1).values
        best = max(best, float(err.detach().max()))
        (grad,) = torch.autograd.grad(err.sum(), x)
        with torch.no_grad():
            x += step * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-300)
            norms = x.norm(dim=1, keepdim=True)
            x *= torch.clamp(radius * (1 - 1e-15) / norms, max=1.0)
    with torch.no_grad():
        sphere = _ball_points(4000, f.d_in, radius, seed=12)
        best = max(best, float((net(sphere) - ref(sphere)).abs().max()))
    return best


def _build(method: str, widths, *, radius=2.0, density=1.0, norm="batchnorm", seed=0):
    f = TargetMLP.random(widths, seed=seed)
    kw = {"k": 2} if method == "residual" else {}
    rec = reconstruct(f, method=method, radius=radius, overparam=2.0, density=density,
                      norm=norm, seed=seed, n_points=500, **kw)  # fmt: skip
    return f, rec


CONSTRUCTIONS = {
    "wide": dict(method="wide", widths=[6, 8, 4]),
    "residual": dict(method="residual", widths=[6, 8, 4]),
    "sparse": dict(method="wide", widths=[6, 8, 4], density=0.7),
    "affine": dict(method="wide", widths=[5, 6, 6, 3], norm="affine"),
}


def _perturb(net, how: str) -> None:
    """Edit a built network in place (the bound must judge it as it is now)."""
    norms = net.norm_layers()
    hidden = norms[0] if isinstance(net, NormNet) else norms[2]  # a wide / hidden layer
    narrow = norms[1] if isinstance(net, NormNet) else norms[3]
    unit = 0 if isinstance(net, NormNet) else net.register  # a unit that carries an output
    with torch.no_grad():
        if how == "gamma 1e-3":
            k = int(hidden.weight.abs().argmax())
            hidden.weight[k] *= 1 + 1e-3
        elif how == "shifts 0.6":  # always-on units switch off inside the ball
            hidden.bias.mul_(0.6)
        elif how == "running mean":
            if isinstance(narrow, Affine):
                narrow.bias[unit] += 0.01
            else:
                narrow.running_mean[unit] += 0.01
        elif how == "narrow gamma 1e-6":
            narrow.weight.mul_(1 + 1e-6)
        elif how == "mask":
            lin = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
            if isinstance(lin, MaskedLinear):
                i, j = (lin.mask == 1).nonzero()[0].tolist()
                lin.mask[i, j] = 0.0
            else:
                lin.weight[0, 0] *= 0.5


# --------------------------------------------------------------------------- soundness
@pytest.mark.parametrize("name", list(CONSTRUCTIONS))
@pytest.mark.parametrize("how", [None, "gamma 1e-3", "shifts 0.6", "running mean",
                                 "narrow gamma 1e-6", "mask"])  # fmt: skip
def test_bound_is_never_below_the_error_an_attacker_finds(name, how):
    spec = dict(CONSTRUCTIONS[name])
    f, rec = _build(spec.pop("method"), spec.pop("widths"), **spec)
    if how is not None:
        _perturb(rec.net, how)
    eb = error_bound(rec.net, f, 2.0)
    found = attack(rec.net, f, 2.0)
    assert found <= eb.bound, (name, how, found, eb)
    if how is None:
        assert eb.bound <= DEFAULT_RTOL * 1.0  # tight: output scales here are ~1
    else:
        assert found > 1e-9 and eb.bound > 1e-9  # every edit is a real error, and is seen
    cert = verify(rec.net, f, n_points=500)
    assert cert.passed == (how is None), cert.summary()


def test_switched_off_relus_are_reported_as_unproven():
    f, rec = _build("wide", [6, 8, 4])
    _perturb(rec.net, "shifts 0.6")
    eb = error_bound(rec.net, f, 2.0)
    assert eb.unproven_relus > 0 and eb.weights > eb.rounding
    cert = verify(rec.net, f)
    assert not cert.passed and "not proven" in cert.reason


# --------------------------------------------------------------------------- exact reference
def _exact_forward(net, x: list[float]) -> list[Fraction]:
    """The network in exact rational arithmetic (affine norms: every parameter is rational)."""

    def lin(layer, h):
        w = layer.weight.detach()
        if isinstance(layer, MaskedLinear):
            w = w * layer.mask
        rows = w.tolist()
        return [sum((Fraction(a) * v for a, v in zip(r, h, strict=True)), Fraction(0))
                for r in rows]  # fmt: skip

    def aff(layer, z):
        g, b = layer.weight.tolist(), layer.bias.tolist()
        return [Fraction(gi) * zi + Fraction(bi) for gi, zi, bi in zip(g, z, b, strict=True)]

    def relu(z):
        return [max(v, Fraction(0)) for v in z]

    h = [Fraction(v) for v in x]
    if isinstance(net, NormNet):
        last = len(net.linears) - 1
        for i, (li, no) in enumerate(zip(net.linears, net.norms, strict=True)):
            h = aff(no, lin(li, h))
            h = relu(h) if i < last else h
        return h
    r = net.register
    s = aff(net.lift, h) + [Fraction(0)] * (2 * r - net.d_in)
    for blk in net.blocks:
        a = relu(aff(blk.norm_hid, lin(blk.linear_in, aff(blk.norm_in, s))))
        d = aff(blk.norm_out, lin(blk.linear_out, a))
        s = relu([u + v for u, v in zip(s, d, strict=True)])
    start = net.config["out_register"] * r
    return aff(net.readout, s[start : start + net.d_out])


def _exact_target(f: TargetMLP, x: list[float]) -> list[Fraction]:
    h = [Fraction(v) for v in x]
    for i, (w, b) in enumerate(zip(f.weights, f.biases, strict=True)):
        h = [sum((Fraction(a) * v for a, v in zip(r, h, strict=True)), Fraction(bi))
             for r, bi in zip(w.tolist(), b.tolist(), strict=True)]  # fmt: skip
        if i < f.depth - 1:
            h = [max(v, Fraction(0)) for v in h]
    return h


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wide", "residual"])
@pytest.mark.parametrize("edit", [None, 1e-6])
def test_bound_holds_in_exact_rational_arithmetic(method, edit):
    """Slow reference: exact rationals for the target and the network, float64 for the net."""
    f = TargetMLP.random([2, 3, 2], seed=3)
    kw = {"k": 1} if method == "residual" else {}
    rec = reconstruct(f, method=method, radius=1.5, overparam=2.0, norm="affine", n_points=200,
                      **kw)  # fmt: skip
    net = rec.net
    if edit is not None:
        with torch.no_grad():
            net.norm_layers()[-1].weight.mul_(1 + edit)
    eb = error_bound(net, f, 1.5)
    x = _ball_points(60, 2, 1.5, seed=4)
    with torch.no_grad():
        y = net(x)
    worst_float, worst_exact = Fraction(0), Fraction(0)
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        fx = _exact_target(f, xi)
        nx = _exact_forward(net, xi)
        diffs = [abs(Fraction(a) - b) for a, b in zip(yi, fx, strict=True)]
        worst_float = max(worst_float, max(diffs))
        worst_exact = max(worst_exact, max(abs(a - b) for a, b in zip(nx, fx, strict=True)))
    assert worst_float <= Fraction(eb.bound)  # the float64 network vs the exact target
    assert worst_exact <= Fraction(eb.bound)  # the network in exact arithmetic, too
    if edit is not None:
        assert worst_exact > Fraction(eb.rounding)  # the edit is an error beyond rounding


# --------------------------------------------------------------------------- pinned tolerance
@pytest.mark.parametrize("method", ["wide", "residual"])
def test_a_gamma_perturbed_by_1e9_fails(method):
    f = TargetMLP.random([16, 16, 16, 8], seed=1)
    rec = reconstruct(f, method=method, radius=1.0, overparam=2.0, n_points=1000)
    assert rec.certificate.passed
    hidden = rec.net.norm_layers()[0 if method == "wide" else 2]
    with torch.no_grad():
        k = int(hidden.weight.abs().argmax())
        hidden.weight[k] *= 1 + 1e-9
    cert = verify(rec.net, f, n_points=1000)
    assert not cert.passed, cert.summary()
    assert "effective weights" in cert.reason


def test_perturbed_nets_have_bounds_above_their_true_error():
    f, rec = _build("wide", [6, 8, 4])
    for scale in [1e-9, 1e-6, 1e-3]:
        with torch.no_grad():
            rec.net.norms[1].weight.mul_(1 + scale)
        eb = error_bound(rec.net, f, 2.0)
        assert attack(rec.net, f, 2.0, starts=16, steps=30) <= eb.bound
        assert not verify(rec.net, f, n_points=300).passed


def test_tolerance_is_the_stated_one():
    f, rec = _build("wide", [6, 8, 4])
    cert = rec.certificate
    assert cert.tolerance == DEFAULT_RTOL == 1e-9
    assert cert.passed == (cert.error_bound <= cert.tolerance * cert.output_scale)
    tight = verify(rec.net, f, n_points=300, rtol=cert.bound_rel / 2)
    assert not tight.passed  # a tolerance below the proven bound fails


# --------------------------------------------------------------------------- pieces
def test_spectral_norm_upper_is_an_upper_bound_within_ulps():
    g = torch.Generator().manual_seed(0)
    for shape in [(1, 1), (3, 7), (16, 16), (40, 9), (64, 64)]:
        W = torch.randn(*shape, generator=g, dtype=F64)
        exact = float(torch.linalg.matrix_norm(W, ord=2))
        ub = spectral_norm_upper(W)
        assert exact <= ub <= exact * (1 + 1e-12)
    assert spectral_norm_upper(torch.zeros(3, 4, dtype=F64)) == 0.0


def test_the_bound_reads_the_nets_current_parameters_not_the_solve():
    f, rec = _build("wide", [6, 8, 4])
    before = error_bound(rec.net, f, 2.0).bound
    with torch.no_grad():
        rec.net.norms[0].running_var.mul_(1.5)  # an edit that changes γ_eff
    after = error_bound(rec.net, f, 2.0)
    assert after.bound > 1e3 * before and after.weights > after.rounding


def test_a_training_mode_batchnorm_has_no_bound():
    f, rec = _build("wide", [6, 8, 4])
    rec.net.set_batchnorm_train(True)
    rec.net.train()
    cert = verify(rec.net, f, n_points=200)
    assert not cert.passed and cert.error_bound is None
    assert any("training mode" in n for n in cert.notes)


def test_float32_network_gets_its_own_bound_and_never_passes():
    f, rec = _build("wide", [6, 8, 4])
    net32 = rec.net.float()
    cert = verify(net32, f, n_points=500)
    assert not cert.passed and cert.dtype == "float32"
    assert cert.error_bound is not None and math.isfinite(cert.error_bound)
    assert cert.max_abs_error <= cert.error_bound  # its bound uses float32 rounding
    assert "float64 only" in cert.reason


def test_residual_without_block_layout_is_refused_clearly():
    net = ResidualNormNet(d_in=2, d_out=2, register=2, hidden=[4], seed=0)
    f = TargetMLP.random([2, 2], seed=0)
    with pytest.raises(ValueError, match="does not record which target layer"):
        error_bound(net, f, 1.0)


def test_nets_built_directly_carry_what_the_bound_needs():
    from normonly.construct.residual import build_residual
    from normonly.construct.wide import build_wide

    f = TargetMLP.random([4, 6, 3], seed=2)
    for net, _ in (build_residual(f, radius=1.5, k=2, overparam=2.0),
                   build_wide(f, radius=1.5, overparam=2.0)):  # fmt: skip
        assert net.meta["radius"] == 1.5 and len(net.meta["layers"]) >= f.depth
        cert = verify(net, f, n_points=300)  # the radius comes from the net
        assert cert.passed and cert.radius == 1.5, cert.summary()
