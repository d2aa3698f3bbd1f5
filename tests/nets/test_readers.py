"""Targets from scikit-learn and from ONNX files built independently (onnx.helper)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

from normonly import TargetMLP, reconstruct
from normonly.cli import main

F64 = torch.float64


def _digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _fit(model, X, y):  # a few epochs: the tests need a trained net, not a good one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


# --------------------------------------------------------------------------- scikit-learn
def test_relu_classifier_on_digits_is_reconstructed_with_identical_predictions():
    X, y = _digits()
    clf = _fit(
        MLPClassifier(hidden_layer_sizes=(32,), activation="relu", max_iter=40,
                      random_state=0), X, y
    )
    f = TargetMLP.from_sklearn(clf)
    assert f.widths == [64, 32, 10]
    rec = reconstruct(f, data=X, overparam=2.0, n_points=500)
    assert rec.certificate.passed, rec.certificate.summary()
    with torch.no_grad():
        logits = rec.net(torch.from_numpy(X))
    h = np.maximum(X @ clf.coefs_[0] + clf.intercepts_[0], 0.0)
    ref = torch.from_numpy(h @ clf.coefs_[1] + clf.intercepts_[1])  # the estimator's logits
    assert float((logits - ref).abs().max() / ref.abs().max()) <= 1e-9
    pred = clf.classes_[logits.argmax(dim=1).numpy()]
    assert (pred == clf.predict(X)).all()  # all 1797 rows


def test_binary_classifier_has_one_logit_and_predict_is_its_sign():
    X, y = _digits()
    yb = (y >= 5).astype(int)
    clf = _fit(
        MLPClassifier(hidden_layer_sizes=(8,), activation="relu", max_iter=30,
                      random_state=1), X, yb
    )
    f = TargetMLP.from_sklearn(clf)
    assert f.d_out == 1
    rec = reconstruct(f, data=X, overparam=2.0, n_points=200)
    with torch.no_grad():
        logit = rec.net(torch.from_numpy(X))[:, 0].numpy()
    assert (clf.classes_[(logit > 0).astype(int)] == clf.predict(X)).all()


def test_regressor_outputs_are_reproduced():
    X, y = _digits()
    reg = _fit(
        MLPRegressor(hidden_layer_sizes=(12, 6), activation="relu", max_iter=30,
                     random_state=0), X, y
    )
    rec = reconstruct(TargetMLP.from_sklearn(reg), data=X, overparam=2.0, n_points=200)
    with torch.no_grad():
        out = rec.net(torch.from_numpy(X))[:, 0].numpy()
    assert np.abs(out - reg.predict(X)).max() <= 1e-9 * np.abs(reg.predict(X)).max()


@pytest.mark.parametrize("activation", ["logistic", "tanh", "identity"])
def test_other_sklearn_activations_are_refused_by_name(activation):
    X, y = _digits()
    clf = _fit(
        MLPClassifier(hidden_layer_sizes=(4,), activation=activation, max_iter=5,
                      random_state=0), X, y
    )
    with pytest.raises(ValueError, match=f"activation='{activation}'.*ReLU networks only"):
        TargetMLP.from_sklearn(clf)


def test_unfitted_or_foreign_estimators_are_refused():
    with pytest.raises(ValueError, match="not fitted yet"):
        TargetMLP.from_sklearn(MLPClassifier())
    with pytest.raises(TypeError, match="MLPClassifier or MLPRegressor, got str"):
        TargetMLP.from_sklearn("model")


def test_transposed_views_are_copied_contiguous_for_the_cg_solver():
    rng = np.random.default_rng(0)
    c = [rng.standard_normal((64, 32)) / 8, rng.standard_normal((32, 10)) / 6]
    f = TargetMLP([torch.tensor(c[0].T), torch.tensor(c[1].T)], [torch.zeros(32), torch.zeros(10)])
    assert all(w.is_contiguous() for w in f.weights)
    rec = reconstruct(f, radius=1.0, overparam=2.0, n_points=200)  # the "mixed" CG solver
    assert rec.layers[0].solver == "mixed" and rec.certificate.passed


# --------------------------------------------------------------------------- ONNX
def _onnx_mlp(path, weights, biases, *, style="gemm", dtype=np.float64, trans_b=True,
              alpha=1.0, beta=1.0, last_relu=False, extra=None):  # fmt: skip
    """An ONNX ReLU MLP written with onnx.helper (independent of normonly's exporter)."""
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    nodes, inits, cur = [], [], "x"
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        if style == "gemm":
            B = (W / alpha if trans_b else (W / alpha).T).astype(dtype)
            inits += [numpy_helper.from_array(B, f"W{i}"),
                      numpy_helper.from_array((b / beta).astype(dtype), f"b{i}")]  # fmt: skip
            nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [f"g{i}"],
                                          name=f"gemm{i}", transB=int(trans_b), alpha=alpha,
                                          beta=beta))  # fmt: skip
            cur = f"g{i}"
        else:
            inits += [numpy_helper.from_array(W.T.astype(dtype), f"W{i}"),
                      numpy_helper.from_array(b.astype(dtype), f"b{i}")]  # fmt: skip
            nodes += [helper.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"], name=f"matmul{i}"),
                      helper.make_node("Add", [f"b{i}", f"m{i}"], [f"a{i}"], name=f"add{i}")]
            cur = f"a{i}"
        if i < len(weights) - 1 or last_relu:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"], name=f"relu{i}"))
            cur = f"r{i}"
    if extra is not None:
        nodes.append(helper.make_node(extra, [cur], ["e"], name="odd_one"))
        cur = "e"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    d_in, d_out = weights[0].shape[1], weights[-1].shape[0]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", elem, [None, d_in])],
        [helper.make_tensor_value_info("y", elem, [None, d_out])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _random_layers(widths, seed=0):
    f = TargetMLP.random(widths, seed=seed)
    return [w.numpy() for w in f.weights], [b.numpy() for b in f.biases], f


@pytest.mark.parametrize(
    "kw",
    [
        {"style": "gemm"},
        {"style": "gemm", "trans_b": False},
        {"style": "gemm", "alpha": 0.5, "beta": 2.0},
        {"style": "matmul"},
    ],
)
def test_independent_onnx_float64_targets_are_read_exactly(tmp_path, kw):
    ws, bs, f = _random_layers([5, 7, 6, 3])
    g = TargetMLP.from_onnx(_onnx_mlp(tmp_path / "m.onnx", ws, bs, **kw))
    assert g.widths == f.widths
    x = torch.randn(50, 5, dtype=F64)
    assert (g(x) - f(x)).abs().max() <= 1e-14  # alpha/beta are powers of two here: exact
    assert reconstruct(g, radius=2.0, overparam=2.0, n_points=300).certificate.passed


def test_float32_onnx_weights_are_converted_exactly(tmp_path):
    ws, bs, _ = _random_layers([4, 6, 2])
    g = TargetMLP.from_onnx(_onnx_mlp(tmp_path / "m.onnx", ws, bs, dtype=np.float32))
    for w, w_read in zip(ws, g.weights, strict=True):
        assert torch.equal(w_read, torch.from_numpy(w.astype(np.float32).astype(np.float64)))
    assert reconstruct(g, radius=1.0, overparam=2.0, n_points=300).certificate.passed


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "Softmax"])
def test_unsupported_operators_are_refused_naming_them(tmp_path, op):
    ws, bs, _ = _random_layers([4, 5, 2])
    path = _onnx_mlp(tmp_path / "m.onnx", ws, bs, extra=op)
    with pytest.raises(ValueError, match=f"operator {op} \\(node 'odd_one'\\) is not supported"):
        TargetMLP.from_onnx(path)


