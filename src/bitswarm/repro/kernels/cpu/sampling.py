"""numba top-p sampling and greedy, choice-identical to `reference.sampling` (the spec).

The order of step 1 of the spec (probability descending, id ascending) is built from unique
uint64 keys, so any sort algorithm gives the same order: for a probability p > 0 (finite,
<= 1) the fp32 bit pattern is monotone in p, and

    key = (0xffffffff - bits(p)) << 32 | id

sorts ascending exactly as (p descending, id ascending). Zero probabilities (+0.0 and -0.0)
are left out: they come last in the spec's order and never change c, so the spec never
returns them (the all-zero row returns token 0 in both). The walks are the spec's sequential
fp32 sums, one row per prange iteration; nothing crosses rows, so the result does not depend
on the batch or the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from bitswarm.repro.reference.sampling import check_probs, check_rows, check_scores, check_top_p, check_u

_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


@njit(cache=True)
def _sample_row_nb(p, pbits, top_p, u):
    v = p.shape[0]
    keys = np.empty(v, dtype=np.uint64)
    n = 0
    for i in range(v):
        if p[i] > np.float32(0.0):
            keys[n] = ((_MASK - np.uint64(pbits[i])) << _SHIFT) | np.uint64(i)
            n += 1
    if n == 0:
        return 0
    order = np.sort(keys[:n])
    # step 2: keep tokens until the sequential fp32 sum reaches top_p
    cum = np.float32(0.0)
    k = n
    for j in range(n):
        cum = cum + p[np.int64(order[j] & _MASK)]
        if cum >= top_p:
            k = j + 1
            break
    total = cum
    target = u * total  # step 4: one fp32 multiply
    # steps 5-6
    c = np.float32(0.0)
    last = np.int64(order[0] & _MASK)
    for j in range(k):
        tok = np.int64(order[j] & _MASK)
        c_new = c + p[tok]
        if target < c_new:
            return tok
        if c_new > c:
            last = tok
        c = c_new
    return last


@njit(cache=True, parallel=True)
def _sample_rows_nb(p, pbits, top_p, us, out):
    for b in prange(p.shape[0]):
        out[b] = _sample_row_nb(p[b], pbits[b], top_p[b], us[b])


@njit(cache=True, parallel=True)
def _greedy_nb(x, out):
    for b in prange(x.shape[0]):
        best = -np.inf
        idx = 0
        for i in range(x.shape[1]):
            if x[b, i] > best:  # NaN never compares greater: it counts as -inf
                best = x[b, i]
                idx = i
        out[b] = idx


def sample_from_probs(probs, top_p, u) -> int:
    """The token for one row: probs float32 (V,), top_p in (0, 1], u in [0, 1)."""
    p = check_probs(probs, 1)
    t = check_top_p(top_p)
    uu = check_u(u)
    return int(_sample_row_nb(p, p.view(np.uint32), t[()], uu[()]))


def sample_rows(probs, top_p, us) -> np.ndarray:
    """One token per row: probs float32 (B, V), top_p scalar or (B,), us (B,) -> int64 (B,)."""
    p, t, u = check_rows(probs, top_p, us)
    out = np.empty(p.shape[0], dtype=np.int64)
    if p.shape[0]:
        _sample_rows_nb(p, p.view(np.uint32), t, u, out)
    return out


def greedy(x):
    """argmax over the last axis, ties to the lowest id, NaN as -inf: int for (V,), int64 (B,)."""
    a = check_scores(x)
    a2 = a.reshape(-1, a.shape[-1])
    out = np.empty(a2.shape[0], dtype=np.int64)
    if a2.shape[0]:
        _greedy_nb(a2, out)
    return int(out[0]) if a.ndim == 1 else out
