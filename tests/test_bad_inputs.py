"""The catalogue of bad inputs (issue 9): each gives its exact error type and a message that says
what was wrong and what would work. Nothing wrong is returned silently.

Covered elsewhere, in place: disk full mid-sweep and unwritable directories
(tests/experiments/test_store.py, test_runner.py, test_cli.py), the CLI fuzz
(tests/test_cli_fuzz.py).
"""

from __future__ import annotations

import math
import pickle

import pytest
import safetensors.torch
import torch
from torch import nn

from normonly import (
    CertificateError,
    InfeasibleError,
    TargetMLP,
    UncertifiedDtypeWarning,
    load_network,
    reconstruct,
    verify,
)
from normonly.experiments.e1_exact import E1Config

F64 = torch.float64


def _target():
    return TargetMLP.random([4, 5, 3], seed=0)


# --------------------------------------------------------------------------- targets
@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: TargetMLP([], []), ValueError, "at least one Linear layer"),
        (lambda: TargetMLP.from_torch(nn.Sequential()), ValueError, "no nn.Linear"),
        (lambda: TargetMLP([torch.full((2, 2), math.nan)], [torch.zeros(2)]), ValueError,
         "non-finite entries .* finite weights"),
        (lambda: TargetMLP([torch.full((2, 2), math.inf)], [torch.zeros(2)]), ValueError,
         "non-finite"),
        (lambda: TargetMLP([torch.ones(2, 2)], [torch.tensor([0.0, math.nan])]), ValueError,
         "layer 0 bias has 1 non-finite"),
        (lambda: TargetMLP([torch.ones(3, 2), torch.ones(2, 4)], [torch.ones(3), torch.ones(2)]),
         ValueError, "layer 1 expects 4 inputs but layer 0 has 3 outputs"),
        (lambda: TargetMLP.from_torch(nn.Sequential(nn.Linear(2, 3), nn.Sigmoid())),
         TypeError, "layer '1' is Sigmoid"),
        (lambda: TargetMLP.from_torch(nn.Sequential(nn.Conv1d(1, 1, 1))), TypeError,
         "layer '0' is Conv1d"),
        (lambda: TargetMLP.from_torch(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(),
                                                    nn.Linear(3, 1))),
         TypeError, "layer '1' is BatchNorm1d"),
        (lambda: TargetMLP.from_torch(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Dropout(),
                                                    nn.Linear(3, 1))),
         TypeError, "layer '2' is Dropout"),
        (lambda: TargetMLP([torch.ones(2, 2, dtype=torch.int64)], [torch.zeros(2)]), TypeError,
         "floating point"),
        (lambda: TargetMLP.random([4], seed=0), ValueError, "at least \\[d_in, d_out\\]"),
        (lambda: TargetMLP.from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU())), ValueError,
         "ends with a ReLU"),
        (lambda: TargetMLP.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))),
         ValueError, "two Linear layers in a row"),
        (lambda: TargetMLP.from_torch(nn.ReLU()), TypeError, "nn.Sequential"),
    ],
)  # fmt: skip
def test_bad_targets(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# --------------------------------------------------------------------------- files
def _save(path, tensors):
    safetensors.torch.save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    "tensors, match",
    [
        ({"0.bias": torch.ones(2)}, "missing tensor '0.weight'"),
        ({"0.weight": torch.ones(2, 3), "0.bias": torch.ones(2), "1.extra": torch.ones(1)},
         "unexpected tensor '1.extra'"),
        ({"0.weight": torch.ones(2, 3, 1)}, "must be 2-D"),
        ({"0.weight": torch.ones(2, 3), "0.bias": torch.ones(5)}, "bias must have shape \\(2,\\)"),
        ({"0.weight": torch.ones(2, 3), "2.weight": torch.ones(4, 7)}, "consecutive widths"),
        ({"0.weight": torch.ones(2, 3, dtype=torch.int32)}, "dtype torch.int32, need a float"),
        ({"0.weight": torch.tensor([[1.0, math.nan]])}, "non-finite"),
        ({"0.weight": torch.ones(2, 3), "4.weight": torch.ones(1, 2)}, "expected \\[0, 2\\]"),
    ],
)  # fmt: skip
def test_bad_target_files(tmp_path, tensors, match):
    with pytest.raises(ValueError, match=match):
        TargetMLP.load(_save(tmp_path / "t.safetensors", tensors))


