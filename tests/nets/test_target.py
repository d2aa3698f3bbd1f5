"""TargetMLP: construction, evaluation, torch and safetensors round trips, bad input."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
from torch import nn

from normonly import TargetMLP


def test_random_is_seeded_and_float64():
    a = TargetMLP.random([4, 6, 3], seed=3)
    b = TargetMLP.random([4, 6, 3], seed=3)
    c = TargetMLP.random([4, 6, 3], seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights, strict=True))
    assert not torch.equal(a.weights[0], c.weights[0])
    assert a.weights[0].dtype == torch.float64
    assert a.widths == [4, 6, 3] and a.depth == 2 and a.num_parameters() == 4 * 6 + 6 + 6 * 3 + 3


def test_call_matches_hand_computation():
    W1 = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    b1 = torch.tensor([0.0, -1.0])
    W2 = torch.tensor([[1.0, 1.0]])
    b2 = torch.tensor([0.25])
    f = TargetMLP([W1, W2], [b1, b2])
    x = torch.tensor([[1.0, 2.0], [1.0, 0.0]])
    # row 1: W1x+b1 = (-1, 2) -> relu (0, 2) -> 2.25 ; row 2: (1, 1) -> 2.25
    assert torch.allclose(f(x), torch.tensor([[2.25], [2.25]], dtype=torch.float64))


def test_from_torch_and_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.ReLU(), nn.Linear(3, 2))
    path = tmp_path / "user.safetensors"
    safetensors.torch.save_file(seq.state_dict(), str(path))  # what a user writes
    f = TargetMLP.load(path, activation="relu")  # a bare state_dict: the activation stated
    x = torch.randn(20, 5)
    assert torch.allclose(f(x), seq.double()(x.double()), atol=1e-12)
    f.save(tmp_path / "again.safetensors")
    g = TargetMLP.load(tmp_path / "again.safetensors")  # our file records the activation
    assert all(torch.equal(a, b) for a, b in zip(f.weights, g.weights, strict=True))
    # the file we write is the nn.Sequential layout: it loads into the equivalent module
    back = f.to_torch()
    back.load_state_dict(safetensors.torch.load_file(str(tmp_path / "again.safetensors")))


def test_linear_without_bias_gets_zero_bias():
    f = TargetMLP.from_torch(nn.Sequential(nn.Linear(3, 2, bias=False)))
    assert torch.equal(f.biases[0], torch.zeros(2, dtype=torch.float64))


def test_call_rejects_wrong_input_shape():
    f = TargetMLP.random([3, 2], seed=0)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        f(torch.zeros(5, 4))
