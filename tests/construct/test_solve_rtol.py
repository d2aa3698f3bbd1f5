"""``solve_rtol``: where the iterative Khatri-Rao solves of a construction stop."""

import pytest

from normonly import reconstruct
from normonly.nets.target import TargetMLP


def test_a_looser_solve_stops_earlier_and_is_still_judged_by_the_certificate():
    f = TargetMLP.random([24, 24], seed=3)
    exact = reconstruct(f, radius=1.0, overparam=2, n_points=200, solver="mixed")
    loose = reconstruct(f, radius=1.0, overparam=2, n_points=200, solver="mixed",
                        solve_rtol=1e-8)  # fmt: skip
    assert exact.layers[0].rel_residual <= 64 * 2.0**-52
    assert 64 * 2.0**-52 < loose.layers[0].rel_residual <= 1e-8
    assert loose.layers[0].iterations < exact.layers[0].iterations
    # the certificate proves whatever was built: a 1e-8 residual cannot pass 1e-9
    assert not loose.certificate.passed
    assert "effective weights" in loose.certificate.reason
    assert loose.certificate.max_abs_error <= loose.certificate.error_bound


@pytest.mark.parametrize("bad", [0, -1e-12, 0.5, float("nan"), "tiny", True])
def test_bad_solve_rtol_is_refused(bad):
    with pytest.raises(ValueError, match="solve_rtol must be a number in"):
        reconstruct(TargetMLP.random([3, 2], seed=0), radius=1.0, solve_rtol=bad)


def test_a_cnn_target_checks_solve_rtol_too():
    from normonly import TargetCNN

    target = TargetCNN.random((1, 5, 5), [2], d_out=3, seed=0)
    with pytest.raises(ValueError, match="solve_rtol must be a number in"):
        reconstruct(target, radius=1.0, solve_rtol=-1.0)
