"""The Khatri-Rao system of one target layer (docs/theory.md#the-khatri-rao-system).

For a narrow random matrix ``A`` (d_out, m) and a wide one ``B`` (m, d_in), the scales γ with
``A diag(γ) B = W`` solve the linear system ``K γ = vec(W)`` where

    K[(i, j), k] = A[i, k] * B[k, j],      row (i, j) -> i * d_in + j  (row-major vec of W)

i.e. K is the column-wise Kronecker (Khatri-Rao) product of A and Bᵀ, of shape (d_out*d_in, m).
K is never needed explicitly except for small systems: its products with vectors are cheap
matrix products,

    K γ    = vec(A diag(γ) B)                             # O(d_out m d_in)
    Kᵀ v   = rowsum((Aᵀ V) ∘ B),   V = unvec(v)           # O(d_out m d_in)
    K Kᵀ v = vec(A diag(s) B),     s = rowsum((Aᵀ V) ∘ B)  # both at once, one pass over A, B
    Kᵀ K   = (Aᵀ A) ∘ (B Bᵀ)                              # Hadamard product of Grams, (m, m)
"""

from __future__ import annotations

import functools

import torch

__all__ = [
    "khatri_rao",
    "kr_matvec",
    "kr_rmatvec",
    "kr_gram",
    "kr_column_norms",
    "KhatriRaoOperator",
    "BFloat16Normal",
    "fast_bfloat16",
    "CHUNK_BYTES",
]

CHUNK_BYTES = 1 << 25  # CPU working set of one block of units (A, B, one temporary): 32 MiB


