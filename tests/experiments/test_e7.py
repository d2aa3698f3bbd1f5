"""E7 (exact reconstruction of a trained classifier): the pipeline on a tiny trained MLP."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from normonly import TargetMLP, reconstruct
from normonly._threads import limit_threads
from normonly.data.classifiers import train_target_mlp
from normonly.data.datasets import Dataset
from normonly.experiments.e7_classifier import E7Config, figures, run_trial, summarize, trials

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread():
    with limit_threads(1):
        yield


def _blobs(d_in: int = 5, n: int = 120, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2 * n) % 3
    X = torch.randn(2 * n, d_in, generator=g, dtype=torch.float64) + 1.5 * y[:, None]
    return Dataset("blobs", X[:n], y[:n], X[n:], y[n:], 3, seed)


@pytest.mark.parametrize("method", ["wide", "residual"])
def test_tiny_trained_mlp_is_reconstructed_with_identical_predictions(method, tmp_path):
    data = _blobs()
    seq = train_target_mlp(data, [4, 4], epochs=3, seed=0, batch_size=32)
    path = tmp_path / "clf.safetensors"
    save_file(seq.state_dict(), str(path))  # the plain-PyTorch user's file
    target = TargetMLP.load(path, activation="relu")
    with torch.no_grad():
        assert torch.allclose(target(data.X_test), seq(data.X_test.float()).double(), atol=1e-5)
    rec = reconstruct(target, method=method, radius=data.max_input_norm(), overparam=2.0,
                      k=2 if method == "residual" else None, seed=1, n_points=300)  # fmt: skip
    assert rec.certificate.passed
    with torch.no_grad():
        a, b = target(data.X_test), rec.net(data.X_test)
    eps = torch.finfo(torch.float64).eps
    assert float((a - b).abs().max()) <= 1e6 * eps * max(1.0, float(a.abs().max()))
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_training_is_seeded():
    data = _blobs()
    a = train_target_mlp(data, [4], epochs=2, seed=3, batch_size=32)
    b = train_target_mlp(data, [4], epochs=2, seed=3, batch_size=32)
    c = train_target_mlp(data, [4], epochs=2, seed=4, batch_size=32)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.slow
def test_tiny_digits_trials_rows_table_figure(tmp_path):
    cfg = E7Config(datasets=("digits",), digits_hidden=(8,), epochs=2, n_points=300, k=16)
    from normonly.data.datasets import load_digits_split

    rows = [run_trial(cfg, t) for t in trials(cfg)]
    radius = load_digits_split(0).max_input_norm()
    assert [r["method"] for r in rows] == ["wide", "residual"]
    for r in rows:
        assert r["identical_predictions"] == 1.0
        assert r["test_acc_original"] == r["test_acc_reconstructed"] == r["test_acc_float32"]
        assert r["passed"] and r["max_logit_error_test"] < 1e-9
        assert r["radius"] == radius and r["target_widths"] == [64, 8, 10]
        assert r["data_seed"] == 0 and r["dtype"] == "float64"
    table, sentence = summarize(cfg, rows)
    assert "64→8→10" in table and "100.00%" in table
    assert "equals the original's in 2 of 2" in sentence
    assert "2 of 2 certificates passed" in sentence
    (path,) = figures(cfg, rows, tmp_path)
    assert path.read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    "override, match",
    [({"datasets": "cifar10"}, "datasets must be among"), ({"methods": "deep"}, "methods"),
     ({"overparam": "0.5"}, "overparam"), ({"k": "0"}, "k must be"), ({"lr": "nan"}, "lr")],
)  # fmt: skip
def test_bad_config_values_are_refused(override, match):
    with pytest.raises(ValueError, match=match):
        E7Config().replace(**override)
