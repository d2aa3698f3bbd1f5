"""E6 (BN-only training of sparse random networks): what is trained, rows, table, figure."""

from __future__ import annotations

import pytest
import torch

from normonly._threads import limit_threads
from normonly.data.classifiers import bn_cnn1d, bn_mlp, fit_classifier
from normonly.data.datasets import Dataset
from normonly.experiments.e6_bn_sparse import (
    E6Config,
    cifar_anchor,
    figures,
    run_trial,
    summarize,
    trials,
)
from normonly.train.bn_sparse import norm_parameters, select_trainable, validation_split

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread():
    with limit_threads(1):  # tiny models: a second competing thread only slows them down
        yield


def _blobs(d_in: int, n: int = 96, seed: int = 0) -> Dataset:
    """Three Gaussian classes in d_in dimensions (train and test)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2 * n) % 3
    X = torch.randn(2 * n, d_in, generator=g, dtype=torch.float64) + 2.0 * y[:, None]
    return Dataset("blobs", X[:n], y[:n], X[n:], y[n:], 3, seed)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _is_bn(name: str, model: torch.nn.Module) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, torch.nn.BatchNorm1d)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_bn_mode_trains_only_batchnorm(arch, density):
    if arch == "mlp":
        model, data = bn_mlp([6, 16, 16, 3], density=density, seed=1), _blobs(6)
    else:
        model, data = bn_cnn1d(12, 3, channels=4, n_conv=2, density=density, seed=1), _blobs(12)
    before = _snapshot(model)
    entries, n = select_trainable(model, "bn")
    assert n == sum(p.numel() for p in norm_parameters(model))
    assert n == (2 * (16 + 16 + 3) if arch == "mlp" else 2 * (4 + 4 + 3))
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p, _ in entries}
    fit_classifier(model, data, entries, epochs=2, lr=0.05, seed=0, batch_size=32)
    after = _snapshot(model)
    for name in before:
        if _is_bn(name, model):
            assert not torch.equal(before[name], after[name]), f"{name} did not train"
        else:
            assert torch.equal(before[name], after[name]), f"frozen {name} changed"


def test_random_mode_trains_the_same_number_of_kept_weights():
    model, data = bn_mlp([6, 32, 32, 3], density=0.5, seed=2), _blobs(6)
    before = _snapshot(model)
    entries, n = select_trainable(model, "random", seed=5)
    n_bn = sum(p.numel() for p in norm_parameters(model))
    assert n == n_bn == sum(int(m.sum()) for _, m in entries)
    fit_classifier(model, data, entries, epochs=2, lr=0.05, seed=0, batch_size=32)
    chosen = {id(p): m for p, m in entries}
    moved = 0
    for name, p in model.named_parameters():
        delta = p.detach() != before[name]
        if id(p) in chosen:
            assert not delta[chosen[id(p)] == 0].any(), f"unselected entries of {name} changed"
            module = model.get_submodule(name.rsplit(".", 1)[0])
            assert not (chosen[id(p)].bool() & (module.mask == 0)).any(), "chose a pruned weight"
            moved += int(delta.sum())
        else:
            assert not delta.any(), f"{name} changed but was not selected"
    assert 0 < moved <= n_bn


def test_random_mode_caps_at_the_surviving_weights():
    model = bn_mlp([4, 8, 3], density=0.05, seed=0)
    kept = sum(int(m.mask.sum()) for m in model if hasattr(m, "mask"))
    _, n = select_trainable(model, "random", seed=0)
    assert n == min(kept, 2 * (8 + 3))


def test_all_mode_keeps_pruned_weights_at_zero():
    model, data = bn_mlp([6, 16, 3], density=0.4, seed=3), _blobs(6)
    entries, n = select_trainable(model, "all")
    kept = sum(int(m.mask.sum()) for m in model if hasattr(m, "mask"))
    assert n == kept + 2 * (16 + 3)
    fit_classifier(model, data, entries, epochs=2, lr=0.05, seed=0, batch_size=32)
    for m in model:
        if hasattr(m, "mask"):
            assert (m.weight[m.mask == 0] == 0).all()


def test_select_trainable_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        select_trainable(bn_mlp([2, 3], seed=0), "lora")


@pytest.fixture(scope="module")
def tiny():
    cfg = E6Config(
        models=("digits-mlp",), densities=(1.0, 0.1), modes=("bn", "random", "all"),
        seeds=(0,), mlp_width=16, epochs=1, batch_size=256, adam_lrs=(0.01,), sgd_lrs=(0.1,),
    )  # fmt: skip
    return cfg, [run_trial(cfg, t) for t in trials(cfg)]


@pytest.mark.slow
def test_tiny_sweep_rows_record_seeds_and_counts(tiny):
    cfg, rows = tiny
    assert [r["key"] for r in rows] == [t["key"] for t in trials(cfg)]
    assert {r["mode"] for r in rows} == {"bn", "random", "all"}
    for r in rows:
        assert r["data_seed"] == cfg.digits_seed and r["model_seed"] == r["seed"] == 0
        assert all(0.0 <= a <= 1.0 for a in r["test_acc_by_lr"] + r["val_acc_by_lr"])
        if r["mode"] == "bn":
            assert r["n_trainable"] == r["n_bn"] == 2 * (16 + 16 + 10)
    again = run_trial(cfg, trials(cfg)[0])
    assert again["test_acc_by_lr"] == rows[0]["test_acc_by_lr"]  # same seed, same result


@pytest.mark.slow
def test_tiny_sweep_table_and_figure(tiny, tmp_path):
    cfg, rows = tiny
    table, sentence = summarize(cfg, rows)
    assert "digits-mlp sgd BN-only" in table and "EXTERNAL CIFAR-10" in table
    assert "65.24" in table  # the external anchor sits beside kept fraction 1
    assert sentence.startswith("E6 ran 10 trials") and "float32" in sentence
    assert "digits-mlp BN-only with sgd" in sentence and "chosen lr" in table
    (path,) = figures(cfg, rows, tmp_path)
    assert path.read_bytes().startswith(PNG)


def _row(model, mode, p, acc, seed=0, opt="adam", val=(0.5, 0.4)):
    # two lrs: test accuracy `acc` at the first, acc - 20 at the second
    return {"model": model, "mode": mode, "density": p, "seed": seed, "optimizer": opt,
            "lrs": [0.01, 0.1], "val_acc_by_lr": list(val),
            "test_acc_by_lr": [acc / 100, (acc - 20) / 100], "dtype": "float32"}  # fmt: skip


def _rows(bn, val=(0.5, 0.4)):
    ps = (1.0, 0.5, 0.1, 0.03, 0.001)
    rows = [_row("m-mlp", "bn", p, a, val=val) for p, a in zip(ps, bn, strict=True)]
    rows += [_row("m-mlp", "random", p, a - 3) for p, a in zip(ps, bn, strict=True)]
    rows.append(_row("m-mlp", "all", 1.0, 70))
    return rows


def test_sentence_is_computed_from_rows():
    _, sentence = summarize(E6Config(seeds=(0,)), _rows([40, 39, 37, 20, 10]))
    assert "reaches 40.0 [40.0–40.0]% at kept fraction 1" in sentence
    assert "(lr 0.01)" in sentence
    assert "within 5 points of it down to 0.1" in sentence
    assert "ends at 10.0 [10.0–10.0]% at 0.001" in sentence
    assert "at 5/5 fractions" in sentence and "70.0" in sentence


def test_doctored_rows_change_the_conclusion():
    base = summarize(E6Config(seeds=(0,)), _rows([40, 39, 37, 20, 10]))[1]
    # validation now prefers the second lr: the chosen rate and the accuracies change
    other = summarize(E6Config(seeds=(0,)), _rows([40, 39, 37, 20, 10], val=(0.3, 0.6)))[1]
    assert other != base and "(lr 0.1)" in other and "reaches 20.0" in other
    worse = summarize(E6Config(seeds=(0,)), _rows([40, 20, 15, 12, 10]))[1]
    assert "within 5 points" not in worse


def test_validation_split_is_disjoint_from_train_and_test():
    from normonly.data.datasets import load_dataset

    data = load_dataset("digits", 0)
    rest, X_val, y_val, idx = validation_split(data, 0.2, seed=0)
    assert len(idx) == X_val.shape[0] == round(0.2 * data.X_train.shape[0])
    assert rest.X_train.shape[0] + X_val.shape[0] == data.X_train.shape[0]
    assert torch.equal(rest.X_test, data.X_test)
    val_rows = {tuple(r.tolist()) for r in X_val}
    assert not val_rows & {tuple(r.tolist()) for r in data.X_test}  # disjoint from test
    assert not val_rows & {tuple(r.tolist()) for r in rest.X_train}  # and from what is trained
    assert torch.equal(validation_split(data, 0.2, seed=0)[3], idx)  # seeded


def test_external_anchor_values_and_quick_trial_count():
    anchor = cifar_anchor()
    assert anchor["acc"][1.0] == 65.24 and anchor["acc"][0.001] == 10.0 and anchor["source"]
    q = E6Config.quick()
    per = len(q.densities) * (len(q.modes) - 1) + len(q.all_densities)
    assert len(trials(q)) == len(q.models) * len(q.optimizers) * per * len(q.seeds)


@pytest.mark.parametrize(
    "override, match",
    [({"models": "mnist1d-rnn"}, "<dataset>-<arch>"), ({"densities": "0,0.5"}, "density"),
     ({"modes": "bn,lora"}, "modes must be among"), ({"adam_lrs": "-1"}, "lr must be"),
     ({"optimizers": "lbfgs"}, "optimizers must be one of"), ({"epochs": "0"}, "epochs"),
     ({"val_fraction": "1.5"}, "val_fraction")],
)  # fmt: skip
def test_bad_config_values_are_refused(override, match):
    with pytest.raises(ValueError, match=match):
        E6Config().replace(**override)