def test_files_that_are_not_safetensors_are_never_unpickled(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: called.append(1))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: called.append(1))
    pk = tmp_path / "model.pt"
    torch.save({"0.weight": torch.ones(2, 2)}, pk)
    for loader in (TargetMLP.load, load_network):
        with pytest.raises(ValueError, match="never unpickles"):
            loader(pk)
    raw = tmp_path / "model.pkl"
    raw.write_bytes(pickle.dumps({"0.weight": [1.0]}, protocol=2))
    with pytest.raises(ValueError, match="never unpickles"):
        TargetMLP.load(raw)
    text = tmp_path / "notes.safetensors"
    text.write_text("just some text")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        TargetMLP.load(text)
    assert not called
    with pytest.raises(IsADirectoryError, match="is a directory"):
        TargetMLP.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TargetMLP.load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="no normonly metadata.*TargetMLP.load"):
        load_network(_save(tmp_path / "t.safetensors", {"0.weight": torch.ones(2, 3)}))


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"radius": 0}, ValueError, "radius must be a finite number > 0 .* got 0"),
        ({"radius": -2.0}, ValueError, "radius must be a finite number > 0"),
        ({"radius": math.nan}, ValueError, "radius must be a finite number > 0"),
        ({"radius": math.inf}, ValueError, "radius must be a finite number > 0"),
        ({"radius": 1e15}, ValueError, "too large to certify .* rescale your inputs"),
        ({"overparam": 0.99}, ValueError, "overparam must be a finite number >= 1 .* got 0.99"),
        ({"overparam": math.nan}, ValueError, "overparam must be"),
        ({"density": 0.0}, ValueError, "density must be in \\(0, 1\\]"),
        ({"density": 1.5}, ValueError, "density must be in \\(0, 1\\] .* got 1.5"),
        ({"density": math.nan}, ValueError, "density must be in"),
        ({"width": 10}, InfeasibleError, "width 10 is too small .* need width >= 20"),
        ({"norm": "layernorm"}, ValueError, "not a per-unit affine"),
        ({"method": "residual", "k": 0}, ValueError, r"k \(partition size\) .* \[1, 5\].* got 0"),
        ({"method": "residual", "k": 99}, ValueError, r"must be an integer in \[1, 5\].* got 99"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"dtype": torch.int32}, TypeError, "floating torch.dtype"),
        ({"radius": "1"}, TypeError, "radius must be a real number"),
        ({"method": "deep"}, ValueError, "method must be one of"),
        ({"k": 2}, ValueError, "applies to method='residual' only"),
        ({"device": "tpu"}, ValueError, "device must be 'cpu' or 'cuda"),
    ],
)  # fmt: skip
def test_bad_reconstruct_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        reconstruct(_target(), n_points=20, **kwargs)


def test_non_relu_target_is_refused_by_reconstruct():
    with pytest.raises(TypeError, match="Tanh"):
        reconstruct(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), radius=1.0)


