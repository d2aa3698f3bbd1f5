"""The convolutional construction: effective kernels, exactness on the ball, widths, sparsity."""

from __future__ import annotations

import pytest
import torch

from normonly import TargetCNN
from normonly.certificate.sampling import sample_ball
from normonly.construct.cnn import build_cnn, cnn_feature_counts
from normonly.errors import InfeasibleError, RankDeficientError

F64 = torch.float64

CASES = {
    "pool, linear head": dict(input_shape=(1, 8, 8), channels=[3, 4], d_out=3, pool=2),
    "3 convs, strides, dilation, no bias": dict(
        input_shape=(2, 7, 7), channels=[2, 3, 2], kernel=[3, 2, 3], stride=[1, 2, 1],
        padding=[1, 0, 2], dilation=[1, 1, 2], bias=False),
    "3 convs, pools, 3 channels in": dict(input_shape=(3, 6, 6), channels=[4, 4, 3], d_out=4,
                                          pool=2),
    "5x5 stride 2": dict(input_shape=(1, 10, 10), channels=[4, 6], kernel=[5, 3], stride=[2, 1],
                         padding=[2, 1], d_out=5),
}  # fmt: skip


def _max_rel_error(net, f, radius: float, n: int = 2000) -> float:
    inside, sphere = sample_ball(n, f.d_in, radius, seed=7)
    with torch.no_grad():
        errs, scale = [], 0.0
        for x in (inside, sphere):
            y = f(x)
            errs.append(float((net(x) - y).abs().max()))
            scale = max(scale, float(y.abs().max()))
    return max(errs) / scale


def _effective_kernel_explicit(net, layer: int) -> torch.Tensor:
    """``Σ_j A[o, j] γ_j B[j, :]``, one channel j at a time (the slow reference)."""
    A, B = net.frozen_matrices(layer)
    gamma, _ = net.effective_affine(2 * layer)
    K = torch.zeros(A.shape[0], B.shape[1], dtype=F64)
    for j in range(B.shape[0]):
        K += A[:, j : j + 1] * gamma[j] * B[j : j + 1, :]
    return K


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if "5x5" in n else []) for n in CASES]
)
@pytest.mark.parametrize("radius", [1.0, 5.0])
def test_random_cnns_are_reproduced_inside_the_ball_and_on_its_sphere(name, radius):
    f = TargetCNN.random(seed=3, **CASES[name])
    net, layers = build_cnn(f, radius=radius, overparam=2.0, seed=1)
    assert _max_rel_error(net, f, radius) <= 1e-9
    assert all(c.relu_margin >= 0 for c in layers)  # every always-on shift covers its need
    for l in range(f.depth):
        if f.layers[l]["kind"] != "conv":
            continue  # the Linear head is the MLP construction (tests/construct/test_wide.py)
        K = _effective_kernel_explicit(net, l)
        W = f.kernel_matrix(l)
        assert float((K - W).abs().max()) <= 1e-12 * float(W.abs().max())


def test_widths_are_burkholz_feature_counts_times_overparam():
    f = TargetCNN.random((2, 6, 6), [3, 4], kernel=[3, 2], d_out=2, seed=0)
    assert cnn_feature_counts(f) == [3 * 2 * 9, 4 * 3 * 4, 2 * 4 * 7 * 7]
    net, _ = build_cnn(f, radius=1.0, overparam=1.5, seed=0)
    assert [w.out_channels if hasattr(w, "out_channels") else w.out_features for w in net.wide] \
        == [81, 72, 588]
    with pytest.raises(InfeasibleError, match="needs m >= 392 channels"):
        build_cnn(f, radius=1.0, overparam=0.5)


def test_same_seed_same_bytes_and_seed_changes_the_net():
    f = TargetCNN.random((1, 5, 5), [2, 2], seed=0)
    a, _ = build_cnn(f, radius=1.0, overparam=2.0, seed=4)
    b, _ = build_cnn(f, radius=1.0, overparam=2.0, seed=4)
    c, _ = build_cnn(f, radius=1.0, overparam=2.0, seed=5)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["wide.0.weight"], sc["wide.0.weight"])


def test_sparse_frozen_kernels_are_exact_and_a_too_sparse_mask_is_refused():
    f = TargetCNN.random((1, 6, 6), [2, 3], d_out=2, pool=2, seed=2)
    net, _ = build_cnn(f, radius=1.0, overparam=2.0, density=0.8, seed=0)
    assert bool((net.frozen_matrices(0)[1] == 0).any())  # the mask did remove weights
    assert _max_rel_error(net, f, 1.0) <= 1e-9
    with pytest.raises(RankDeficientError, match="density"):
        build_cnn(f, radius=1.0, overparam=1.0, density=0.2, seed=0)


def test_bad_options_are_named():
    f = TargetCNN.random((1, 4, 4), [2], seed=0)
    with pytest.raises(ValueError, match="radius must be a finite number > 0"):
        build_cnn(f, radius=-1.0)
    with pytest.raises(TypeError, match="target must be a TargetCNN"):
        build_cnn(f.to_mlp(), radius=1.0)
    with pytest.raises(ValueError, match="density"):
        build_cnn(f, radius=1.0, density=0.0)
