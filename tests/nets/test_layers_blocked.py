"""The blocked summation of the frozen layers: same product, bounded rounding depth."""

import math

import pytest
import torch

from normonly.nets.layers import (
    SUM_BLOCK_MIN,
    BlockedLinear,
    MaskedLinear,
    blocked_linear,
    sum_block,
    summation_depth,
)


@pytest.mark.parametrize("n", [1, 7, 256, 257, 1000, 5000])
def test_blocked_linear_matches_one_product(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(5, n, generator=g, dtype=torch.float64)
    w = torch.randn(3, n, generator=g, dtype=torch.float64)
    exact = (x[:, None, :] * w[None]).sum(-1)  # (5, 3) explicit loop-free reference
    got = blocked_linear(x, w)
    assert got.shape == (5, 3)
    # within the proven rounding of a depth-summation_depth(n) sum
    u = torch.finfo(torch.float64).eps / 2
    d = summation_depth(n)
    tol = d * u / (1 - d * u) * (x.abs() @ w.abs().T) * 2
    assert ((got - exact).abs() <= tol).all()


def test_summation_depth_is_about_two_sqrt_n():
    assert summation_depth(SUM_BLOCK_MIN) == SUM_BLOCK_MIN
    for n in (10_000, 131_072, 2 * 1024**2):
        c = sum_block(n)
        assert c >= math.isqrt(n) and summation_depth(n) == c + math.ceil(n / c)
        limit = 2 * math.isqrt(n) + 3 if n >= SUM_BLOCK_MIN**2 else SUM_BLOCK_MIN + n // 256 + 1
        assert summation_depth(n) <= limit < n


def test_blocked_linear_gradients_flow():
    x = torch.randn(4, 600, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 600, dtype=torch.float64)
    blocked_linear(x, w).sum().backward()
    assert torch.allclose(x.grad, w.sum(0).expand(4, -1))


def test_frozen_layers_sum_in_blocks():
    lin = BlockedLinear(700, 2, bias=False, dtype=torch.float64)
    x = torch.randn(3, 700, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(lin(x), x @ lin.weight.T, rtol=1e-12, atol=1e-12)
        assert torch.equal(lin(x), blocked_linear(x, lin.weight))  # and in blocks
        mask = (torch.rand(2, 700) < 0.5).double()
        mlin = MaskedLinear(700, 2, mask, dtype=torch.float64)
        masked = x @ (mlin.weight * mask).T
        assert torch.allclose(mlin(x), masked, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(mlin(x), x @ mlin.weight.T)  # the mask is applied