def khatri_rao(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Explicit K of shape ``(d_out*d_in, m)`` with ``K[i*d_in + j, k] = A[i,k] * B[k,j]``.

    Allocates ``d_out*d_in*m`` numbers: callers check the size against
    :data:`normonly.linalg.solve.MAX_DENSE_BYTES` first.

    Parameters
    ----------
    A : (d_out, m) tensor
    B : (m, d_in) tensor

    Returns
    -------
    K : (d_out*d_in, m) tensor

    Example
    -------
    >>> A, B = torch.randn(2, 5), torch.randn(5, 3)
    >>> g = torch.randn(5)
    >>> torch.allclose(khatri_rao(A, B) @ g, (A @ torch.diag(g) @ B).reshape(-1))
    True
    """
    d_out, m = A.shape
    m2, d_in = B.shape
    if m != m2:
        raise ValueError(f"A has {m} columns but B has {m2} rows; they must agree (the width m)")
    return (A[:, None, :] * B.T[None, :, :]).reshape(d_out * d_in, m)  # (d_out*d_in, m)


def kr_matvec(A: torch.Tensor, B: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``K γ = vec(A diag(γ) B)`` without forming K; returns shape ``(d_out*d_in,)``."""
    return ((A * gamma) @ B).reshape(-1)  # (d_out, m) @ (m, d_in) -> (d_out*d_in,)


def kr_rmatvec(A: torch.Tensor, B: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Kᵀ v = rowsum((Aᵀ V) ∘ B)`` without forming K; returns shape ``(m,)``."""
    V = v.reshape(A.shape[0], B.shape[1])  # (d_out, d_in)
    return ((A.T @ V) * B).sum(dim=1)  # (m, d_in) -> (m,)


def kr_gram(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``Kᵀ K = (Aᵀ A) ∘ (B Bᵀ)``, shape ``(m, m)``."""
    return (A.T @ A) * (B @ B.T)


def kr_column_norms(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Euclidean norms of the columns of K: ``‖A[:, k]‖ · ‖B[k, :]‖``, shape ``(m,)``."""
    return A.norm(dim=0) * B.norm(dim=1)


def default_chunk(m: int, d_in: int, d_out: int, dtype: torch.dtype, device: torch.device) -> int:
    """Units per block: all of them on a GPU, a :data:`CHUNK_BYTES` working set on a CPU.

    32 MiB (the L3 size here) was measured as fast as 2 MiB on an idle machine (both ~60 ms
    per float32 ``K Kᵀ`` at d = 128, m = 2d²) and ~5x faster on a loaded one (median 0.19 s
    vs 1.0 s): fewer, larger blocks mean fewer OpenMP synchronisations for threads that the
    OS keeps descheduling.
    """
    if device.type != "cpu":
        return m
    per_unit = (d_out + 2 * d_in) * torch.finfo(dtype).bits // 8  # A column, B row, temporary
    return min(m, max(64, CHUNK_BYTES // per_unit))


class KhatriRaoOperator:
    """K as a matrix-free operator, streamed over blocks of wide units.

    ``matvec``, ``rmatvec`` and ``normal`` (``K Kᵀ``) compute the same numbers as
    :func:`kr_matvec` / :func:`kr_rmatvec` but stream over blocks of ``chunk`` units through
    one preallocated (chunk, d) buffer: no allocation per product beyond the result. Memory:
    a transposed copy of A (contiguous blocks multiply 2x faster), B (copied only if another
    dtype or not contiguous) and the buffer, O((d_in + d_out) m) in all; K is never formed.

    Parameters
    ----------
    A : (d_out, m) tensor
    B : (m, d_in) tensor
    dtype : torch.dtype, optional
        Working precision; default that of ``A``. A lower one (float32) keeps its own copy of
        A and B, for the inner passes of the mixed-precision solver.
    chunk : int, optional
        Units per block; default from :func:`default_chunk` (all of them on a GPU).
    copy_a : bool
        Keep a contiguous transposed copy of A (default): products run about 2x faster, for
        one more ``m × d_out`` array. The mixed-precision solver's float64 operator, which only
        computes a few residuals, does without it.

    Example
    -------
    >>> A, B = torch.randn(3, 40, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    >>> op = KhatriRaoOperator(A, B, chunk=16)
    >>> g = torch.randn(40, dtype=torch.float64)
    >>> torch.allclose(op.matvec(g), kr_matvec(A, B, g))
    True
    """

    def __init__(
        self,
        A: torch.Tensor,
        B: torch.Tensor,
        *,
        dtype: torch.dtype | None = None,
        chunk: int | None = None,
        copy_a: bool = True,
    ) -> None:
        self.d_out, self.m = A.shape
        self.d_in = B.shape[1]
        if B.shape[0] != self.m:
            raise ValueError(f"A has {self.m} columns but B has {B.shape[0]} rows; they must agree")
        self.dtype = A.dtype if dtype is None else dtype
        self.device = A.device
        # (m, d_out) rows per unit: a block A_cᵀ = At[s:e] is contiguous, which BLAS multiplies
        # 2x faster than the strided A[:, s:e]ᵀ (measured, float32, MKL); one copy of A
        self.At = A.to(self.dtype).T.contiguous() if copy_a else A.to(self.dtype).T
        self.B = B.to(self.dtype).contiguous()  # (m, d_in)
        if chunk is None:
            chunk = default_chunk(self.m, self.d_in, self.d_out, self.dtype, self.device)
        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of units, got {chunk}")
        self.chunk = min(chunk, self.m)
        self._T = torch.empty(self.chunk, max(self.d_in, self.d_out), dtype=self.dtype,
                              device=self.device)  # fmt: skip
        self._s = torch.empty(self.chunk, dtype=self.dtype, device=self.device)
        self.shape = (self.d_out * self.d_in, self.m)

    def _blocks(self):
        for s in range(0, self.m, self.chunk):
            yield s, min(s + self.chunk, self.m)

    def matvec(self, gamma: torch.Tensor) -> torch.Tensor:
        """``K γ`` for γ of shape (m,), returned with shape ``(d_out*d_in,)``."""
        out = torch.zeros(self.d_out, self.d_in, dtype=self.dtype, device=self.device)
        for s, e in self._blocks():
            T = self._T[: e - s, : self.d_in]
            torch.mul(self.B[s:e], gamma[s:e, None], out=T)  # (c, d_in) = diag(γ_c) B_c
            out.addmm_(self.At[s:e].T, T)  # (d_out, c) @ (c, d_in)
        return out.reshape(-1)

    def rmatvec(self, v: torch.Tensor) -> torch.Tensor:
        """``Kᵀ v`` for v of shape (d_out*d_in,) or (d_out, d_in), returned with shape (m,)."""
        V = v.reshape(self.d_out, self.d_in)
        out = torch.empty(self.m, dtype=self.dtype, device=self.device)
        for s, e in self._blocks():
            T = self._T[: e - s, : self.d_in]
            torch.mm(self.At[s:e], V, out=T)  # (c, d_out) @ (d_out, d_in)
            T.mul_(self.B[s:e])
            torch.sum(T, dim=1, out=out[s:e])
        return out

    def normal(self, V: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``K Kᵀ v`` as a (d_out, d_in) matrix: ``A diag(rowsum((Aᵀ V) ∘ B)) B``.

        One pass over A and B per product (half the memory traffic of ``matvec(rmatvec(v))``).

        Parameters
        ----------
        V : (d_out, d_in) tensor
        out : (d_out, d_in) tensor, optional
            Written in place and returned (must not be ``V``); of the operator's dtype, or of
            a wider one to accumulate the blocks in (products stay in the operator's dtype).
        """
        if out is None:
            out = torch.empty(self.d_out, self.d_in, dtype=self.dtype, device=self.device)
        out.zero_()
        for s, e in self._blocks():
            T = self._T[: e - s, : self.d_in]
            sv = self._s[: e - s]
            Act, Bc = self.At[s:e], self.B[s:e]  # (c, d_out), (c, d_in)
            torch.mm(Act, V, out=T)  # (c, d_in) = A_cᵀ V
            T.mul_(Bc)
            torch.sum(T, dim=1, out=sv)  # (c,) = (Kᵀ v) on this block
            torch.mul(Bc, sv[:, None], out=T)  # (c, d_in) = diag(s_c) B_c
            if out.dtype == self.dtype:
                out.addmm_(Act.T, T)  # (d_out, d_in) += A_c diag(s_c) B_c
            else:  # a wider accumulator: blocks summed in out's dtype (BFloat16Normal)
                out.add_(torch.mm(Act.T, T))
        return out


class BFloat16Normal:
    """``K Kᵀ v`` with bfloat16 products and float32 sums: the fastest, roughest level of CG.

    bfloat16 keeps 8 bits of mantissa (relative rounding 2⁻⁹ ≈ 2e-3), so one product is only
    about 3 digits accurate; the solver uses it for inner CG passes that each reduce the
    float64 residual by ~30x (``cgne``), where a matrix unit with bfloat16 support multiplies
    ~4x faster than in float32 (measured here: 335 vs 85 GFLOP/s, AVX512-BF16). Vectors, the
    per-unit sums and the accumulation over blocks of units stay in float32.

    Parameters
    ----------
    A : (d_out, m) tensor
    B : (m, d_in) tensor
    chunk : int, optional
        Units per block (default as :class:`KhatriRaoOperator`).
    """

    def __init__(self, A: torch.Tensor, B: torch.Tensor, *, chunk: int | None = None) -> None:
        self.op = KhatriRaoOperator(A, B, dtype=torch.bfloat16, chunk=chunk)
        self.d_out, self.m, self.d_in = self.op.d_out, self.op.m, self.op.d_in
        self.dtype, self.device, self.shape = torch.float32, self.op.device, self.op.shape
        self.label = "bfloat16"

    def normal(self, V: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``K Kᵀ v`` as a float32 (d_out, d_in) matrix (see :meth:`KhatriRaoOperator.normal`)."""
        if out is None:
            out = torch.empty(self.d_out, self.d_in, dtype=torch.float32, device=self.device)
        return self.op.normal(V.to(torch.bfloat16), out=out)


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (so the bfloat16 level pays).

    A CUDA device that supports bfloat16, or a CPU whose flags list ``avx512_bf16`` or
    ``amx_bf16`` (read from ``/proc/cpuinfo``: a fixed property of the machine, so the same
    seed still gives the same bytes on it). Elsewhere bfloat16 is emulated and slower.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
