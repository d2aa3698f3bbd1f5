"""Offline data loaders: documented shapes, seeded splits, no network, no files, no global RNG."""

from __future__ import annotations

import random
import socket
import sys
import urllib.request

import numpy as np
import pytest
import torch

from normonly.data import Dataset, load_dataset, load_digits_split, load_mnist1d


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Every way out to the network raises; the working directory is an empty tmp dir."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    requests = sys.modules.get("requests")  # not a dependency; patched when something loaded it
    if requests is not None:
        monkeypatch.setattr(requests, "get", refuse)
        monkeypatch.setattr(requests.Session, "request", refuse)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(data: Dataset, n_train: int, n_test: int, d_in: int) -> None:
    assert data.X_train.shape == (n_train, d_in) and data.X_test.shape == (n_test, d_in)
    assert data.y_train.shape == (n_train,) and data.y_test.shape == (n_test,)
    assert data.X_train.dtype == torch.float64 and data.y_train.dtype == torch.int64
    assert data.d_in == d_in and data.n_classes == 10
    assert set(data.y_train.tolist()) == set(range(10))
    assert torch.isfinite(data.X_train).all() and torch.isfinite(data.X_test).all()


def test_digits_shapes_offline(offline):
    data = load_digits_split(0)
    _check(data, 1347, 450, 64)
    assert data.name == "digits" and data.seed == 0
    assert 0.0 <= float(data.X_train.min()) and float(data.X_train.max()) <= 1.0  # pixels / 16
    assert list(offline.iterdir()) == []  # nothing written


def test_digits_split_is_seeded_and_stratified():
    a, b, c = load_digits_split(3), load_digits_split(3), load_digits_split(4)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.X_train, c.X_train)
    test = torch.bincount(a.y_test, minlength=10)
    total = test + torch.bincount(a.y_train, minlength=10)
    assert ((test - 0.25 * total).abs() <= 1).all()  # stratified: a quarter of every class


def test_max_input_norm_is_the_largest_row_norm():
    data = load_digits_split(0)
    X = torch.cat([data.X_train, data.X_test])
    assert data.max_input_norm() == pytest.approx(float(X.norm(dim=1).max()))
    assert (X.norm(dim=1) <= data.max_input_norm()).all()


def test_mnist1d_small_generates_offline_without_touching_global_rng(offline):
    from normonly.data import datasets as data_module

    data_module._mnist1d_arrays.cache_clear()  # force a real generation under the network block
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    data = load_mnist1d(num_samples=500)
    _check(data, 400, 100, 40)
    assert data.name == "mnist1d" and data.seed == 42
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    assert list(offline.iterdir()) == []  # get_dataset would have written a pickle here
    again = load_mnist1d(num_samples=500)
    assert torch.equal(again.X_train, data.X_train)
    again.X_train.zero_()  # callers get copies: the cached arrays are untouched
    assert torch.equal(load_mnist1d(num_samples=500).X_train, data.X_train)


@pytest.mark.slow
def test_mnist1d_benchmark_shapes_offline(offline):
    from normonly.data import datasets as data_module

    data_module._mnist1d_arrays.cache_clear()
    data = load_mnist1d()
    _check(data, 4000, 1000, 40)
    assert abs(float(torch.cat([data.X_train, data.X_test]).mean())) < 1e-6  # standardised
    assert list(offline.iterdir()) == []


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="test_fraction must be in"):
        load_digits_split(0, test_fraction=1.5)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        load_digits_split(-1)
    with pytest.raises(ValueError, match="num_samples"):
        load_mnist1d(num_samples=5)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("cifar10")


def test_regression_data_uses_the_one_ball_sampler_without_its_origin():
    from normonly import TargetMLP
    from normonly.certificate.sampling import sample_ball
    from normonly.data.regression import regression_data

    f = TargetMLP.random([3, 4, 2], seed=0)
    data = regression_data(f, radius=2.0, n_train=3000, n_val=50, n_test=70, seed=5)
    x = torch.cat([data.x_train, data.x_val, data.x_test])  # (3120, 3), train, val, test
    inside, _ = sample_ball(2 * (3120 + 1), 3, 2.0, seed=5)
    assert torch.equal(x, inside[1:])  # sample_ball's inside points, its origin dropped
    assert (x.norm(dim=1) <= 2.0).all() and (x.norm(dim=1) > 0).all()
    u = (data.x_train.norm(dim=1) / 2.0) ** 3  # uniform in the ball <=> (r/R)^d ~ U(0, 1)
    assert abs(float(u.mean()) - 0.5) < 0.03
    assert torch.equal(data.y_test, f(data.x_test))
    again = regression_data(f, radius=2.0, n_train=3000, n_val=50, n_test=70, seed=5)
    assert torch.equal(again.x_train, data.x_train)
