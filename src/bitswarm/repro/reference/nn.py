"""Row reductions, softmax, log-softmax and cross-entropy: the spec (numpy).

Every function reduces along the LAST axis of a 2-D float32 array, one row at a time; rows never
influence each other (batch invariance). Orders, per row x[0..V-1]:

- row_sum:  s = +0.0; for j in 0..V-1: s = s + x[j]
- row_max:  m = x[0]; for j in 1..V-1: if x[j] > m: m = x[j]; any NaN in the row gives NaN
- row_mean: row_sum(x) / float32(V)
- softmax:  m = row_max; e[j] = exp(x[j] - m); s = row_sum(e); y[j] = e[j] / s
- log_softmax: m = row_max; s = row_sum(exp(x - m)); y[j] = (x[j] - m) - log(s)
- cross_entropy_fwd (targets t, t < 0 = ignored): loss = log(s) - (x[t] - m), 0 where ignored
- cross_entropy_bwd: dx[j] = (softmax[j] - (1 if j == t else 0)) * g, and 0 for ignored rows
exp and log are repro's own (reference.transcendental); every other op is one correctly
rounded fp32 operation.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.reference.transcendental import exp, log

F32 = np.float32


def _rows(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.float32 or arr.ndim != 2:
        raise TypeError(f"expected a 2-D float32 array, got {arr.dtype} with shape {arr.shape}")
    return arr


def row_sum(x) -> np.ndarray:
    x = _rows(x)
    s = np.zeros(x.shape[0], np.float32)
    for j in range(x.shape[1]):
        s = s + x[:, j]
    return s


def row_max(x) -> np.ndarray:
    x = _rows(x)
    if x.shape[1] == 0:
        raise ValueError("row_max of an empty row")
    m = x[:, 0].copy()
    for j in range(1, x.shape[1]):
        m = np.where(x[:, j] > m, x[:, j], m)
    return np.where(np.isnan(x).any(axis=1), np.float32(np.nan), m).astype(np.float32)


def row_mean(x) -> np.ndarray:
    x = _rows(x)
    return row_sum(x) / np.float32(x.shape[1])


def softmax(x) -> np.ndarray:
    x = _rows(x)
    m = row_max(x)
    with np.errstate(invalid="ignore"):
        e = exp(x - m[:, None])
    return e / row_sum(e)[:, None]


def log_softmax(x) -> np.ndarray:
    x = _rows(x)
    m = row_max(x)
    with np.errstate(invalid="ignore"):
        shifted = x - m[:, None]
        return shifted - log(row_sum(exp(shifted)))[:, None]


def _check_targets(x, targets) -> np.ndarray:
    t = np.asarray(targets)
    if t.dtype != np.int64 or t.shape != (x.shape[0],):
        raise TypeError(f"targets must be int64 of shape ({x.shape[0]},), got {t.dtype} {t.shape}")
    if np.any(t >= x.shape[1]):
        raise ValueError(f"target id {int(t.max())} is outside the vocabulary of {x.shape[1]}")
    return t


def cross_entropy_fwd(x, targets) -> np.ndarray:
    """Per-row loss -log softmax(x)[t]; rows with t < 0 are ignored (loss 0)."""
    x = _rows(x)
    t = _check_targets(x, targets)
    m = row_max(x)
    with np.errstate(invalid="ignore"):
        s = row_sum(exp(x - m[:, None]))
        picked = x[np.arange(x.shape[0]), np.maximum(t, 0)]
        loss = log(s) - (picked - m)
    return np.where(t < 0, np.float32(0), loss).astype(np.float32)


def cross_entropy_bwd(x, targets, g) -> np.ndarray:
    """d loss_row / d x, times the per-row upstream gradient g (float32, shape (N,))."""
    x = _rows(x)
    t = _check_targets(x, targets)
    g = np.asarray(g, np.float32)
    p = softmax(x)
    rows = np.arange(x.shape[0])
    keep = t >= 0
    p[rows[keep], t[keep]] = p[rows[keep], t[keep]] - np.float32(1)
    dx = p * g[:, None]
    dx[~keep] = 0
    return dx


def row_dot(a, b) -> np.ndarray:
    """r = +0.0; for j in 0..V-1: r = fma(a[j], b[j], r), per row."""
    from bitswarm.repro.fp import fma_ref

    a, b = _rows(a), _rows(b)
    r = np.zeros(a.shape[0], np.float32)
    for j in range(a.shape[1]):
        r = fma_ref(a[:, j], b[:, j], r)
    return r
