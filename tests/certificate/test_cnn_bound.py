"""The proven bound for rebuilt CNNs: sound against sampling and attacks, tight, honest on edits."""

from __future__ import annotations

import pytest
import torch

from normonly import TargetCNN, reconstruct, verify
from normonly.certificate.cnn import cnn_error_bound
from normonly.certificate.verify import DEFAULT_RTOL

F64 = torch.float64

CASES = {
    "pool, linear head": dict(input_shape=(1, 8, 8), channels=[3, 4], d_out=3, pool=2),
    "3 convs, strides, dilation": dict(
        input_shape=(2, 7, 7), channels=[2, 3, 2], kernel=[3, 2, 3], stride=[1, 2, 1],
        padding=[1, 0, 2], dilation=[1, 1, 2], bias=False),
    "overlapping pool 3x3": dict(input_shape=(1, 7, 7), channels=[2, 2], d_out=2, pool=3),
}  # fmt: skip


def attack(net, f: TargetCNN, radius: float, *, starts: int = 24, steps: int = 40) -> float:
    """Projected gradient ascent on ‖net(x) − f(x)‖∞ inside the ball, from seeded starts."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(starts, f.d_in, generator=g, dtype=F64)
    x = x / x.norm(dim=1, keepdim=True) * radius * (1 - 1e-15)
    x[: starts // 2] *= torch.rand(starts // 2, 1, generator=g, dtype=F64)
    x.requires_grad_(True)
    ref = f.to_torch()
    best = 0.0
    for _ in range(steps):
        err = (net(x) - ref(x.reshape(-1, *f.input_shape))).abs().max(dim=1).values
        best = max(best, float(err.detach().max()))
        (grad,) = torch.autograd.grad(err.sum(), x)
        with torch.no_grad():
            x += 0.05 * radius * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-300)
            x *= torch.clamp(radius * (1 - 1e-15) / x.norm(dim=1, keepdim=True), max=1.0)
    return best


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("radius", [1.0, 5.0])
def test_certificate_passes_and_the_bound_covers_the_sampled_error(name, radius):
    f = TargetCNN.random(seed=5, **CASES[name])
    rec = reconstruct(f, radius=radius, overparam=2.0, seed=0, n_points=1000)
    c = rec.certificate
    assert c.passed, c.reason
    assert c.method == "cnn" and c.max_abs_error <= c.error_bound <= DEFAULT_RTOL * c.output_scale
    assert c.max_abs_error_sphere <= c.error_bound and c.relu_unproven == 0


@pytest.mark.slow
def test_bound_is_never_below_the_error_an_attacker_finds():
    f = TargetCNN.random(seed=1, **CASES["pool, linear head"])
    net = reconstruct(f, radius=2.0, overparam=2.0, n_points=200).net
    eb = cnn_error_bound(net, f, 2.0)
    assert attack(net, f, 2.0) <= eb.bound <= DEFAULT_RTOL
    with torch.no_grad():  # an edited γ is a real error: seen by the attacker, covered by the bound
        net.wide_norms[1].weight[0] *= 1.01
    eb = cnn_error_bound(net, f, 2.0)
    found = attack(net, f, 2.0)
    assert 1e-9 < found <= eb.bound
    cert = verify(net, f, n_points=500)
    assert not cert.passed and "effective weights" in cert.reason


def test_switched_off_relus_are_reported_as_unproven():
    f = TargetCNN.random(seed=2, input_shape=(1, 5, 5), channels=[2, 2], d_out=2)
    net = reconstruct(f, radius=1.0, overparam=2.0, n_points=200).net
    with torch.no_grad():
        net.wide_norms[0].bias.mul_(0.3)  # shifts too small: some ReLUs switch off
    eb = cnn_error_bound(net, f, 1.0)
    assert eb.unproven_relus > 0 and eb.bound > 1e-6


def test_data_of_images_is_checked_and_a_larger_radius_refused():
    f = TargetCNN.random(seed=0, input_shape=(1, 5, 5), channels=[2], d_out=2)
    X = torch.randn(10, 1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    rec = reconstruct(f, data=X, overparam=2.0, n_points=200)
    assert rec.certificate.passed and rec.certificate.data_points == 10
    from normonly.errors import CertificateError

    with pytest.raises(CertificateError, match="exceeds the radius"):
        verify(rec.net, f, radius=2 * rec.certificate.radius)


def test_mismatched_network_is_refused():
    f = TargetCNN.random(seed=0, input_shape=(1, 5, 5), channels=[2], d_out=2)
    g = TargetCNN.random(seed=0, input_shape=(1, 5, 5), channels=[2, 2])
    net = reconstruct(f, radius=1.0, overparam=2.0, n_points=200).net
    with pytest.raises(ValueError, match="do not match"):
        cnn_error_bound(net, g, 1.0)
    with pytest.raises(TypeError, match="needs a NormCNN"):
        cnn_error_bound(torch.nn.Linear(2, 2), f, 1.0)
