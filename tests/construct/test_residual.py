"""Tests of the residual network and the deep construction (Theorem 2)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normonly.api import reconstruct
from normonly.certificate.sampling import sample_ball
from normonly.certificate.verify import verify
from normonly.construct.layout import check_k, residual_layout, wide_widths
from normonly.construct.residual import build_residual
from normonly.nets.io import load_network
from normonly.nets.residual import ResidualNormNet, residual_parameter_counts
from normonly.nets.target import TargetMLP

EPS = torch.finfo(torch.float64).eps
REL_TOL = 1e-9  # the exactness bar in float64 (≈ 4.5e6 eps)


def _formula_counts(widths: list[int], k: int | None, overparam: float) -> dict[str, int]:
    """Parameter counts from the target's widths alone (the module docstring's formula)."""
    r = max(widths)
    trainable = 2 * widths[0] + 2 * widths[-1]
    frozen = 0
    for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
        k_l = d_in if k is None else min(k, d_in)
        n_l, rest = divmod(d_in, k_l)  # n_l full chunks of size k_l and one of size rest
        for size, count in ((k_l, n_l), (rest, int(rest > 0))):
            h = math.ceil(overparam * d_out * size - 1e-9)
            trainable += count * (8 * r + 2 * h)
            frozen += count * 4 * r * h
    return {"trainable": trainable, "frozen": frozen}


def test_one_neuron_by_hand():
    # f(x) = 2x - 1 (last layer, no ReLU): one block, register 1, output read from register 1
    f = TargetMLP([torch.tensor([[2.0]])], [torch.tensor([-1.0])])
    net, certs = build_residual(f, radius=3.0, k=1, norm="affine")
    assert net.config["hidden"] == [1] and net.register == 1 and net.config["out_register"] == 1
    x = torch.tensor([[-3.0], [-0.5], [0.0], [0.5], [3.0]], dtype=torch.float64)
    y = net(x)
    assert torch.allclose(y, 2 * x - 1, rtol=0, atol=64 * EPS * 7)
    # N_lift shifts by (1 + margin) R and the readout removes C_out = (1 + margin)(|W| R + |b|)
    gamma, beta = net.effective_affine(0)
    assert gamma.item() == 1.0 and beta.item() == pytest.approx(3.0 * (1 + 2**-6))
    _, beta_read = net.effective_affine(len(net.norm_layers()) - 1)
    assert beta_read.item() == pytest.approx(-(1 + 2**-6) * (2 * 3 + 1))
    assert len(certs) == 1 and certs[0].relu_margin >= 0


def test_registers_swap_and_source_is_cleared():
    # two layers, k = 1: after layer 0 register 0 must be exactly 0 and register 1 must hold h
    f = TargetMLP.random([3, 4, 2], seed=3)
    net, _ = build_residual(f, radius=2.0, k=1, norm="affine", seed=1)
    x = torch.cat(sample_ball(64, 3, 2.0, seed=5))
    r = net.register
    with torch.no_grad():
        s = torch.nn.functional.pad(net.lift(x), (0, 2 * r - 3))  # (n, 2r)
        for blk in net.blocks[:3]:  # layer 0 has d_in = 3 blocks
            s = blk(s)
    h = torch.relu(x @ f.weights[0].T + f.biases[0])  # (n, 4)
    assert torch.equal(s[:, :r], torch.zeros_like(s[:, :r]))
    assert torch.allclose(s[:, r : r + 4], h, rtol=0, atol=1e3 * EPS * float(h.abs().max()))
    assert torch.equal(s[:, r + 4 :], torch.zeros_like(s[:, r + 4 :]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    widths=st.lists(st.integers(1, 8), min_size=2, max_size=4),
    k_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    radius=st.sampled_from([0.5, 1.0, 10.0]),
    norm=st.sampled_from(["batchnorm", "affine"]),
    overparam=st.sampled_from([1.0, 1.5]),
)
def test_exact_for_any_shape_k_and_seed(widths, k_frac, seed, radius, norm, overparam):
    max_d_in = max(widths[:-1])
    k = 1 + int(k_frac * (max_d_in - 1))
    f = TargetMLP.random(widths, seed=seed)
    rec = reconstruct(
        f, method="residual", k=k, radius=radius, overparam=overparam, norm=norm, seed=seed,
        n_points=200, verify_seed=seed,
    )  # fmt: skip
    cert = rec.certificate
    assert cert.passed, cert.to_table()
    assert cert.max_rel_error <= REL_TOL
    assert all(c.relu_margin >= 0 and c.rel_residual < 1e3 * EPS for c in rec.layers)
    assert rec.net.parameter_counts() == {
        **_formula_counts(widths, k, overparam),
        "frozen_nonzero": rec.net.parameter_counts()["frozen"],
    }


@pytest.mark.parametrize(
    ("widths", "k"), [([5, 3, 7, 2], 2), ([4, 9, 1], 3), ([6, 6], None), ([2, 8, 8, 3], 8)]
)
def test_parameter_counts_match_formula(widths, k):
    f = TargetMLP.random(widths, seed=0)
    config, blocks = residual_layout(f, k=k, overparam=1.5)
    net = ResidualNormNet(**config, seed=0)
    counts = net.parameter_counts()
    assert {key: counts[key] for key in ("trainable", "frozen")} == _formula_counts(widths, k, 1.5)
    sizes = {c: config[c] for c in ("d_in", "d_out", "register", "hidden")}
    assert residual_parameter_counts(**sizes) == _formula_counts(widths, k, 1.5)
    n_blocks = sum(math.ceil(a / (a if k is None else min(k, a))) for a in widths[:-1])
    assert net.depth == len(blocks) == n_blocks


@pytest.mark.parametrize("norm", ["batchnorm", "affine"])
def test_only_normalizations_are_trainable(norm):
    f = TargetMLP.random([3, 5, 2], seed=1)
    net, _ = build_residual(f, radius=1.0, k=2, norm=norm)
    norm_params = {id(p) for layer in net.norm_layers() for p in layer.parameters()}
    for name, p in net.named_parameters():
        assert p.requires_grad == (id(p) in norm_params), name
    x = torch.cat(sample_ball(32, 3, 1.0, seed=0))
    net(x).pow(2).sum().backward()
    for name, p in net.named_parameters():
        if id(p) in norm_params:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    grads = [layer.weight.grad for layer in net.norm_layers()]
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("widths", [[4, 6, 3], [7, 2, 5, 1], [3, 3]])
@pytest.mark.parametrize("overparam", [1.0, 1.5, 2.0])
def test_k_equal_d_in_gives_the_wide_width(widths, overparam):
    f = TargetMLP.random(widths, seed=0)
    config, blocks = residual_layout(f, k=None, overparam=overparam)
    wide = wide_widths(f, overparam=overparam, width=None, uniform_width=False)[1::2]
    assert config["hidden"] == wide  # one block per layer, of the wide layer's width
    assert [b[1] for b in blocks] == [0] * f.depth
    if max(widths[:-1]) == widths[0] == min(widths[:-1]):  # every layer has the same d_in
        assert residual_layout(f, k=widths[0], overparam=overparam)[0] == config


@pytest.mark.parametrize("norm", ["batchnorm", "affine"])
@pytest.mark.parametrize("density", [1.0, 0.9])
def test_save_load_round_trip_is_exact(tmp_path, norm, density):
    f = TargetMLP.random([4, 5, 3], seed=2)
    rec = reconstruct(
        f, method="residual", k=2, radius=2.0, overparam=2.0, norm=norm, density=density,
        n_points=200,
    )  # fmt: skip
    path = tmp_path / "net.safetensors"
    rec.net.save(path)
    net2 = load_network(path)
    assert isinstance(net2, ResidualNormNet) and net2.config == rec.net.config
    x = torch.cat(sample_ball(100, 4, 2.0, seed=1))
    with torch.no_grad():
        assert torch.equal(net2(x), rec.net(x))
    assert net2.meta["radius"] == 2.0
    assert verify(net2, f, radius=2.0, n_points=200).passed


def test_same_seed_same_bytes_and_seeds_differ():
    f = TargetMLP.random([3, 4, 2], seed=0)
    a, _ = build_residual(f, radius=1.0, k=1, seed=7)
    b, _ = build_residual(f, radius=1.0, k=1, seed=7)
    c, _ = build_residual(f, radius=1.0, k=1, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[key], sb[key]) for key in sa)
    assert not torch.equal(sa["blocks.0.linear_in.weight"], sc["blocks.0.linear_in.weight"])


def test_batchnorm_running_statistics_are_honoured():
    f = TargetMLP.random([3, 4, 2], seed=4)
    config, _ = residual_layout(f, k=2, overparam=1.0)
    net = ResidualNormNet(**config, norm="batchnorm", seed=0)
    g = torch.Generator().manual_seed(0)
    for layer in net.norm_layers():
        m = layer.num_features
        layer.running_mean.copy_(torch.randn(m, generator=g, dtype=torch.float64))
        layer.running_var.copy_(0.1 + 2 * torch.rand(m, generator=g, dtype=torch.float64))
    rec = reconstruct(f, method="residual", k=2, radius=1.0, net=net, n_points=200)
    assert rec.net is net and rec.certificate.max_rel_error <= REL_TOL


def test_raw_inputs_of_either_sign_and_negative_outputs():
    # large negative biases: many hidden ReLUs of the target are off and outputs are negative
    f = TargetMLP.random([4, 6, 3], seed=5, bias_scale=3.0)
    rec = reconstruct(f, method="residual", k=1, radius=5.0, n_points=400)
    x = torch.cat(sample_ball(400, 4, 5.0, seed=0))
    assert (x < 0).any() and (f(x) < 0).any()
    assert rec.certificate.max_rel_error <= REL_TOL


def test_one_certificate_per_block():
    f = TargetMLP.random([5, 3, 2], seed=0)
    _, certs = build_residual(f, radius=1.0, k=2)
    assert [(c.layer, c.block) for c in certs] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [c.shape for c in certs] == [(6, 6), (6, 6), (3, 3), (4, 4), (2, 2)]  # (d_out*|J|, h)
    assert certs[3].radius_in > 0 and certs[0].radius_in == 1.0


@pytest.mark.parametrize("k", [0, 6, -1])
def test_bad_k_raises_with_the_allowed_range(k):
    f = TargetMLP.random([5, 3, 2], seed=0)
    with pytest.raises(ValueError, match=r"k \(partition size\) must be an integer in \[1, 5\]"):
        reconstruct(f, radius=1.0, method="residual", k=k)


@pytest.mark.parametrize("k", [2.0, "2", True])
def test_non_integer_k_raises_type_error(k):
    f = TargetMLP.random([5, 3, 2], seed=0)
    with pytest.raises(TypeError, match="k \\(partition size\\) must be an integer or None"):
        check_k(k, f)


def test_k_is_clipped_per_layer():
    f = TargetMLP.random([2, 6, 3], seed=0)
    assert check_k(4, f) == [2, 4] and check_k(None, f) == [2, 6]
    config, blocks = residual_layout(f, k=4, overparam=1.0)
    assert config["hidden"] == [12, 12, 6]  # the last chunk of layer 1 has 2 inputs
    assert blocks == [(0, 0, 0, 2), (1, 0, 0, 4), (1, 1, 4, 6)]


@pytest.mark.parametrize(("d_in", "k"), [(6, 4), (7, 3), (10, 4), (5, 5), (9, 1)])
def test_chunks_partition_the_inputs_in_order(d_in, k):
    f = TargetMLP.random([d_in, 2], seed=0)
    _, blocks = residual_layout(f, k=k, overparam=1.0)
    covered = [i for _, _, start, stop in blocks for i in range(start, stop)]
    assert covered == list(range(d_in))
    assert [stop - start for *_, start, stop in blocks][:-1] == [k] * (len(blocks) - 1)
    net, certs = build_residual(f, radius=1.0, k=k)
    assert [c.shape[0] for c in certs] == [2 * (stop - start) for *_, start, stop in blocks]


def test_a_net_of_another_layout_is_refused():
    f = TargetMLP.random([4, 3, 2], seed=0)
    config, _ = residual_layout(f, k=1, overparam=1.0)
    net = ResidualNormNet(**config)
    with pytest.raises(ValueError, match="needs a ResidualNormNet with"):
        build_residual(f, radius=1.0, k=2, net=net)


def test_network_rejects_inputs_wider_than_a_register():
    with pytest.raises(ValueError, match="d_in must be an integer in"):
        ResidualNormNet(d_in=5, d_out=2, register=4, hidden=[3])


@pytest.mark.slow
@pytest.mark.parametrize("widths", [[16, 16, 16, 16], [16, 11, 16, 5], [9, 16, 7]])
@pytest.mark.parametrize("radius", [1.0, 10.0])
def test_must_show_grid(widths, radius):
    """Issue 4: rel. error <= 1e-9 on 10,000 points, every k in {1,2,4,8,16} (k <= d_in)."""
    f = TargetMLP.random(widths, seed=sum(widths))
    for k in [k for k in (1, 2, 4, 8, 16) if k <= max(widths[:-1])]:
        rec = reconstruct(f, method="residual", k=k, radius=radius, n_points=10_000)
        cert = rec.certificate
        assert cert.max_rel_error <= REL_TOL, (k, cert.to_table())
        assert cert.max_abs_error <= cert.error_bound
        # overparam 1: the proven bound passes 1e-9 x scale for most k, not all (see test_wide)
        assert cert.passed == (cert.error_bound <= 1e-9 * cert.output_scale)
        assert cert.bound_rel <= 1e-7
    for k in (1, 4, 16):  # overparam 2: every certificate passes
        if k <= max(widths[:-1]):
            cert = reconstruct(f, method="residual", k=k, radius=radius, overparam=2.0,
                               n_points=2_000).certificate  # fmt: skip
            assert cert.passed, (k, cert.summary())