def test_verify_outside_the_certified_ball():
    rec = reconstruct(_target(), radius=2.0, n_points=50)
    with pytest.raises(CertificateError, match="radius 3 exceeds the radius 2 .* reconstruct with"):
        verify(rec.net, _target(), radius=3.0)
    with pytest.raises(ValueError, match="radius must be"):
        verify(rec.net, _target(), radius=-1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_low_precision_requests_warn_with_the_measured_error(dtype):
    with pytest.warns(UncertifiedDtypeWarning, match="certified in float64 only.*measured max rel"):
        rec = reconstruct(_target(), radius=1.0, n_points=50, dtype=dtype)
    cert = rec.certificate
    assert cert.dtype == str(dtype).removeprefix("torch.")
    assert not cert.passed  # never certified below float64, whatever the error
    assert cert.max_rel_error > 10 * torch.finfo(torch.float64).eps  # the loss is real
    assert any("below float64" in n for n in cert.notes)


def test_unknown_config_keys_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown config key 'nope' .* valid keys: widths"):
        E1Config().replace(nope=1)
    with pytest.raises(ValueError, match="unknown config key"):
        E1Config.from_dict({"widths": [2], "nope": 1})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available here .* use device='cpu'"):
        reconstruct(_target(), radius=1.0, device="cuda")


# --------------------------------------------------------------------------- trust traps
def _wide_data(n=400, seed=0):
    """Inputs up to norm ~6, like standardized tabular features (wine: 5.9)."""
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(n, 4, generator=g, dtype=F64)


def test_reconstruct_without_a_domain_is_refused():
    with pytest.raises(ValueError, match="needs the input domain: pass radius=R .* or data=X"):
        reconstruct(_target(), overparam=2.0)


def test_data_beyond_the_certified_ball_fail_verify_and_name_the_radius_needed():
    X = _wide_data()
    rec = reconstruct(_target(), radius=1.0, overparam=2.0, n_points=300)
    cert = verify(rec.net, _target(), data=X, n_points=300)
    outside = int((X.norm(dim=1) > 1.0).sum())
    assert not cert.passed and cert.data_outside == outside
    assert f"{outside} of 400 data points lie outside" in cert.reason
    assert f"{float(X.norm(dim=1).max()):.4g}" in cert.reason
    rec = reconstruct(_target(), data=X, overparam=2.0, n_points=300)  # the domain from data
    assert rec.certificate.passed and rec.certificate.data_outside == 0
    assert rec.net.meta["radius"] == pytest.approx(1.01 * float(X.norm(dim=1).max()))
    assert verify(rec.net, _target(), data=X, n_points=300).passed


@pytest.mark.parametrize(
    "data, exc, match",
    [
        (torch.ones(3, 5), ValueError, r"shape \(n, 4\)"),
        (torch.full((2, 4), math.nan), ValueError, "NaN or Inf"),
        (torch.zeros(0, 4), ValueError, "n >= 1"),
        ("x.npy", TypeError, "torch tensor or numpy array"),
        (torch.zeros(3, 4), ValueError, "every data point is the origin"),
    ],
)
def test_bad_data(data, exc, match):
    with pytest.raises(exc, match=match):
        reconstruct(_target(), data=data)


def test_radius_below_the_data_is_refused():
    with pytest.raises(ValueError, match="smaller than the largest norm of the data"):
        reconstruct(_target(), radius=1.0, data=_wide_data())


def test_rebuilt_net_warns_once_outside_its_ball_and_strict_raises():
    from normonly import OutsideBallError, OutsideBallWarning

    net = reconstruct(_target(), radius=1.0, n_points=100).net
    far = torch.full((2, 4), 3.0, dtype=F64)
    with pytest.warns(OutsideBallWarning, match="2 of 2 inputs lie outside the ball"):
        net(far)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(far)  # once per network
        net(torch.zeros(2, 4, dtype=F64))  # inside: silent
    net.strict_domain = True
    with pytest.raises(OutsideBallError, match="outside the ball"):
        net(far)


def test_float32_input_is_cast_into_a_float64_net():
    f = _target()
    net = reconstruct(f, radius=1.0, n_points=100).net
    x = torch.rand(5, 4) * 0.4  # float32, inside the ball
    y = net(x)
    assert y.dtype == F64
    assert torch.equal(y, net(x.double()))
    assert (y - f(x.double())).abs().max() < 1e-12


@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh"])
def test_bare_state_dict_needs_its_activation_stated(tmp_path, activation):
    seq = nn.Sequential(nn.Linear(4, 5), nn.Sigmoid(), nn.Linear(5, 3))  # same keys as ReLU
    path = tmp_path / "sigmoid.safetensors"
    safetensors.torch.save_file(seq.state_dict(), str(path))
    match = "does not say which activation" if activation is None else (
        f"activation '{activation}' is not supported: normonly reconstructs ReLU"
    )
    with pytest.raises(ValueError, match=match):
        TargetMLP.load(path, activation=activation)


def test_saved_targets_record_their_activation(tmp_path):
    path = tmp_path / "t.safetensors"
    _target().save(path)
    assert TargetMLP.load(path).widths == [4, 5, 3]  # no activation needed: it is recorded
    with pytest.raises(ValueError, match="records activation 'relu', but activation='tanh'"):
        TargetMLP.load(path, activation="tanh")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert '"activation": "relu"' in fh.metadata()["normonly_target"]


def test_too_narrow_overparam_names_the_width_needed():
    f = TargetMLP.random([5, 5], seed=0)
    with pytest.raises(InfeasibleError, match="overparam must be .* got 0.5.*needs width >= 25"):
        reconstruct(f, radius=1.0, overparam=0.5)


# --------------------------------------------------------------------------- files and numbers
def test_a_named_pipe_is_refused_at_once_not_read(tmp_path):
    import os

    from normonly.cli import main

    fifo = tmp_path / "target.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a named pipe \\(FIFO\\); give a regular file"):
        TargetMLP.load(fifo, activation="relu")
    with pytest.raises(ValueError, match="named pipe"):
        load_network(fifo)
    assert main(["reconstruct", str(fifo), "--radius", "1", "--out", str(tmp_path / "n")]) == 2


