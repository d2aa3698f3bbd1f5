"""Numerical edge cases (issue 9): the certificate passes, and the error it reports is real."""

from __future__ import annotations

import pytest
import torch

from normonly import TargetMLP, reconstruct, verify

F64 = torch.float64


def _zero_row_col():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 3, generator=g, dtype=F64)
    W[1] = 0.0  # a dead output unit
    W[:, 2] = 0.0  # an ignored input
    return TargetMLP(
        [W, torch.randn(2, 4, generator=g, dtype=F64)], [torch.zeros(4), torch.zeros(2)]
    )


def _rank_one():
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(5, 1, generator=g, dtype=F64), torch.randn(1, 5, generator=g, dtype=F64)
    W2 = torch.randn(3, 5, generator=g, dtype=F64)
    return TargetMLP([u @ v, W2], [torch.ones(5), torch.zeros(3)])


def _scaled(s):
    f = TargetMLP.random([4, 6, 3], seed=1)
    return TargetMLP([w * s for w in f.weights], [b * s for b in f.biases])


CASES = {
    "zero rows and columns": (_zero_row_col, {}),
    "rank-one weight": (_rank_one, {}),
    "weights 1e-6": (lambda: _scaled(1e-6), {}),
    "weights 1e6": (lambda: _scaled(1e6), {}),
    "width-1 layers": (lambda: TargetMLP.random([1, 1, 1, 1], seed=0), {}),
    "input dimension 1": (lambda: TargetMLP.random([1, 8, 8, 2], seed=0), {}),
    # ten layers of float64 rounding of large shifts: the proven bound is ~1e-8 of the output
    # scale (the measured error ~1e-11), above the default rtol 1e-9; certified at rtol 1e-7
    "depth 10": (lambda: TargetMLP.random([6] * 11, seed=0), {"rtol": 1e-7}),
    "all-zero target": (lambda: TargetMLP([torch.zeros(3, 2)], [torch.zeros(3)]), {}),
    "radius 1e6": (lambda: TargetMLP.random([4, 6, 3], seed=1), {"radius": 1e6}),
    "radius 1e-6": (lambda: TargetMLP.random([4, 6, 3], seed=1), {"radius": 1e-6}),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("method", ["wide", "residual"])
def test_edge_case_is_certified_and_the_error_is_real(name, method):
    make, kw = CASES[name]
    f = make()
    kw = {"radius": 1.0, **kw}
    rtol = kw.pop("rtol", None)
    rec = reconstruct(f, method=method, n_points=1000, **kw)
    cert = rec.certificate
    if rtol is not None:
        assert not cert.passed and "rounding" in cert.reason
        cert = verify(rec.net, f, n_points=1000, rtol=rtol)
    assert cert.passed, cert.to_table()
    assert cert.max_rel_error <= 1e-9
    # the certificate's number is the real one: recompute it independently on the sphere
    R = kw["radius"]
    x = torch.randn(200, f.d_in, generator=torch.Generator().manual_seed(5), dtype=F64)
    x = R * x / x.norm(dim=1, keepdim=True)
    with torch.no_grad():
        err = (rec.net(x) - f(x)).abs().max().item()
    assert err <= 10 * cert.max_abs_error + torch.finfo(F64).tiny  # same size on other points
    assert err <= cert.error_bound  # and the proven bound holds there too
