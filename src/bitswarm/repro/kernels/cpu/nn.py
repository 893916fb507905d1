"""numba kernels for row reductions, softmax, log-softmax and cross-entropy (order: reference.nn)."""

from __future__ import annotations

import numba
import numpy as np

from bitswarm.repro.kernels.cpu.dispatch import kernel
from bitswarm.repro.fp import fma32
from bitswarm.repro.kernels.cpu.transcendental import exp32, log32
from bitswarm.repro.reference.nn import _check_targets, _rows

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
NAN = np.float32(np.nan)


@numba.njit(inline="always")
def _max(x, i):
    m = x[i, 0]
    nan = m != m
    for j in range(1, x.shape[1]):
        v = x[i, j]
        if v != v:
            nan = True
        if v > m:
            m = v
    return NAN if nan else m


# The exps and their sum run as two loops: the exp loop has no carried dependency, so LLVM
# vectorizes it (16 lanes, the same scalar operations in each); fused with the sequential sum
# it ran one element at a time (softmax of SmolLM2's attention rows: 6.5 ms -> 1.3 ms a call).
EXP_BLOCK = 512


@numba.njit(inline="always")
def _sumexp(x, i, m):
    """The sequential sum of exp(x[i, j] - m), the exps computed a block at a time."""
    n = x.shape[1]
    buf = np.empty(min(n, EXP_BLOCK), np.float32)
    s = ZERO
    for j0 in range(0, n, EXP_BLOCK):
        w = min(EXP_BLOCK, n - j0)
        for j in range(w):
            buf[j] = exp32(x[i, j0 + j] - m)
        for j in range(w):
            s = s + buf[j]
    return s


@numba.njit(inline="always")
def _exp_shifted(x, i, m, out):
    """out[i, j] = exp(x[i, j] - m); returns their sequential sum."""
    n = x.shape[1]
    for j in range(n):
        out[i, j] = exp32(x[i, j] - m)
    s = ZERO
    for j in range(n):
        s = s + out[i, j]
    return s


@kernel
def _row_sum(x, out):
    for i in numba.prange(x.shape[0]):
        s = ZERO
        for j in range(x.shape[1]):
            s = s + x[i, j]
        out[i] = s


@kernel
def _row_max(x, out):
    for i in numba.prange(x.shape[0]):
        out[i] = _max(x, i)


@kernel
def _softmax(x, out):
    for i in numba.prange(x.shape[0]):
        s = _exp_shifted(x, i, _max(x, i), out)
        for j in range(x.shape[1]):
            out[i, j] = out[i, j] / s


@kernel
def _log_softmax(x, out):
    for i in numba.prange(x.shape[0]):
        m = _max(x, i)
        ls = log32(_sumexp(x, i, m))
        for j in range(x.shape[1]):
            out[i, j] = (x[i, j] - m) - ls


@kernel
def _ce_fwd(x, t, out):
    for i in numba.prange(x.shape[0]):
        if t[i] < 0:
            out[i] = ZERO
            continue
        m = _max(x, i)
        out[i] = log32(_sumexp(x, i, m)) - (x[i, t[i]] - m)


@kernel
def _ce_bwd(x, t, g, out):
    for i in numba.prange(x.shape[0]):
        if t[i] < 0:
            for j in range(x.shape[1]):
                out[i, j] = ZERO
            continue
        s = _exp_shifted(x, i, _max(x, i), out)
        for j in range(x.shape[1]):
            p = out[i, j] / s
            if j == t[i]:
                p = p - ONE
            out[i, j] = p * g[i]


def row_sum(x):
    x = np.ascontiguousarray(_rows(x))
    out = np.empty(x.shape[0], np.float32)
    _row_sum(x.size, x, out)
    return out


def row_max(x):
    x = np.ascontiguousarray(_rows(x))
    if x.shape[1] == 0:
        raise ValueError("row_max of an empty row")
    out = np.empty(x.shape[0], np.float32)
    _row_max(x.size, x, out)
    return out


def row_mean(x):
    x = _rows(x)
    return row_sum(x) / np.float32(x.shape[1])


def softmax(x):
    x = np.ascontiguousarray(_rows(x))
    out = np.empty_like(x)
    _softmax(x.size, x, out)
    return out


def log_softmax(x):
    x = np.ascontiguousarray(_rows(x))
    out = np.empty_like(x)
    _log_softmax(x.size, x, out)
    return out


def cross_entropy_fwd(x, targets):
    x = np.ascontiguousarray(_rows(x))
    t = _check_targets(x, targets)
    out = np.empty(x.shape[0], np.float32)
    _ce_fwd(x.size, x, t, out)
    return out


def cross_entropy_bwd(x, targets, g):
    x = np.ascontiguousarray(_rows(x))
    t = _check_targets(x, targets)
    out = np.empty_like(x)
    _ce_bwd(x.size, x, t, np.ascontiguousarray(g, dtype=np.float32), out)
    return out


@kernel
def _row_dot(a, b, out):
    for i in numba.prange(a.shape[0]):
        r = ZERO
        for j in range(a.shape[1]):
            r = fma32(a[i, j], b[i, j], r)
        out[i] = r


def row_dot(a, b):
    a, b = np.ascontiguousarray(_rows(a)), np.ascontiguousarray(_rows(b))
    if a.shape != b.shape:
        raise ValueError(f"row_dot of shapes {a.shape} and {b.shape}")
    out = np.empty(a.shape[0], np.float32)
    _row_dot(a.size, a, b, out)
    return out
