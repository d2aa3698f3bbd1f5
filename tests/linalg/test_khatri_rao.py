"""The Khatri-Rao matrix, its matrix-free products and the chunked operator, against explicit K."""

from __future__ import annotations

import pytest
import torch

from normonly.linalg.khatri_rao import (
    CHUNK_BYTES,
    KhatriRaoOperator,
    default_chunk,
    khatri_rao,
    kr_column_norms,
    kr_gram,
    kr_matvec,
    kr_rmatvec,
)


def _close(got, want, rtol=1e-13):
    """Max-norm relative agreement (cheaper than torch.testing's first call, ~2 s of imports)."""
    scale = max(float(want.abs().max()), 1e-300)
    err = float((got.to(want.dtype) - want).abs().max()) / scale
    assert got.shape == want.shape and err <= rtol, f"relative error {err:.2e} > {rtol:.0e}"


def _rand(*shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _system(d_out=3, d_in=4, m=7, seed=0):
    return _rand(d_out, m, seed=seed), _rand(m, d_in, seed=seed + 1)


def test_index_order_matches_an_explicit_loop():
    A, B = _system()
    d_out, m = A.shape
    d_in = B.shape[1]
    K = khatri_rao(A, B)
    assert K.shape == (d_out * d_in, m)
    a, b, k_ = A.tolist(), B.tolist(), K.tolist()  # plain Python numbers: no tensor indexing
    for i in range(d_out):
        for j in range(d_in):
            for k in range(m):
                assert k_[i * d_in + j][k] == a[i][k] * b[k][j]
    # and the row-major vec of A diag(γ) B is what K γ gives
    gamma = _rand(m, seed=5)
    g = gamma.tolist()
    loop = [
        [sum(a[i][k] * g[k] * b[k][j] for k in range(m)) for j in range(d_in)] for i in range(d_out)
    ]
    loop = torch.tensor(loop, dtype=torch.float64)
    _close(K @ gamma, loop.reshape(-1), rtol=1e-14)


def test_matrix_free_products_equal_explicit_K():
    A, B = _system(5, 3, 17, seed=2)
    K = khatri_rao(A, B)
    g, v = _rand(17, seed=3), _rand(15, seed=4)
    _close(kr_matvec(A, B, g), K @ g, rtol=1e-13)
    _close(kr_rmatvec(A, B, v), K.T @ v, rtol=1e-13)
    _close(kr_gram(A, B), K.T @ K, rtol=1e-13)
    _close(kr_column_norms(A, B), K.norm(dim=0), rtol=1e-13)


@pytest.mark.parametrize("chunk", [1, 4, 16, 17, 1000])
def test_operator_streams_over_chunks_without_changing_the_numbers(chunk):
    A, B = _system(5, 3, 17, seed=7)
    K = khatri_rao(A, B)
    op = KhatriRaoOperator(A, B, chunk=chunk)
    g, v = _rand(17, seed=8), _rand(15, seed=9)
    _close(op.matvec(g), K @ g, rtol=1e-13)
    _close(op.rmatvec(v), K.T @ v, rtol=1e-13)
    out = torch.full((5, 3), float("nan"), dtype=torch.float64)  # normal() overwrites out
    res = op.normal(v.reshape(5, 3), out=out)
    assert res is out
    _close(res.reshape(-1), K @ (K.T @ v), rtol=1e-13)
    # a second product reuses the buffers and is not polluted by the first
    _close(op.normal(v.reshape(5, 3)).reshape(-1), K @ (K.T @ v))


def test_operator_in_float32_is_a_float32_copy_of_the_same_K():
    A, B = _system(4, 4, 40, seed=11)
    op = KhatriRaoOperator(A, B, dtype=torch.float32, chunk=8)
    assert op.At.dtype == op.B.dtype == torch.float32
    K = khatri_rao(A, B)
    v = _rand(16, seed=12)
    got = op.normal(v.reshape(4, 4).float()).double().reshape(-1)
    _close(got, K @ (K.T @ v), rtol=1e-5)


def test_operator_accepts_non_contiguous_inputs():
    A, B = _system(4, 6, 9, seed=13)
    B_view = B[:, ::2]  # (9, 3) column slice, as a uniform-width net passes
    K = khatri_rao(A, B_view)
    op = KhatriRaoOperator(A, B_view, chunk=4)
    g = _rand(9, seed=14)
    _close(op.matvec(g), K @ g)


def test_default_chunk_bounds_the_working_set_and_takes_all_units_on_a_gpu():
    c = default_chunk(32768, 128, 128, torch.float64, torch.device("cpu"))
    assert 64 <= c < 32768
    assert c * (128 + 2 * 128) * 8 <= CHUNK_BYTES
    assert default_chunk(32768, 128, 128, torch.float64, torch.device("cuda")) == 32768
    assert default_chunk(10, 128, 128, torch.float64, torch.device("cpu")) == 10


def test_shape_mismatch_is_rejected():
    A, B = _rand(3, 5, seed=0), _rand(6, 2, seed=1)
    with pytest.raises(ValueError, match="must agree"):
        khatri_rao(A, B)
    with pytest.raises(ValueError, match="must agree"):
        KhatriRaoOperator(A, B)
    with pytest.raises(ValueError, match="chunk"):
        KhatriRaoOperator(A, _rand(5, 2, seed=1), chunk=0)
