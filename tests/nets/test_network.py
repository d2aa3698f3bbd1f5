"""NormNet: standard parts, frozen weights, counts, BatchNorm mapping, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normonly import NormNet, load_network


def test_only_norm_parameters_are_trainable_and_counts_match():
    widths = [3, 12, 4, 20, 2]
    net = NormNet(widths, seed=0)
    counts = net.parameter_counts()
    assert counts["trainable"] == 2 * sum(widths[1:])
    assert counts["frozen"] == sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    for name, p in net.named_parameters():
        assert p.requires_grad == ("norms" in name), name
    # gradients reach only γ and β
    net(torch.randn(8, 3, dtype=torch.float64)).sum().backward()
    for lin in net.linears:
        assert lin.weight.grad is None
    assert all(n.weight.grad is not None and n.bias.grad is not None for n in net.norms)


def test_standard_parts():
    net = NormNet([3, 5, 2], norm="batchnorm", seed=0)
    # nn.Linear with a fixed (blocked) summation order in forward; same parameters and keys
    assert all(isinstance(lin, nn.Linear) and lin.bias is None for lin in net.linears)
    assert all(list(lin.state_dict()) == ["weight"] for lin in net.linears)
    assert all(type(n) is nn.BatchNorm1d and not n.training for n in net.norms)
    net.train()  # stays exact: BN keeps its running statistics unless asked otherwise
    assert all(not n.training for n in net.norms)


def test_same_seed_same_bytes_other_seed_differs():
    a, b, c = NormNet([4, 9, 3], seed=5), NormNet([4, 9, 3], seed=5), NormNet([4, 9, 3], seed=6)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a.linears[0].weight, c.linears[0].weight)


@pytest.mark.parametrize("norm", ["batchnorm", "affine"])
def test_set_affine_is_exact_with_running_statistics(norm):
    net = NormNet([3, 6, 2], norm=norm, seed=1)
    net.randomize_running_stats(seed=2)
    g = torch.Generator().manual_seed(0)
    gamma, beta = (
        torch.randn(6, generator=g, dtype=torch.float64),
        torch.randn(6, generator=g, dtype=torch.float64),
    )
    net.set_affine(0, gamma, beta)
    z = torch.randn(10, 6, generator=g, dtype=torch.float64)
    assert torch.allclose(net.norms[0](z), gamma * z + beta, rtol=0, atol=1e-13)
    g2, b2 = net.effective_affine(0)
    assert torch.allclose(g2, gamma, atol=1e-14) and torch.allclose(b2, beta, atol=1e-13)


def test_save_load_round_trip(tmp_path):
    net = NormNet([3, 7, 2], seed=3, density=0.6)
    net.randomize_running_stats(seed=1)
    net.meta = {"radius": 2.0}
    net.save(tmp_path / "net.safetensors")
    back = load_network(tmp_path / "net.safetensors")
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(net(x), back(x))
    assert back.meta == {"radius": 2.0}
    assert back.parameter_counts() == net.parameter_counts()


def test_bad_arguments():
    with pytest.raises(ValueError, match="layernorm"):
        NormNet([3, 4], norm="layernorm")
    with pytest.raises(ValueError, match="density must be in"):
        NormNet([3, 4], density=0.0)
    with pytest.raises(ValueError, match="at least"):
        NormNet([3])
    with pytest.raises(TypeError, match="integer"):
        NormNet([3, 4.5])
