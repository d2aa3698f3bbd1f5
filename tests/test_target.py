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
    f = TargetMLP.load(path)
    x = torch.randn(20, 5)
    assert torch.allclose(f(x), seq.double()(x.double()), atol=1e-12)
    f.save(tmp_path / "again.safetensors")
    g = TargetMLP.load(tmp_path / "again.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(f.weights, g.weights, strict=True))
    # the file we write is the nn.Sequential layout: it loads into the equivalent module
    back = f.to_torch()
    back.load_state_dict(safetensors.torch.load_file(str(tmp_path / "again.safetensors")))


def test_linear_without_bias_gets_zero_bias():
    f = TargetMLP.from_torch(nn.Sequential(nn.Linear(3, 2, bias=False)))
    assert torch.equal(f.biases[0], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize(
    "layer, match",
    [
        (nn.Sigmoid(), "Sigmoid"),
        (nn.Conv1d(1, 1, 1), "Conv1d"),
        (nn.BatchNorm1d(4), "BatchNorm1d"),
        (nn.Dropout(), "Dropout"),
    ],
)
def test_from_torch_names_the_offending_layer(layer, match):
    seq = nn.Sequential(nn.Linear(3, 4), layer, nn.Linear(4, 2))
    with pytest.raises(TypeError, match=match):
        TargetMLP.from_torch(seq)


def test_from_torch_structure_errors():
    with pytest.raises(ValueError, match="ends with a ReLU"):
        TargetMLP.from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
    with pytest.raises(ValueError, match="two Linear layers in a row"):
        TargetMLP.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="no nn.Linear"):
        TargetMLP.from_torch(nn.Sequential())
    with pytest.raises(TypeError, match="nn.Sequential"):
        TargetMLP.from_torch(nn.ReLU())


def test_bad_weights_rejected():
    with pytest.raises(ValueError, match="at least one Linear"):
        TargetMLP([], [])
    with pytest.raises(ValueError, match="consecutive widths must match"):
        TargetMLP([torch.ones(3, 2), torch.ones(2, 4)], [torch.ones(3), torch.ones(2)])
    bad = torch.ones(2, 2)
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        TargetMLP([bad], [torch.zeros(2)])
    with pytest.raises(ValueError, match="bias must have shape"):
        TargetMLP([torch.ones(3, 2)], [torch.ones(2)])
    with pytest.raises(ValueError, match="at least"):
        TargetMLP.random([4], seed=0)


def test_call_rejects_wrong_input_shape():
    f = TargetMLP.random([3, 2], seed=0)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        f(torch.zeros(5, 4))


def test_load_refuses_pickle_and_bad_files(tmp_path):
    p = tmp_path / "model.pt"
    torch.save({"0.weight": torch.ones(2, 2)}, p)  # a pickle-based file: must not be loaded
    with pytest.raises(ValueError, match="never unpickles"):
        TargetMLP.load(p)
    q = tmp_path / "junk.safetensors"
    q.write_bytes(b"hello world, not a tensor file")
    with pytest.raises(ValueError, match="not a valid safetensors"):
        TargetMLP.load(q)
    with pytest.raises(FileNotFoundError):
        TargetMLP.load(tmp_path / "missing.safetensors")
    r = tmp_path / "extra.safetensors"
    safetensors.torch.save_file({"0.weight": torch.ones(2, 3), "0.bias": torch.ones(2),
                                 "head.weight": torch.ones(1)}, str(r))  # fmt: skip
    with pytest.raises(ValueError, match="unexpected tensor 'head.weight'"):
        TargetMLP.load(r)
    s = tmp_path / "int.safetensors"
    safetensors.torch.save_file({"0.weight": torch.ones(2, 3, dtype=torch.int64)}, str(s))
    with pytest.raises(ValueError, match="need a float"):
        TargetMLP.load(s)
    t = tmp_path / "gap.safetensors"
    safetensors.torch.save_file(
        {"0.weight": torch.ones(2, 3), "4.weight": torch.ones(1, 2)}, str(t)
    )
    with pytest.raises(ValueError, match="expected \\[0, 2\\]"):
        TargetMLP.load(t)
    u = tmp_path / "shape.safetensors"
    safetensors.torch.save_file(
        {"0.weight": torch.ones(2, 3), "2.weight": torch.ones(1, 5)}, str(u)
    )
    with pytest.raises(ValueError, match="consecutive widths"):
        TargetMLP.load(u)
