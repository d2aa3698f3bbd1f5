"""TargetCNN (reading, evaluating, unfolding, files) and the frozen NormCNN shell."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normonly import TargetCNN, load_network, reconstruct
from normonly.nets.cnn import conv_matrix, pool_matrix
from normonly.nets.cnn_layers import ConvGeometry, PoolSpec
from normonly.nets.normcnn import NormCNN
from normonly.train import freeze_all_but_norm

F64 = torch.float64


def _filled(seq: nn.Sequential, seed: int) -> nn.Sequential:
    """Every parameter and BatchNorm statistic drawn from a private generator; eval mode."""
    g = torch.Generator().manual_seed(seed)
    seq = seq.to(F64)
    with torch.no_grad():
        for m in seq.modules():
            for p in m.parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) / 2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=F64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=F64))
    return seq.eval()


def _folded_cnn(seed: int = 0) -> nn.Sequential:
    return _filled(nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
        nn.AvgPool2d(3, stride=1),
        nn.Conv2d(3, 4, (2, 3), padding=(1, 2), dilation=2, bias=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(36, 5),
    ), seed)  # fmt: skip


def _explicit_conv_matrix(w: torch.Tensor, g: ConvGeometry, in_shape) -> torch.Tensor:
    """The slow reference: one loop per output position and kernel tap."""
    c_out, c_in, kh, kw = w.shape
    C, H, W = in_shape
    Ho = (H + 2 * g.padding[0] - g.dilation[0] * (kh - 1) - 1) // g.stride[0] + 1
    Wo = (W + 2 * g.padding[1] - g.dilation[1] * (kw - 1) - 1) // g.stride[1] + 1
    M = torch.zeros(c_out * Ho * Wo, C * H * W, dtype=w.dtype)
    for o in range(c_out):
        for i in range(Ho):
            for j in range(Wo):
                row = (o * Ho + i) * Wo + j
                for c in range(c_in):
                    for a in range(kh):
                        for b in range(kw):
                            y = i * g.stride[0] - g.padding[0] + a * g.dilation[0]
                            x = j * g.stride[1] - g.padding[1] + b * g.dilation[1]
                            if 0 <= y < H and 0 <= x < W:
                                M[row, (c * H + y) * W + x] += w[o, c, a, b]
    return M


GEOMETRIES = [ConvGeometry((3, 3)), ConvGeometry((2, 3), (2, 1), (1, 2), (2, 1)),
              ConvGeometry((1, 1), (1, 1), (0, 0), (1, 1))]  # fmt: skip


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv_matrix_equals_the_explicit_unfolding(geom):
    w = torch.randn(3, 2, *geom.kernel, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.equal(conv_matrix(w, geom, (2, 6, 5)), _explicit_conv_matrix(w, geom, (2, 6, 5)))


def test_pool_matrix_averages_each_window():
    p = PoolSpec.from_module(nn.AvgPool2d(2), (1, 4, 4))
    P = pool_matrix(p)
    assert P.shape == (4, 16) and torch.equal(P.sum(dim=1), torch.ones(4, dtype=F64))
    assert P[0, [0, 1, 4, 5]].tolist() == [0.25] * 4


def test_batchnorm_is_folded_and_forward_matches_torch_and_the_mlp():
    seq = _folded_cnn()
    f = TargetCNN.from_torch(seq, input_shape=(2, 9, 9))
    x = torch.randn(20, 2, 9, 9, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        ref = seq(x)
    scale = float(ref.abs().max())
    assert float((f(x) - ref).abs().max()) <= 1e-14 * scale
    assert torch.equal(f(x), f(x.reshape(20, -1)))  # flattened inputs give the same outputs
    mlp = f.to_mlp()
    assert mlp.widths == f.widths == [162, 75, 36, 5]
    assert float((mlp(x.reshape(20, -1)) - f(x)).abs().max()) <= 1e-14 * scale
    assert len(f.layers) == 3 and f.layers[0]["kind"] == "conv"  # the BatchNorm left no layer


def test_save_load_round_trip(tmp_path):
    f = TargetCNN.from_torch(_folded_cnn(), input_shape=(2, 9, 9))
    f.save(tmp_path / "cnn.safetensors")
    g = TargetCNN.load(tmp_path / "cnn.safetensors")
    x = torch.randn(4, 162, generator=torch.Generator().manual_seed(2), dtype=F64)
    assert torch.equal(f(x), g(x)) and g.input_shape == (2, 9, 9)
    from normonly import TargetMLP

    f.to_mlp().save(tmp_path / "mlp.safetensors")
    with pytest.raises(ValueError, match="not a file written by TargetCNN.save"):
        TargetCNN.load(tmp_path / "mlp.safetensors")
    assert isinstance(TargetMLP.load(tmp_path / "mlp.safetensors"), TargetMLP)


@pytest.mark.parametrize(
    "layers, error, match",
    [
        ([nn.Conv2d(1, 2, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(8, 2)], TypeError, "Sigmoid"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)],
         TypeError, "MaxPool2d is not supported"),
        ([nn.Conv2d(2, 2, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)], ValueError,
         "groups=2"),
        ([nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.Flatten(),
          nn.Linear(32, 2)], ValueError, "padding_mode='reflect'"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(9, 2)], ValueError,
         "in_features=9, but its input has 8 features"),
        ([nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)], ValueError,
         "expects 3 input channels"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2), nn.ReLU()], ValueError,
         "ends with a ReLU"),
        ([nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)],
         ValueError, "two linear maps in a row"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Dropout(), nn.Flatten(), nn.Linear(8, 2)], TypeError,
         "Dropout"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(8, 2)], ValueError, "Flatten"),
    ],
)
def test_unsupported_layers_and_shape_mismatches_are_refused_by_name(layers, error, match):
    seq = nn.Sequential(*layers)
    with pytest.raises(error, match=match):
        TargetCNN.from_torch(seq, input_shape=(2 if layers[0].in_channels == 2 else 1, 4, 4))


def test_missing_input_shape_and_training_batchnorm_are_refused():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"input_shape=\(C, H, W\) is required"):
        TargetCNN.from_torch(seq)
    with pytest.raises(ValueError, match="three positive integers"):
        TargetCNN.from_torch(seq, input_shape=(4, 4))
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                       nn.Linear(8, 2))  # fmt: skip
    with pytest.raises(ValueError, match="training mode"):
        TargetCNN.from_torch(bn, input_shape=(1, 4, 4))
    f = TargetCNN.from_torch(seq, input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match=r"input must have shape \(N, 1, 4, 4\) or \(N, 16\)"):
        f(torch.zeros(2, 1, 5, 5))


def test_reconstruct_a_module_needs_the_input_shape():
    seq = _filled(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), 0)
    with pytest.raises(ValueError, match="needs its input shape"):
        reconstruct(seq, radius=1.0)
    X = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    rec = reconstruct(seq, data=X, overparam=2.0, n_points=200)
    assert rec.certificate.passed, rec.certificate.reason


def test_rebuilt_net_has_convs_and_only_batchnorm_trainable(tmp_path):
    f = TargetCNN.random((1, 6, 6), [2, 3], d_out=2, pool=2, seed=0)
    rec = reconstruct(f, radius=1.0, overparam=2.0, n_points=200)
    net = rec.net
    assert isinstance(net, NormCNN)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 4
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    bn = nn.BatchNorm2d | nn.BatchNorm1d
    norms = [name for name, m in net.named_modules() if isinstance(m, bn)]
    bn_params = {f"{name}.{p}" for name in norms for p in ("weight", "bias")}
    assert trainable == bn_params
    summary = freeze_all_but_norm(net)
    assert {n for n, p in net.named_parameters() if p.requires_grad} == bn_params
    assert summary.trainable == net.parameter_counts()["trainable"]
    net.train()
    assert all(not m.training for m in net.norm_layers())  # BatchNorm stays in eval mode
    net.eval()
    net.save(tmp_path / "net.safetensors")
    loaded = load_network(tmp_path / "net.safetensors")
    x = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(3), dtype=F64) / 10
    assert isinstance(loaded, NormCNN) and torch.equal(loaded(x), net(x))
    assert loaded.meta["radius"] == 1.0
