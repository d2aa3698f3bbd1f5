"""The device path (``device="cuda"`` when a GPU is there, else the same code on the CPU).

Marked ``device``: ``benchmarks/device_check.sh`` runs exactly these on a CUDA machine
(``NORMONLY_TEST_DEVICE=cuda``); in the normal suite they run on CUDA if available, else CPU.
"""

import os

import pytest
import torch

from normonly import reconstruct
from normonly.certificate.bound import error_bound
from normonly.linalg.solve import solve_scales
from normonly.nets.layers import blocked_linear
from normonly.nets.target import TargetMLP

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def device() -> str:
    dev = os.environ.get("NORMONLY_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail("NORMONLY_TEST_DEVICE asks for CUDA but torch sees no CUDA device")
    return dev


@pytest.mark.parametrize("method", ["wide", "residual"])
def test_reconstruct_on_device_is_exact_and_certified(device, method):
    f = TargetMLP.random([5, 7, 3], seed=2)
    rec = reconstruct(f, method=method, radius=2.0, overparam=2, device=device, n_points=400)
    p = next(rec.net.parameters())
    assert p.device.type == torch.device(device).type
    assert rec.certificate.passed, rec.certificate.reason
    x = torch.randn(64, 5, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * 2.0  # on the sphere
    with torch.no_grad():
        err = (rec.net(x.to(device)).cpu() - f(x)).abs().max()
    assert float(err) <= rec.certificate.error_bound


def test_mixed_solver_on_device(device):
    g = torch.Generator().manual_seed(3)
    A = torch.randn(12, 300, generator=g, dtype=torch.float64).to(device)
    B = torch.randn(300, 10, generator=g, dtype=torch.float64).to(device)
    W = torch.randn(12, 10, generator=g, dtype=torch.float64).to(device)
    gamma, info = solve_scales(A, B, W, solver="mixed")
    assert gamma.device.type == torch.device(device).type
    assert info.rel_residual <= 64 * torch.finfo(torch.float64).eps
    assert torch.allclose((A * gamma) @ B, W, rtol=0, atol=1e-12)


def test_blocked_linear_on_device_matches_cpu(device):
    x = torch.randn(8, 3000, dtype=torch.float64)
    w = torch.randn(4, 3000, dtype=torch.float64)
    here = blocked_linear(x.to(device), w.to(device)).cpu()
    exact = (x[:, None, :] * w[None]).sum(-1)  # (8, 4), an independent reference on the CPU
    assert torch.allclose(here, exact, rtol=1e-12, atol=1e-12)


def test_bound_on_device_holds_at_sampled_points(device):
    f = TargetMLP.random([4, 6, 2], seed=5)
    rec = reconstruct(f, radius=1.0, overparam=2, device=device, n_points=200)
    eb = error_bound(rec.net, f, 1.0)
    x = torch.randn(500, 4, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    with torch.no_grad():
        err = float((rec.net(x.to(device)).cpu() - f(x)).abs().max())
    assert err <= eb.bound < 1e-9 * float(f(x).abs().max())
