"""triton top-p sampling and greedy, choice-identical to `reference.sampling` (the spec).

Top-p runs in three kernels, rows never meeting:

1. rank: the position of every token in the spec's order (probability descending, id
   ascending) is the number of tokens before it, counted by comparisons of fp32 bit patterns
   (monotone for p >= 0; -0.0 counts as +0.0) with the id as tie-break. The ranks are a
   permutation, so scattering each token (and its probability) to its rank sorts the row
   exactly, whatever order the counts are summed in (they are integers). O(V^2) comparisons
   per row, all in parallel.
2. walk: the spec's sequential fp32 sum over the sorted probabilities, c[j] = c[j-1] + ps[j]
   from +0.0, for every j (a program owns a block of rows, one position per step). Continuing
   past the nucleus changes nothing before it: c[0..k-1] are the sums of steps 2 and 5.
3. select: with the c's stored, the rest of the spec is searches on them, done as integer
   min-reductions: k = 1 + the first j with c[j] >= top_p (else V); total = c[k-1]; target =
   u * total; the token at the first j < k with target < c[j], else at the first j with
   c[j] >= total (where c reached total, i.e. the last token at which c grew); token 0 when
   total == 0. Zero probabilities sort last and never change c, so they are never picked.

greedy is one sequential scan per row: `v > best` (strict, so the lowest id wins ties and
NaN, never greater, counts as -inf).
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.kernels.triton import runtime  # noqa: F401 - sets up the interpreter first
from bitswarm.repro.kernels.triton.runtime import LAUNCH, empty, to_device, to_host

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# validation shared with the reference and the numba kernels
from bitswarm.repro.reference.sampling import check_probs, check_rows, check_scores, check_top_p, check_u  # noqa: E402

__all__ = ["greedy", "sample_from_probs", "sample_rows"]

RANK_I, RANK_J = 64, 64  # tokens ranked per program x tokens compared per step
ROWS = 32  # rows per program of the walk and greedy scans: one warp, one row per lane
SEL_ROWS, SEL_COLS = 8, 128  # the select kernel's tiles


@triton.jit
def _rank_kernel(p_ptr, order_ptr, ps_ptr, n_tok, BI: tl.constexpr, BJ: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BI + tl.arange(0, BI)
    live_i = i < n_tok
    base = p_ptr + row * n_tok
    pi = tl.load(base + i, mask=live_i, other=0.0)
    ki = tl.where(pi > 0.0, pi.to(tl.int32, bitcast=True), 0)
    rank = tl.zeros([BI], tl.int32)
    for j0 in range(0, n_tok, BJ):
        j = j0 + tl.arange(0, BJ)
        pj = tl.load(base + j, mask=j < n_tok, other=0.0)
        kj = tl.where(pj > 0.0, pj.to(tl.int32, bitcast=True), 0)
        kj = tl.where(j < n_tok, kj, -1)  # past the end: before nothing
        before = (kj[None, :] > ki[:, None]) | ((kj[None, :] == ki[:, None]) & (j[None, :] < i[:, None]))
        rank += tl.sum(before.to(tl.int32), axis=1)
    tl.store(order_ptr + row * n_tok + rank, i, mask=live_i)
    tl.store(ps_ptr + row * n_tok + rank, pi, mask=live_i)


@triton.jit
def _walk_kernel(ps_ptr, c_ptr, n_rows, n_tok, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = rows < n_rows
    off = rows.to(tl.int64) * n_tok
    c = tl.zeros([ROWS], tl.float32)
    for j in range(n_tok):
        c = c + tl.load(ps_ptr + off + j, mask=live, other=0.0)
        tl.store(c_ptr + off + j, c, mask=live)


@triton.jit
def _select_kernel(c_ptr, order_ptr, top_ptr, u_ptr, out_ptr, n_rows, n_tok, TR: tl.constexpr, TC: tl.constexpr):
    rows = tl.program_id(0) * TR + tl.arange(0, TR)
    live = rows < n_rows
    off = rows.to(tl.int64) * n_tok
    top = tl.load(top_ptr + rows, mask=live, other=1.0)
    u = tl.load(u_ptr + rows, mask=live, other=0.0)
    # step 2: k - 1 = the first j with c[j] >= top_p, else the last token
    last = tl.zeros([TR], tl.int32) + (n_tok - 1)
    k1 = last
    for j0 in range(0, n_tok, TC):
        j = j0 + tl.arange(0, TC)
        m = live[:, None] & (j < n_tok)[None, :]
        c = tl.load(c_ptr + off[:, None] + j[None, :], mask=m, other=0.0)
        k1 = tl.minimum(k1, tl.min(tl.where(m & (c >= top[:, None]), j[None, :], n_tok - 1), axis=1))
    total = tl.load(c_ptr + off + k1, mask=live, other=0.0)
    target = u * total  # step 4
    # steps 5 and 6
    hit = tl.zeros([TR], tl.int32) + n_tok
    reached = k1
    for j0 in range(0, n_tok, TC):
        j = j0 + tl.arange(0, TC)
        m = live[:, None] & (j[None, :] <= k1[:, None])
        c = tl.load(c_ptr + off[:, None] + j[None, :], mask=m, other=0.0)
        hit = tl.minimum(hit, tl.min(tl.where(m & (target[:, None] < c), j[None, :], n_tok), axis=1))
        reached = tl.minimum(reached, tl.min(tl.where(m & (c >= total[:, None]), j[None, :], n_tok), axis=1))
    pos = tl.where(hit < n_tok, hit, reached)
    tok = tl.load(order_ptr + off + pos, mask=live, other=0)
    tok = tl.where(total == 0.0, 0, tok)  # step 3
    tl.store(out_ptr + rows, tok.to(tl.int64), mask=live)


@triton.jit
def _greedy_kernel(x_ptr, out_ptr, n_rows, n_tok, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = rows < n_rows
    base = x_ptr + rows.to(tl.int64) * n_tok
    best = tl.full([ROWS], float("-inf"), tl.float32)
    idx = tl.zeros([ROWS], tl.int32)
    for j in range(n_tok):
        v = tl.load(base + j, mask=live, other=0.0)
        better = v > best  # NaN never compares greater: it counts as -inf
        best = tl.where(better, v, best)
        idx = tl.where(better, j, idx)
    tl.store(out_ptr + rows, idx.to(tl.int64), mask=live)


def _sample(p, top, us) -> np.ndarray:
    """Tokens for checked probs (B, V), top_p (B,), us (B,), all float32 and contiguous."""
    n_rows, n_tok = p.shape
    pt = to_device(p)
    order, ps, c = empty(p.shape, np.int32), empty(p.shape), empty(p.shape)
    _rank_kernel[(n_rows, triton.cdiv(n_tok, RANK_I))](pt, order, ps, n_tok, BI=RANK_I, BJ=RANK_J, **LAUNCH)
    _walk_kernel[(triton.cdiv(n_rows, ROWS),)](ps, c, n_rows, n_tok, ROWS=ROWS, num_warps=1, **LAUNCH)
    out = empty((n_rows,), np.int64)
    _select_kernel[(triton.cdiv(n_rows, SEL_ROWS),)](c, order, to_device(top), to_device(us), out, n_rows, n_tok,
                                                     TR=SEL_ROWS, TC=SEL_COLS, **LAUNCH)
    return to_host(out)


def sample_from_probs(probs, top_p, u) -> int:
    """The token for one row: probs float32 (V,), top_p in (0, 1], u in [0, 1)."""
    p = check_probs(probs, 1)
    t = check_top_p(top_p)
    uu = check_u(u)
    return int(_sample(p.reshape(1, -1), t.reshape(1), uu.reshape(1))[0])


def sample_rows(probs, top_p, us) -> np.ndarray:
    """One token per row: probs float32 (B, V), top_p scalar or (B,), us (B,) -> int64 (B,)."""
    p, t, u = check_rows(probs, top_p, us)
    if p.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    return _sample(p, t, u)


def greedy(x):
    """argmax over the last axis, ties to the lowest id, NaN as -inf: int for (V,), int64 (B,)."""
    a = check_scores(x)
    a2 = a.reshape(-1, a.shape[-1])
    n_rows, n_tok = a2.shape
    if n_rows == 0:
        return np.empty(0, dtype=np.int64)
    out = empty((n_rows,), np.int64)
    _greedy_kernel[(triton.cdiv(n_rows, ROWS),)](to_device(a2), out, n_rows, n_tok, ROWS=ROWS, num_warps=1,
                                                 **LAUNCH)
    got = to_host(out)
    return int(got[0]) if a.ndim == 1 else got
