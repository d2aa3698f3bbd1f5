"""ONNX export: structure (MatMul + Mul/Add per norm, no BatchNormalization) and exactness.

ONNX Runtime runs every exported network on seeded points of the certified ball and must agree
with the torch network to 1e-12 of the output scale in float64; the uncertified float32 export is
held to 1e-4 (measured ~1e-6).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from normonly import NormNet, ResidualNormNet, TargetMLP, reconstruct
from normonly.certificate.sampling import sample_ball
from normonly.nets.export import export_onnx, norm_scale_shift
from normonly.nets.layers import norm_affine

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RADIUS = 1.0
D_IN = 6
N_POINTS = 600
TOL64 = 1e-12
TOL32 = 1e-4


def _target() -> TargetMLP:
    return TargetMLP.random([D_IN, 12, 10, 3], seed=0)


def _bn_running_stats_wide() -> nn.Module:
    f = _target()
    widths = reconstruct(f, radius=RADIUS, overparam=2.0, n_points=50).net.widths
    net = NormNet(widths, seed=1)
    net.randomize_running_stats(7)
    return reconstruct(f, radius=RADIUS, overparam=2.0, net=net).net


def _bn_running_stats_residual() -> nn.Module:
    f = _target()
    rec = reconstruct(f, method="residual", k=2, radius=RADIUS, overparam=2.0, n_points=50)
    net = ResidualNormNet(**rec.net.config)
    g = torch.Generator().manual_seed(7)
    for n in net.norm_layers():
        m = n.num_features
        n.running_mean.copy_(torch.randn(m, generator=g, dtype=torch.float64))
        n.running_var.copy_(0.1 + 2 * torch.rand(m, generator=g, dtype=torch.float64))
    return reconstruct(f, method="residual", k=2, radius=RADIUS, overparam=2.0, net=net).net


BUILDERS = {
    "wide": lambda: reconstruct(_target(), radius=RADIUS, overparam=2.0).net,
    "residual_k2": lambda: (
        reconstruct(_target(), method="residual", k=2, radius=RADIUS, overparam=2.0).net
    ),
    "residual_k1": lambda: (
        reconstruct(_target(), method="residual", k=1, radius=RADIUS, overparam=2.0).net
    ),
    "sparse": lambda: reconstruct(_target(), radius=RADIUS, overparam=2.0, density=0.5).net,
    "affine": lambda: reconstruct(_target(), radius=RADIUS, overparam=2.0, norm="affine").net,
    "residual_affine": lambda: (
        reconstruct(
            _target(), method="residual", k=2, radius=RADIUS, overparam=2.0, norm="affine"
        ).net
    ),
    "uniform_width": lambda: (
        reconstruct(_target(), radius=RADIUS, overparam=2.0, uniform_width=True).net
    ),
    "bn_running_stats": _bn_running_stats_wide,
    "residual_bn_running_stats": _bn_running_stats_residual,
}

_cache: dict[str, nn.Module] = {}


def _net(kind: str) -> nn.Module:
    if kind not in _cache:
        _cache[kind] = BUILDERS[kind]()
    return _cache[kind]


def _points() -> torch.Tensor:
    inside, sphere = sample_ball(N_POINTS, D_IN, RADIUS, seed=3)
    return torch.cat([inside, sphere])


def _onnx_rel_error(net: nn.Module, path, *, float32: bool) -> float:
    x = _points()
    with torch.no_grad():
        ref = net(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(["y"], {"x": x.numpy().astype(np.float32 if float32 else np.float64)})[0]
    assert out.shape == ref.shape
    assert out.dtype == (np.float32 if float32 else np.float64)
    return float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_export_runs_in_onnxruntime_exactly(kind, tmp_path):
    net = _net(kind)
    path = tmp_path / f"{kind}.onnx"
    export_onnx(net, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    err = _onnx_rel_error(net, path, float32=False)
    assert err <= TOL64, f"{kind}: float64 ONNX relative error {err:.3e}"


@pytest.mark.parametrize("kind", ["wide", "residual_k2", "sparse", "bn_running_stats"])
def test_float32_export_is_close_but_not_exact(kind, tmp_path):
    net = _net(kind)
    path = tmp_path / f"{kind}32.onnx"
    export_onnx(net, path, float32=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    index = {"lift.pads", "readout.starts", "readout.ends", "readout.axes"}  # int64
    assert all(
        t.data_type == onnx.TensorProto.FLOAT
        for t in model.graph.initializer
        if t.name not in index
    )
    err = _onnx_rel_error(net, path, float32=True)
    assert err <= TOL32, f"{kind}: float32 ONNX relative error {err:.3e}"


def test_bn_running_stats_are_nontrivial_and_folded_in_float64():
    net = _net("bn_running_stats")
    bn = net.norms[0]
    assert isinstance(bn, nn.BatchNorm1d)
    assert float((bn.running_mean).abs().max()) > 0.1
    assert float((bn.running_var - 1).abs().max()) > 0.1
    for layer in net.norm_layers():
        gamma, beta = norm_scale_shift(layer)
        ref_g, ref_b = norm_affine(layer)
        np.testing.assert_array_equal(gamma, ref_g.numpy())
        np.testing.assert_array_equal(beta, ref_b.numpy())


def test_wide_graph_structure_and_names(tmp_path):
    net = _net("wide")
    path = tmp_path / "wide.onnx"
    export_onnx(net, path)
    model = onnx.load(str(path))
    g = model.graph
    ops = [n.op_type for n in g.node]
    names = {n.name for n in g.node}
    assert "BatchNormalization" not in ops
    n_lin = len(net.linears)
    assert ops.count("MatMul") == n_lin
    assert ops.count("Mul") == ops.count("Add") == n_lin
    assert ops.count("Relu") == n_lin - 1
    for i in range(n_lin):
        assert {f"linears.{i}", f"norms.{i}.scale", f"norms.{i}.shift"} <= names
    assert [i.name for i in g.input] == ["x"] and [o.name for o in g.output] == ["y"]
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    dims = g.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == D_IN
    # initializers are exactly the torch numbers: transposed frozen weights, folded γ and β
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    assert all(a.dtype == np.float64 for a in inits.values())
    np.testing.assert_array_equal(inits["linears.0.weight_t"], net.linears[0].weight.numpy().T)
    gamma, beta = norm_affine(net.norms[1])
    np.testing.assert_array_equal(inits["norms.1.gamma"], gamma.numpy())
    np.testing.assert_array_equal(inits["norms.1.beta"], beta.numpy())
    props = {p.key: p.value for p in model.metadata_props}
    assert float(props["normonly_radius"]) == RADIUS
    assert props["normonly_class"] == "NormNet" and props["normonly_dtype"] == "float64"


def test_residual_graph_structure_and_names(tmp_path):
    net = _net("residual_k2")
    path = tmp_path / "res.onnx"
    export_onnx(net, path)
    g = onnx.load(str(path)).graph
    ops = [n.op_type for n in g.node]
    names = {n.name for n in g.node}
    assert "BatchNormalization" not in ops
    assert ops.count("MatMul") == 2 * net.depth
    assert ops.count("Pad") == 1 and ops.count("Slice") == 1
    assert ops.count("Relu") == 2 * net.depth
    assert ops.count("Mul") == len(net.norm_layers())
    assert {"lift.scale", "lift.shift", "lift.pad", "readout.slice", "readout.shift"} <= names
    last = net.depth - 1
    for b in (0, last):
        for part in ("norm_in.scale", "linear_in", "norm_hid.scale", "norm_hid.shift",
                     "relu_hid", "linear_out", "norm_out.shift", "skip", "relu"):  # fmt: skip
            assert f"blocks.{b}.{part}" in names


def test_sparse_mask_is_multiplied_into_the_weight(tmp_path):
    net = _net("sparse")
    with torch.no_grad():  # a pruned weight that is nonzero must still export as zero
        lin = net.linears[0]
        lin.weight.add_(1 - lin.mask)
    try:
        export_onnx(net, tmp_path / "sparse.onnx")
    finally:
        with torch.no_grad():
            lin.weight.mul_(lin.mask)
    g = onnx.load(str(tmp_path / "sparse.onnx")).graph
    w = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}["linears.0.weight_t"]
    np.testing.assert_array_equal(w == 0, (lin.mask == 0).numpy().T)


def test_single_point_batch(tmp_path):
    net = _net("residual_k1")
    path = tmp_path / "one.onnx"
    export_onnx(net, path)
    x = torch.full((1, D_IN), 0.2, dtype=torch.float64)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, net(x).numpy(), rtol=0, atol=1e-12)


def test_training_mode_batchnorm_is_refused(tmp_path):
    net = NormNet([3, 12, 2], seed=0)
    net.set_batchnorm_train(True)
    net.train()
    path = tmp_path / "train.onnx"
    with pytest.raises(ValueError, match="training mode"):
        export_onnx(net, path)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_batchnorm_without_running_stats_is_refused(tmp_path):
    net = NormNet([3, 12, 2], seed=0)
    net.norms[0] = nn.BatchNorm1d(12, track_running_stats=False, dtype=torch.float64).eval()
    with pytest.raises(ValueError, match="running statistics"):
        export_onnx(net, tmp_path / "x.onnx")


def test_batchnorm_without_affine_parameters(tmp_path):
    net = NormNet([3, 12, 2], seed=0)
    bn = nn.BatchNorm1d(12, affine=False, dtype=torch.float64).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    net.norms[0] = bn
    export_onnx(net, tmp_path / "noaffine.onnx")
    x = torch.randn(50, 3, dtype=torch.float64)
    sess = ort.InferenceSession(str(tmp_path / "noaffine.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], net(x).numpy(), atol=1e-13)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="NormNet or ResidualNormNet"):
        export_onnx(nn.Linear(2, 2), tmp_path / "x.onnx")
    net = NormNet([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(net, tmp_path / "x.onnx", opset=9)
    with pytest.raises(TypeError, match="opset"):
        export_onnx(net, tmp_path / "x.onnx", opset=17.0)


def test_other_opsets(tmp_path):
    net = _net("residual_affine")
    for opset in (13, onnx.defs.onnx_opset_version()):
        path = tmp_path / f"op{opset}.onnx"
        export_onnx(net, path, opset=opset)
        assert _onnx_rel_error(net, path, float32=False) <= TOL64


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(ModuleNotFoundError, match=r"normonly\[onnx\]"):
        export_onnx(NormNet([3, 4, 2], seed=0), tmp_path / "x.onnx")
