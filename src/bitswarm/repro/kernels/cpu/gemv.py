"""Matmul for a few rows (decoding): no packing, the weight streamed once from memory.

Same bits as kernels.cpu.matmul (one fma chain over k per output, from the output's initial
value), so `matmul`/`matmul_acc` below may pick either. The tiled kernel packs B into panels,
which for one row of A costs a full copy of the weight per call (the 113 MB lm head of SmolLM2
on every generated token); these loops read the weight once instead. Outputs are computed
JB at a time so that JB independent chains keep the fma units busy.
"""

from __future__ import annotations

import numba
import numpy as np

from bitswarm.repro.fp import fma32
from bitswarm.repro.kernels.cpu import matmul as _tiled
from bitswarm.repro.kernels.cpu.dispatch import kernel

SMALL_M = 8
JB = 16


@kernel
def _times_b(a, b, c):
    """c[i, j] = chain over k of a[i, k] * b[k, j]. b may be W.T of a row-major weight (the
    linear-layer case: each chain then walks one weight row) or a row-major (k, n) matrix."""
    m, kk = a.shape
    n = b.shape[1]
    for bj in numba.prange((n + JB - 1) // JB):
        j0 = bj * JB
        nj = min(JB, n - j0)
        acc = np.empty(JB, np.float32)
        for i in range(m):
            for jj in range(nj):
                acc[jj] = c[i, j0 + jj]
            for k in range(kk):
                x = a[i, k]
                for jj in range(nj):
                    acc[jj] = fma32(x, b[k, j0 + jj], acc[jj])
            for jj in range(nj):
                c[i, j0 + jj] = acc[jj]


def _small(a, b, c) -> bool:
    return (
        isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and isinstance(c, np.ndarray)
        and a.ndim == 2 and b.ndim == 2 and c.ndim == 2
        and a.dtype == np.float32 and b.dtype == np.float32 and c.dtype == np.float32
        and 0 < a.shape[0] <= SMALL_M and a.shape[1] > 0
        and c.flags.c_contiguous and c.flags.writeable
        and a.shape[1] == b.shape[0] and c.shape == (a.shape[0], b.shape[1])
    )


def matmul_acc(a, b, c):
    if not _small(a, b, c):
        return _tiled.matmul_acc(a, b, c)
    a = np.ascontiguousarray(a)
    if not (b.T.flags.c_contiguous or b.flags.c_contiguous):
        return _tiled.matmul_acc(a, b, c)
    _times_b(b.size, a, b, c)
    return c


def matmul(a, b):
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim == 2 and b_arr.ndim == 2 and a_arr.shape[1] == b_arr.shape[0]:
        c = np.zeros((a_arr.shape[0], b_arr.shape[1]), np.float32)
        if _small(a_arr, b_arr, c):
            return matmul_acc(a_arr, b_arr, c)
    return _tiled.matmul(a, b)
