"""Matmul for a few rows (decoding): no packing, the weight streamed once from memory.

Same bits as kernels.cpu.matmul (one fma chain over k per output, from the output's initial
value), so `matmul`/`matmul_acc` below may pick either. The tiled kernel packs B into panels,
which for one row of A costs a full copy of the weight per call (the 113 MB lm head of SmolLM2
on every generated token); these loops read the weight once instead. Outputs are computed
JB at a time so that JB independent chains keep the fma units busy.

Several rows times W.T (a batched decode step) go to `_rows_times_wt`: A's rows are
transposed once into a zero-padded (K, MP) panel, and per k each weight value is broadcast
against all MP rows in one vector fma, so W is read once per call. `_bmm_rows` reloads the
weight for every row: batch 8 cost 6x batch 1 (measured; now ~2x). The padded rows compute on
zeros and are never stored. Every output is still the chain over k in increasing k from its
initial value (fma(a, w, acc) = fma(w, a, acc)).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray

from bitswarm.repro.fp import fma32
from bitswarm.repro.kernels.cpu import matmul as _tiled
from bitswarm.repro.kernels.cpu.matmul import _ptr, _tile_buffer
from bitswarm.repro.kernels.cpu.dispatch import kernel

SMALL_M = 8
JB = 16
MP = 8  # rows of A in _rows_times_wt (zero-padded, so its row loop is one vector)
JW = 16  # outputs per block of _rows_times_wt: JW x MP accumulators in registers


@kernel
def _rows_times_wt(at, w, c):
    """c[i, j] = chain over k of at[k, i] * w[j, k] for i < c.shape[0] (at is A^T padded to MP
    rows with zeros; w row-major, so b = w.T). Per k, one weight value per output is broadcast
    against all MP rows: a single vector fma; JW x MP accumulators stay in registers."""
    kk = at.shape[0]
    m, n = c.shape
    for bj in numba.prange((n + JW - 1) // JW):
        j0 = bj * JW
        nj = min(JW, n - j0)
        acc = carray(_tile_buffer(), (JW, MP))  # on the stack: registers after unrolling
        for jj in range(JW):
            for i in range(MP):
                acc[jj, i] = 0
        for jj in range(nj):
            for i in range(m):
                acc[jj, i] = c[i, j0 + jj]
        ap = _ptr(at, 0)  # unit stride known to LLVM, so the i loop becomes one vector fma
        if nj == JW:
            for k in range(kk):
                for jj in range(JW):
                    wv = w[j0 + jj, k]
                    for i in range(MP):
                        acc[jj, i] = fma32(ap[k * MP + i], wv, acc[jj, i])
        else:
            for k in range(kk):
                for jj in range(nj):
                    wv = w[j0 + jj, k]
                    for i in range(MP):
                        acc[jj, i] = fma32(ap[k * MP + i], wv, acc[jj, i])
        for jj in range(nj):
            for i in range(m):
                c[i, j0 + jj] = acc[jj, i]


@kernel
def _bmm_rows(a, b, c):
    """c[p, i, j] = chain over k of a[p, i, k] * b[p, k, j], JB outputs at a time. Serves a
    few rows times b (a batch of one: b may be W.T of a row-major weight, each chain then walking
    one weight row, or a row-major (k, n) matrix) and decode-time attention (one query row per
    head against the cached keys or values)."""
    nb, m, kk = a.shape
    n = b.shape[2]
    nblk = (n + JB - 1) // JB
    for t in numba.prange(nb * nblk):
        p = t // nblk
        j0 = (t % nblk) * JB
        nj = min(JB, n - j0)
        acc = np.empty(JB, np.float32)
        for i in range(m):
            for jj in range(nj):
                acc[jj] = c[p, i, j0 + jj]
            for k in range(kk):
                x = a[p, i, k]
                for jj in range(nj):
                    acc[jj] = fma32(x, b[p, k, j0 + jj], acc[jj])
            for jj in range(nj):
                c[p, i, j0 + jj] = acc[jj]


def _few_rows(a, b, c) -> bool:
    return (
        isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and isinstance(c, np.ndarray)
        and a.ndim == 3 and b.ndim == 3 and c.ndim == 3
        and a.dtype == np.float32 and b.dtype == np.float32 and c.dtype == np.float32
        and 0 < a.shape[1] <= SMALL_M and a.shape[2] > 0 and a.shape[0] == b.shape[0] == c.shape[0]
        and a.shape[2] == b.shape[1] and c.shape == (a.shape[0], a.shape[1], b.shape[2])
        and c.flags.c_contiguous and c.flags.writeable
        and all(st % 4 == 0 for st in a.strides + b.strides)
        and not (np.may_share_memory(c, a) or np.may_share_memory(c, b))
    )


def bmm_acc(a, b, c):
    if not _few_rows(a, b, c):
        return _tiled.bmm_acc(a, b, c)
    _bmm_rows(b.size, a, b, c)
    return c


def bmm(a, b):
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim == 3 and b_arr.ndim == 3 and a_arr.shape[0] == b_arr.shape[0] and a_arr.shape[2] == b_arr.shape[1]:
        c = np.zeros((a_arr.shape[0], a_arr.shape[1], b_arr.shape[2]), np.float32)
        if _few_rows(a_arr, b_arr, c):
            return bmm_acc(a_arr, b_arr, c)
    return _tiled.bmm(a, b)


def _small(a, b, c) -> bool:
    return (
        isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and isinstance(c, np.ndarray)
        and a.ndim == 2 and b.ndim == 2 and c.ndim == 2 and _few_rows(a[None], b[None], c[None])
    )


def matmul_acc(a, b, c):
    if not _small(a, b, c):
        return _tiled.matmul_acc(a, b, c)
    if a.shape[0] >= 4 and b.T.flags.c_contiguous:  # batched decode: x @ W.T, W read once (cost does not grow with rows; below 4 rows _bmm_rows is faster)
        at = np.zeros((a.shape[1], MP), np.float32)
        at[:, : a.shape[0]] = a.T
        _rows_times_wt(b.size, at, b.T, c)
        return c
    _bmm_rows(b.size, np.ascontiguousarray(a)[None], b[None], c[None])
    return c


def matmul(a, b):
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim == 2 and b_arr.ndim == 2 and a_arr.shape[1] == b_arr.shape[0]:
        c = np.zeros((a_arr.shape[0], b_arr.shape[1]), np.float32)
        if _small(a_arr, b_arr, c):
            return matmul_acc(a_arr, b_arr, c)
    return _tiled.matmul(a, b)