def test_a_construction_too_large_for_memory_is_refused_before_allocating():
    f = TargetMLP([torch.zeros(2000, 10000)], [torch.zeros(2000)])
    with pytest.raises(InfeasibleError, match="needs 240,000,000,000 frozen weights, .* GiB"):
        reconstruct(f, radius=1.0)


@pytest.mark.parametrize("scale", [1e300, 1e120])
def test_targets_that_overflow_on_the_ball_are_refused_with_the_reason(scale):
    f = _target()
    huge = TargetMLP([w * scale for w in f.weights], f.biases)
    with pytest.raises(InfeasibleError, match="too large for float64"):
        reconstruct(huge, radius=1.0)


def test_json_output_is_strict(tmp_path, capsys):
    import json

    from normonly.cli import main

    f = _target()
    path = tmp_path / "t.safetensors"
    f.save(path)
    net_path = tmp_path / "n.safetensors"
    assert main(["reconstruct", str(path), "--radius", "1", "--out", str(net_path)]) == 0
    capsys.readouterr()
    net = load_network(net_path)
    with torch.no_grad():
        net.norms[0].weight[0] = math.inf  # a broken network: its bound is not finite
    net.save(net_path)
    code = main(["verify", str(net_path), str(path), "--json"])
    out = capsys.readouterr().out
    assert code == 1
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))
    assert data["passed"] is False and data["error_bound"] is None


def test_a_named_pipe_as_config_or_data_is_refused(tmp_path):
    import os

    from normonly.cli import main

    for name in ("cfg.toml", "X.npy"):
        os.mkfifo(tmp_path / name)
    assert main(["run", "E5", "--config", str(tmp_path / "cfg.toml"), "--out", str(tmp_path)]) == 2
    target = tmp_path / "t.safetensors"
    _target().save(target)
    code = main(["reconstruct", str(target), "--data", str(tmp_path / "X.npy"),
                 "--out", str(tmp_path / "n.safetensors")])  # fmt: skip
    assert code == 2


def test_a_cnn_radius_below_the_data_is_refused_before_building():
    from normonly import TargetCNN

    target = TargetCNN.random((1, 5, 5), [2], d_out=3, seed=0)
    X = torch.full((4, 1, 5, 5), 3.0, dtype=torch.float64)  # norm 15
    with pytest.raises(ValueError, match="radius=1 is smaller than the largest norm of the data"):
        reconstruct(target, radius=1.0, data=X)
