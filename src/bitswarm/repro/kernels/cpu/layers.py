"""numba kernels for RMSNorm, rotary embedding, token embedding and SwiGLU.

Bit-identical to `bitswarm.repro.reference.layers`, whose docstring is the spec (operation
order). Parallel only across independent outputs: rows for per-row work, blocks of feature
columns for reductions over rows (each column's chain still runs over rows in order).
`rope_tables` is the reference implementation itself (tiny tables).
"""

from __future__ import annotations

import numba
import numpy as np

from bitswarm.repro.kernels.cpu.dispatch import kernel
from bitswarm.repro.fp import fma32
from bitswarm.repro.kernels.cpu.transcendental import sigmoid32, silu32
from bitswarm.repro.reference.layers import (
    _acc,
    _check_embedding_bwd,
    _check_ids,
    _check_rmsnorm,
    _check_rmsnorm_bwd,
    _check_rope,
    _check_swiglu,
    _eps,
    _f32,
    _same_shape,
    rope_inv_freq,
    rope_tables,
)

__all__ = [
    "embedding_bwd",
    "embedding_fwd",
    "rmsnorm_bwd",
    "rmsnorm_fwd",
    "rope_bwd",
    "rope_fwd",
    "rope_inv_freq",
    "rope_tables",
    "swiglu_bwd",
    "swiglu_fwd",
]

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
COL_BLOCK = 64  # columns per parallel task in reductions over rows (does not affect results)


# ---------------------------------------------------------------------------------------------
# RMSNorm


@kernel
def _rmsnorm_fwd(x, w, eps, y, rstd):
    n, d = x.shape
    fd = np.float32(d)
    for i in numba.prange(n):
        ss = ZERO
        for j in range(d):
            v = x[i, j]
            ss = fma32(v, v, ss)
        r = ONE / np.sqrt(ss / fd + eps)
        rstd[i] = r
        for j in range(d):
            y[i, j] = (x[i, j] * r) * w[j]


@kernel
def _rmsnorm_bwd_dx(dy, x, w, rstd, dx):
    n, d = x.shape
    fd = np.float32(d)
    for i in numba.prange(n):
        r = rstd[i]
        dot = ZERO
        for j in range(d):
            dot = fma32(dy[i, j] * w[j], x[i, j] * r, dot)
        c = dot / fd
        for j in range(d):
            xh = x[i, j] * r
            dx[i, j] = r * fma32(-xh, c, dy[i, j] * w[j])


@kernel
def _rmsnorm_bwd_dw(dy, x, rstd, dw):
    n, d = x.shape
    nblocks = (d + COL_BLOCK - 1) // COL_BLOCK
    for b in numba.prange(nblocks):
        lo = b * COL_BLOCK
        hi = min(lo + COL_BLOCK, d)
        for i in range(n):
            r = rstd[i]
            for j in range(lo, hi):
                dw[j] = fma32(dy[i, j], x[i, j] * r, dw[j])


def rmsnorm_fwd(x, w, eps: float) -> tuple[np.ndarray, np.ndarray]:
    x, w = _check_rmsnorm(x, w)
    y = np.empty_like(x)
    rstd = np.empty(x.shape[0], np.float32)
    _rmsnorm_fwd(x.size, x, w, _eps(eps), y, rstd)
    return y, rstd


def rmsnorm_bwd(dy, x, w, rstd, dw_acc) -> np.ndarray:
    dy, x, w, rstd = _check_rmsnorm_bwd(dy, x, w, rstd)
    _acc(dw_acc, "dw_acc", (x.shape[1],))
    dx = np.empty_like(x)
    _rmsnorm_bwd_dx(x.size, dy, x, w, rstd, dx)
    _rmsnorm_bwd_dw(x.size, dy, x, rstd, dw_acc)
    return dx


# ---------------------------------------------------------------------------------------------
# rotary position embedding


@kernel
def _rotate(x, c, s, y):
    nb, t, nh, dh = x.shape
    h = dh // 2
    for bt in numba.prange(nb * t):
        b = bt // t
        tt = bt - b * t
        for k in range(nh):
            for i in range(h):
                x1 = x[b, tt, k, i]
                x2 = x[b, tt, k, i + h]
                ci = c[tt, i]
                si = s[tt, i]
                y[b, tt, k, i] = fma32(x1, ci, -(x2 * si))
                y[b, tt, k, i + h] = fma32(x2, ci, x1 * si)


def rope_fwd(x, cos, sin) -> np.ndarray:  # noqa: A002
    x4, c, s, shape = _check_rope(x, cos, sin)
    y = np.empty_like(x4)
    _rotate(x4.size, x4, c, s, y)
    return y.reshape(shape)


def rope_bwd(dy, cos, sin) -> np.ndarray:  # noqa: A002
    d4, c, s, shape = _check_rope(dy, cos, sin, "dy")
    dx = np.empty_like(d4)
    _rotate(d4.size, d4, c, -s, dx)
    return dx.reshape(shape)


# ---------------------------------------------------------------------------------------------
# token embedding


@kernel
def _embedding_fwd(ids, table, y):
    for n in numba.prange(ids.shape[0]):
        r = ids[n]
        for j in range(table.shape[1]):
            y[n, j] = table[r, j]


@kernel
def _embedding_bwd(ids, dy, acc):
    d = acc.shape[1]
    nblocks = (d + COL_BLOCK - 1) // COL_BLOCK
    for b in numba.prange(nblocks):
        lo = b * COL_BLOCK
        hi = min(lo + COL_BLOCK, d)
        for n in range(ids.shape[0]):
            r = ids[n]
            for j in range(lo, hi):
                acc[r, j] = acc[r, j] + dy[n, j]


def embedding_fwd(ids, table) -> np.ndarray:
    table = _f32(table, "table", 2)
    ids = _check_ids(ids, table.shape[0])
    y = np.empty((ids.shape[0], table.shape[1]), np.float32)
    _embedding_fwd(y.size, ids, table, y)
    return y


def embedding_bwd(ids, dy, dtable_acc) -> None:
    ids, dy = _check_embedding_bwd(ids, dy, dtable_acc)
    _embedding_bwd(dy.size, ids, dy, dtable_acc)


# ---------------------------------------------------------------------------------------------
# SwiGLU (flat, elementwise)


@kernel
def _swiglu_fwd(g, u, h):
    for k in numba.prange(g.shape[0]):
        h[k] = silu32(g[k]) * u[k]


@kernel
def _swiglu_bwd(dh, g, u, dg, du):
    for k in numba.prange(g.shape[0]):
        gk = g[k]
        s = sigmoid32(gk)
        dsilu = s * fma32(gk, ONE - s, ONE)
        dg[k] = (dh[k] * u[k]) * dsilu
        du[k] = dh[k] * silu32(gk)


def swiglu_fwd(gate, up) -> np.ndarray:
    gate, up = _check_swiglu(gate, up)
    h = np.empty_like(gate)
    _swiglu_fwd(gate.size, gate.reshape(-1), up.reshape(-1), h.reshape(-1))
    return h


def swiglu_bwd(dh, gate, up) -> tuple[np.ndarray, np.ndarray]:
    gate, up = _check_swiglu(gate, up)
    dh = _f32(dh, "dh")
    _same_shape("dh", dh, gate)
    dgate = np.empty_like(gate)
    dup = np.empty_like(gate)
    _swiglu_bwd(gate.size, dh.reshape(-1), gate.reshape(-1), up.reshape(-1), dgate.reshape(-1), dup.reshape(-1))
    return dgate, dup
