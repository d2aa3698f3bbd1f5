"""Certificate and verify: sampling, error measurement, radius checks, serialisation."""

from __future__ import annotations

import json

import pytest
import torch

from normonly import CertificateError, TargetMLP, load_network, reconstruct, sample_ball, verify


def test_sample_ball_inside_and_on_sphere_and_seeded():
    inside, sphere = sample_ball(1001, 4, 2.5, seed=3)
    assert inside.shape == (501, 4) and sphere.shape == (500, 4)
    assert inside.norm(dim=1).max() <= 2.5 + 1e-12
    assert torch.allclose(sphere.norm(dim=1), torch.full((500,), 2.5, dtype=torch.float64))
    assert torch.equal(inside[0], torch.zeros(4, dtype=torch.float64))
    again, _ = sample_ball(1001, 4, 2.5, seed=3)
    assert torch.equal(inside, again)


def test_verify_detects_a_wrong_network():
    f = TargetMLP.random([3, 5, 2], seed=0)
    rec = reconstruct(f, radius=1.0, n_points=200)
    with torch.no_grad():
        rec.net.norms[-1].bias[0] += 1e-3  # a small error must be caught, not certified
    cert = verify(rec.net, f, radius=1.0, n_points=500)
    assert not cert.passed
    assert 5e-4 < cert.max_abs_error < 2e-3


def test_verify_refuses_radius_beyond_certified(tmp_path):
    f = TargetMLP.random([3, 4, 2], seed=0)
    rec = reconstruct(f, radius=1.0, n_points=100)
    with pytest.raises(CertificateError, match="exceeds the radius 1"):
        verify(rec.net, f, radius=2.0)
    rec.net.save(tmp_path / "net.safetensors")
    net = load_network(tmp_path / "net.safetensors")
    cert = verify(net, f, radius=0.5, n_points=300)  # smaller radius: fine
    assert cert.passed and len(cert.layers) == 2
    with pytest.raises(CertificateError):
        verify(net, f, radius=1.5)
    other = TargetMLP.random([3, 5, 2], seed=0)
    with pytest.raises(ValueError, match="built for a target with widths"):
        verify(net, other, radius=1.0)


def test_certificate_serialises_and_prints():
    rec = reconstruct(TargetMLP.random([2, 3, 1], seed=0), radius=2.0, n_points=100)
    d = json.loads(rec.certificate.to_json())
    assert d["radius"] == 2.0 and d["dtype"] == "float64" and len(d["layers"]) == 2
    assert {"rank", "cond", "rel_residual", "relu_margin"} <= set(d["layers"][0])
    table = rec.certificate.to_table()
    assert "PASS" in table and "ball ||x|| <= 2" in table and "proven bound" in table
