"""Matmul, the executable spec.

Order: every output element is ONE sequential fma chain over k in increasing k, starting from
the output's initial value (+0.0 for `matmul` / `bmm`)::

    acc = C[i, j]
    for k in 0 .. K-1:
        acc = fma(A[i, k], B[k, j], acc)      # correctly rounded fp32 fma
    C[i, j] = acc

No other summation order, no pairwise or blocked sums, no fp64 accumulator. Because every step
is rounded to fp32 and stored, a chain may be stopped after any k and continued later from the
stored value: `matmul_acc` over k in [0, K1) and then over [K1, K) into the same C gives the
same bits as one call over [0, K). Gradient accumulation over micro-batches relies on this.
IEEE semantics throughout: subnormals kept, inf and NaN propagate as in the chain above.

Here the chain runs vectorized over all (i, j) with a Python loop over k, using `fp.fma_ref`.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.fp import fma_ref

__all__ = ["matmul", "matmul_acc", "bmm", "bmm_acc"]


def _check(a, b, c, ndim: int) -> None:
    for name, x in (("a", a), ("b", b), ("c", c)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise TypeError(f"repro matmul works on float32, {name} is {x.dtype}")
        if x.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    *ba, m, k = a.shape
    *bb, k2, n = b.shape
    *bc, mc, nc = c.shape
    if k != k2 or (m, n) != (mc, nc) or ba != bb or ba != bc:
        raise ValueError(f"shape mismatch: a {a.shape} @ b {b.shape} into c {c.shape}")


def matmul_acc(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """For every (i, j): for k = 0..K-1 in order, c[i, j] = fma(a[i, k], b[k, j], c[i, j]).

    a (M, K), b (K, N), c (M, N), all float32; c is updated in place and returned.
    """
    _check(a, b, c, 2)
    acc = c.copy()
    for k in range(a.shape[1]):
        acc = fma_ref(a[:, k, None], b[None, k, :], acc)
    c[...] = acc
    return c


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b: `matmul_acc` into a fresh output of +0.0."""
    c = np.zeros((np.shape(a)[0], np.shape(b)[-1]), np.float32)
    return matmul_acc(a, b, c)


def bmm_acc(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Batched `matmul_acc`: for every p, c[p] continues its chains with a[p] @ b[p].

    a (B, M, K), b (B, K, N), c (B, M, N), all float32; c is updated in place and returned.
    """
    _check(a, b, c, 3)
    acc = c.copy()
    for k in range(a.shape[2]):
        acc = fma_ref(a[:, :, k, None], b[:, None, k, :], acc)
    c[...] = acc
    return c


def bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched a @ b: `bmm_acc` into a fresh output of +0.0."""
    a_shape, b_shape = np.shape(a), np.shape(b)
    if len(a_shape) != 3 or len(b_shape) != 3:
        raise ValueError(f"bmm takes 3-D arrays, got {a_shape} and {b_shape}")
    c = np.zeros((a_shape[0], a_shape[1], b_shape[2]), np.float32)
    return bmm_acc(a, b, c)
