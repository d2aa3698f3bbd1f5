"""Exact rank over GF(P) of a sparse Khatri-Rao pattern (private helpers of :mod:`.rank`).

A masked random K has, with probability 1, the *generic* rank of its mask; that rank is found
exactly (up to a one-sided error ≤ 2n/P) from any random integer instance with the same mask,
by elimination modulo the prime ``PRIME``. Two stages:

1. *Fill-free pivots* (:func:`cascade`): a column (unit) with one non-zero, or a row (equation)
   with one non-zero, can be eliminated without changing any other entry; repeat until none is
   left. Needs only the mask, no values. Near the sparsity threshold this often decides the rank.
2. *Dense elimination* (:func:`dense_rank`) of what is left, in float64 with balanced residues
   ``|x| ≤ P/2 + 2``: a product is < 2^44, so a sum of ``_BLOCK`` = 256 products is exact below
   2^53 and every block update is one BLAS matrix product followed by one reduction. Recursive
   LU with row pivoting (Toledo) keeps the per-pivot Python work to ``_LEAF`` columns.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = ["PRIME", "reduce_mod", "dense_rank", "cascade"]

PRIME = 8_388_593  # the largest prime below 2**23
_INV = 1.0 / PRIME
_BLOCK = 256  # 256 * (P/2 + 2)**2 < 2**52: block products and one subtraction are exact
_LEAF = 8  # columns eliminated one at a time at the bottom of the recursion


class _Deficient(Exception):
    """A column without pivot: the matrix lacks full column rank (early exit)."""


def reduce_mod(x: np.ndarray) -> np.ndarray:
    """Replace ``x`` (float64 integers, ``|x| < 2**53``) in place by balanced residues mod P."""
    t = x * _INV
    np.rint(t, out=t)
    t *= PRIME
    x -= t  # exact: |x|, |t| < 2**53 are integers
    return x


def _leaf(M: np.ndarray, r: int, c0: int, c1: int, early: bool) -> tuple[int, list[int]]:
    R = M.shape[0]
    pivots: list[int] = []
    for c in range(c0, c1):
        nz = np.flatnonzero(M[r:, c]) if r < R else ()
        if len(nz) == 0:
            if early:
                raise _Deficient
            continue
        i = r + int(nz[0])
        if i != r:
            M[[r, i]] = M[[i, r]]  # whole rows: the stored multipliers move with them
        inv = pow(int(M[r, c]) % PRIME, PRIME - 2, PRIME)
        lower = reduce_mod(M[r + 1 :, c] * inv)  # (R-r-1,) multipliers
        M[r + 1 :, c] = lower
        if c + 1 < c1 and r + 1 < R:
            block = M[r + 1 :, c + 1 : c1]
            block -= np.outer(lower, M[r, c + 1 : c1])
            reduce_mod(block)
        pivots.append(c)
        r += 1
    return r, pivots


def _trsm(L: np.ndarray, T: np.ndarray) -> None:
    """``T ← L⁻¹ T`` for the unit lower triangle of ``L`` (k, k), in place, mod P."""
    k = L.shape[0]
    if k <= _LEAF:
        for i in range(1, k):
            T[i] -= L[i, :i] @ T[:i]
            reduce_mod(T[i])
        return
    h = k // 2
    _trsm(L[:h, :h], T[:h])
    T[h:] -= L[h:, :h] @ T[:h]
    reduce_mod(T[h:])
    _trsm(L[h:, h:], T[h:])


def _update(M: np.ndarray, r: int, r1: int, pivots: list[int], a: int, b: int) -> None:
    """Apply the pivots of rows r..r1 to columns a..b (triangular solve + Schur complement)."""
    k = r1 - r
    L = M[r:, pivots]  # (R-r, k) multipliers, a copy
    U = M[r:r1, a:b]  # (k, b-a) view
    _trsm(L[:k], U)
    if r1 < M.shape[0]:
        T = M[r1:, a:b]
        T -= L[k:] @ U  # inner dimension k <= _BLOCK: exact
        reduce_mod(T)


def _factor(M: np.ndarray, r: int, c0: int, c1: int, early: bool) -> tuple[int, list[int]]:
    if c1 - c0 <= _LEAF:
        return _leaf(M, r, c0, c1, early)
    cm = (c0 + c1) // 2
    r1, left = _factor(M, r, c0, cm, early)
    if r < r1 < M.shape[0]:
        _update(M, r, r1, left, cm, c1)
    r2, right = _factor(M, r1, cm, c1, early)
    return r2, left + right


def dense_rank(M: np.ndarray, *, early: bool = False, threads: int | None = 1) -> int | None:
    """Rank over GF(P) of ``M`` (R, C), entries balanced residues; ``None`` when ``early``
    and some column has no pivot (then the rank is < C and not computed further).

    ``threads`` caps the BLAS threads (None: BLAS default). One thread is the default because
    the recursion issues many medium-sized products whose thread synchronisation costs more
    than it saves on a few busy cores (measured 2x faster at 1024-2304 on a shared 2-core
    machine); sweeps parallelise over processes instead.
    """
    M = np.array(M, dtype=np.float64, order="F")  # columns contiguous: pivot search, BLAS
    limit = threads is not None
    with _blas().limit(limits=threads, user_api="blas") if limit else contextlib.nullcontext():
        return _eliminate(M, early)


@functools.lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    """One controller: finding the loaded BLAS libraries costs ~1 ms, once, not per call."""
    return ThreadpoolController()


def _eliminate(M: np.ndarray, early: bool) -> int | None:
    R, C = M.shape
    r = 0
    try:
        for c0 in range(0, C, _BLOCK):
            c1 = min(c0 + _BLOCK, C)
            r1, pivots = _factor(M, r, c0, c1, early)
            if r < r1 < R and c1 < C:
                _update(M, r, r1, pivots, c1, C)
            r = r1
    except _Deficient:
        return None
    return r


def cascade(
    rows: np.ndarray, cols: np.ndarray, n: int, m: int, *, stop_on_empty: bool
) -> tuple[int, np.ndarray, np.ndarray, int] | None:
    """Eliminate singleton columns and rows of the pattern of an (n, m) matrix, fill-free.

    Parameters
    ----------
    rows, cols : (nnz,) int arrays
        Positions of the non-zeros.
    stop_on_empty : bool
        Return ``None`` as soon as a row is (or becomes) empty: no full row rank.

    Returns
    -------
    pivots : int
        Rank contributed by the eliminated singletons.
    live_rows, live_cols : bool arrays (n,), (m,)
        The core left over (columns that became empty are dropped).
    empty_rows : int
        Rows that were or became zero (each lowers the rank by one).
    """
    order = np.argsort(rows, kind="stable")
    r_ptr = np.searchsorted(rows[order], np.arange(n + 1)).tolist()
    r_cols = cols[order].tolist()
    order = np.argsort(cols, kind="stable")
    c_ptr = np.searchsorted(cols[order], np.arange(m + 1)).tolist()
    c_rows = rows[order].tolist()
    rc = [r_ptr[i + 1] - r_ptr[i] for i in range(n)]
    cc = [c_ptr[k + 1] - c_ptr[k] for k in range(m)]
    empty = sum(1 for x in rc if x == 0)
    if empty and stop_on_empty:
        return None
    r_live = [x > 0 for x in rc]
    c_live = [x > 0 for x in cc]
    queue = deque([(True, k) for k in range(m) if cc[k] == 1])
    queue.extend((False, i) for i in range(n) if rc[i] == 1)
    pivots = 0
    while queue:
        is_col, x = queue.popleft()
        if is_col:  # a unit that reaches one live equation: pivot there
            if not c_live[x] or cc[x] != 1:
                continue
            c = x
            r = next(i for i in c_rows[c_ptr[c] : c_ptr[c + 1]] if r_live[i])
        else:  # an equation with one live unit: pivot there
            if not r_live[x] or rc[x] != 1:
                continue
            r = x
            c = next(k for k in r_cols[r_ptr[r] : r_ptr[r + 1]] if c_live[k])
        r_live[r] = c_live[c] = False
        pivots += 1
        for k in r_cols[r_ptr[r] : r_ptr[r + 1]]:
            if c_live[k]:
                cc[k] -= 1
                if cc[k] == 1:
                    queue.append((True, k))
                elif cc[k] == 0:
                    c_live[k] = False
        for i in c_rows[c_ptr[c] : c_ptr[c + 1]]:
            if r_live[i]:
                rc[i] -= 1
                if rc[i] == 0:
                    if stop_on_empty:
                        return None
                    r_live[i] = False
                    empty += 1
                elif rc[i] == 1:
                    queue.append((False, i))
    return pivots, np.array(r_live, dtype=bool), np.array(c_live, dtype=bool), empty