def test_structural_problems_in_onnx_graphs(tmp_path):
    ws, bs, _ = _random_layers([4, 5, 2])
    with pytest.raises(ValueError, match="ends with a Relu"):
        TargetMLP.from_onnx(_onnx_mlp(tmp_path / "a.onnx", ws, bs, last_relu=True))
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(_onnx_mlp(tmp_path / "b.onnx", ws, bs).read_bytes()[:-40])
    with pytest.raises(ValueError, match="not a valid ONNX model|graph"):
        TargetMLP.from_onnx(truncated)
    junk = tmp_path / "j.onnx"
    junk.write_bytes(b"\x00\xff" * 64)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        TargetMLP.from_onnx(junk)
    with pytest.raises(FileNotFoundError):
        TargetMLP.from_onnx(tmp_path / "missing.onnx")


def test_cli_takes_onnx_targets_with_the_activation_from_the_graph(tmp_path, capsys):
    ws, bs, _ = _random_layers([4, 5, 2])
    path = _onnx_mlp(tmp_path / "m.onnx", ws, bs)
    out = tmp_path / "net.safetensors"
    code = main(["reconstruct", str(path), "--radius", "1", "--overparam", "2", "--out", str(out)])
    assert code == 0 and out.exists()
    assert main(["verify", str(out), str(path)]) == 0
    code = main(["reconstruct", str(path), "--radius", "1", "--out", str(out),
                 "--activation", "sigmoid"])  # fmt: skip
    assert code == 2 and "'sigmoid' is not supported" in capsys.readouterr().err
    bad = _onnx_mlp(tmp_path / "s.onnx", ws, bs, extra="Sigmoid")
    assert main(["reconstruct", str(bad), "--radius", "1", "--out", str(out)]) == 2
    assert "operator Sigmoid" in capsys.readouterr().err


def test_sklearn_to_reconstruct_to_onnx_runtime_equals_the_estimator(tmp_path, capsys):
    import onnxruntime

    from normonly import export_onnx

    X, y = _digits()
    clf = _fit(
        MLPClassifier(hidden_layer_sizes=(16,), activation="relu", max_iter=30,
                      random_state=2), X, y
    )  # fmt: skip
    rec = reconstruct(TargetMLP.from_sklearn(clf), data=X, overparam=2.0, n_points=300)
    path = tmp_path / "net.onnx"
    export_onnx(rec.net, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {sess.get_inputs()[0].name: X})
    h = np.maximum(X @ clf.coefs_[0] + clf.intercepts_[0], 0.0)
    ref = h @ clf.coefs_[1] + clf.intercepts_[1]
    assert np.abs(logits - ref).max() <= 1e-9 * np.abs(ref).max()
    assert (clf.classes_[logits.argmax(axis=1)] == clf.predict(X)).all()
    net_path = tmp_path / "net.safetensors"
    rec.net.save(net_path)
    assert main(["export", str(net_path), "--onnx", str(tmp_path / "cli.onnx")]) == 0
    assert "max relative difference" in capsys.readouterr().out
