"""Row reductions, softmax, log-softmax, cross-entropy and row_dot in triton (order: reference.nn).

Every reduction runs along a row in the reference's order, a sequential left-to-right chain
(`for j in range(n_cols)`); a program owns ROWS rows as a vector, so rows run in parallel and
never meet. The elementwise steps around the chains (exp(x - m), the division by the sum, the
log-softmax and cross-entropy epilogues) have no order to keep and run as 2-D tiles in separate
kernels: a kernel boundary is what makes one step's stores visible to the next step's loads.
softmax is row_max, then e = exp(x - m) stored, then s = row_sum(e), then e / s: the same
operations, on the same values, as the reference.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.kernels.triton import runtime  # noqa: F401 - sets up the interpreter first
from bitswarm.repro.kernels.triton.runtime import LAUNCH, empty, to_device, to_host

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from bitswarm.repro.kernels.triton.transcendental import exp32, log32  # noqa: E402
from bitswarm.repro.reference.nn import _check_targets, _rows  # noqa: E402

__all__ = [
    "cross_entropy_bwd",
    "cross_entropy_fwd",
    "log_softmax",
    "row_dot",
    "row_max",
    "row_mean",
    "row_sum",
    "softmax",
]

ROWS = 32  # rows per program of a chain kernel: one warp, one row per lane
CHAIN_WARPS = 1
TILE_R, TILE_C = 16, 128  # the elementwise tiles
QNAN = tl.constexpr(0x7FC00000)


# ---- the chains: a block of rows, one column per step -------------------------------------------


@triton.jit
def _row_sum_kernel(x_ptr, out_ptr, n_rows, n_cols, n_f, MEAN: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = rows < n_rows
    base = x_ptr + rows.to(tl.int64) * n_cols
    s = tl.zeros([ROWS], tl.float32)  # +0.0
    for j in range(n_cols):
        s = s + tl.load(base + j, mask=live, other=0.0)
    if MEAN:
        s = tl.math.div_rn(s, n_f)
    tl.store(out_ptr + rows, s, mask=live)


@triton.jit
def _row_max_kernel(x_ptr, out_ptr, n_rows, n_cols, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = rows < n_rows
    base = x_ptr + rows.to(tl.int64) * n_cols
    m = tl.load(base, mask=live, other=0.0)
    nan = m != m
    for j in range(1, n_cols):
        v = tl.load(base + j, mask=live, other=0.0)
        nan = nan | (v != v)
        m = tl.where(v > m, v, m)  # strict: among equal values (-0.0 == +0.0) the first stays
    m = tl.where(nan, tl.full([ROWS], QNAN, tl.int32).to(tl.float32, bitcast=True), m)
    tl.store(out_ptr + rows, m, mask=live)


@triton.jit
def _row_dot_kernel(a_ptr, b_ptr, out_ptr, n_rows, n_cols, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = rows < n_rows
    off = rows.to(tl.int64) * n_cols
    r = tl.zeros([ROWS], tl.float32)
    for j in range(n_cols):
        a = tl.load(a_ptr + off + j, mask=live, other=0.0)
        b = tl.load(b_ptr + off + j, mask=live, other=0.0)
        r = tl.fma(a, b, r)
    tl.store(out_ptr + rows, r, mask=live)


# ---- the elementwise tiles ----------------------------------------------------------------------


@triton.jit
def _tile(n_rows, n_cols, TR: tl.constexpr, TC: tl.constexpr):
    rows = tl.program_id(0) * TR + tl.arange(0, TR)
    cols = tl.program_id(1) * TC + tl.arange(0, TC)
    live = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    return rows, cols, live, offs


@triton.jit
def _exp_shifted_kernel(x_ptr, m_ptr, e_ptr, n_rows, n_cols, TR: tl.constexpr, TC: tl.constexpr):
    """e = exp(x - m[row])."""
    rows, cols, live, offs = _tile(n_rows, n_cols, TR, TC)
    m = tl.load(m_ptr + rows, mask=rows < n_rows, other=0.0)
    x = tl.load(x_ptr + offs, mask=live, other=0.0)
    tl.store(e_ptr + offs, exp32(x - m[:, None]), mask=live)


@triton.jit
def _divide_kernel(e_ptr, s_ptr, out_ptr, n_rows, n_cols, TR: tl.constexpr, TC: tl.constexpr):
    """softmax: out = e / s[row]."""
    rows, cols, live, offs = _tile(n_rows, n_cols, TR, TC)
    s = tl.load(s_ptr + rows, mask=rows < n_rows, other=1.0)
    e = tl.load(e_ptr + offs, mask=live, other=0.0)
    tl.store(out_ptr + offs, tl.math.div_rn(e, s[:, None]), mask=live)


@triton.jit
def _log_softmax_kernel(x_ptr, m_ptr, s_ptr, out_ptr, n_rows, n_cols, TR: tl.constexpr, TC: tl.constexpr):
    """out = (x - m[row]) - log(s[row])."""
    rows, cols, live, offs = _tile(n_rows, n_cols, TR, TC)
    m = tl.load(m_ptr + rows, mask=rows < n_rows, other=0.0)
    ls = log32(tl.load(s_ptr + rows, mask=rows < n_rows, other=1.0))
    x = tl.load(x_ptr + offs, mask=live, other=0.0)
    tl.store(out_ptr + offs, (x - m[:, None]) - ls[:, None], mask=live)


@triton.jit
def _ce_fwd_kernel(x_ptr, t_ptr, m_ptr, s_ptr, out_ptr, n_rows, n_cols, ROWS: tl.constexpr):
    """loss = log(s) - (x[t] - m), +0.0 where t < 0."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = rows < n_rows
    t = tl.load(t_ptr + rows, mask=live, other=-1)
    keep = t >= 0
    picked = tl.load(x_ptr + rows.to(tl.int64) * n_cols + tl.where(keep, t, 0), mask=live & keep, other=0.0)
    m = tl.load(m_ptr + rows, mask=live, other=0.0)
    s = tl.load(s_ptr + rows, mask=live, other=1.0)
    loss = log32(s) - (picked - m)
    tl.store(out_ptr + rows, tl.where(keep, loss, 0.0), mask=live)


@triton.jit
def _ce_bwd_kernel(e_ptr, t_ptr, s_ptr, g_ptr, out_ptr, n_rows, n_cols, TR: tl.constexpr, TC: tl.constexpr):
    """dx = ((e / s) - [col == t]) * g, +0.0 for rows with t < 0."""
    rows, cols, live, offs = _tile(n_rows, n_cols, TR, TC)
    rlive = rows < n_rows
    t = tl.load(t_ptr + rows, mask=rlive, other=-1)
    s = tl.load(s_ptr + rows, mask=rlive, other=1.0)
    g = tl.load(g_ptr + rows, mask=rlive, other=0.0)
    p = tl.math.div_rn(tl.load(e_ptr + offs, mask=live, other=0.0), s[:, None])
    p = tl.where(cols[None, :].to(tl.int64) == t[:, None], p - 1.0, p)
    dx = tl.where((t >= 0)[:, None], p * g[:, None], 0.0)
    tl.store(out_ptr + offs, dx, mask=live)


# ---- host side ------------------------------------------------------------------------------------


def _chain_grid(n_rows):
    return (triton.cdiv(n_rows, ROWS),)


def _tile_grid(n_rows, n_cols):
    return (triton.cdiv(n_rows, TILE_R), triton.cdiv(n_cols, TILE_C))


def _max_dev(xt, n_rows, n_cols):
    m = empty((n_rows,))
    _row_max_kernel[_chain_grid(n_rows)](xt, m, n_rows, n_cols, ROWS=ROWS, num_warps=CHAIN_WARPS, **LAUNCH)
    return m


def _sum_dev(xt, n_rows, n_cols, mean=False):
    s = empty((n_rows,))
    _row_sum_kernel[_chain_grid(n_rows)](xt, s, n_rows, n_cols, float(np.float32(n_cols)), MEAN=mean,
                                         ROWS=ROWS, num_warps=CHAIN_WARPS, **LAUNCH)
    return s


def _softmax_parts(x):
    """(x, m, e, s) on the device: the row max, exp(x - m) and its sequential row sum."""
    n_rows, n_cols = x.shape
    xt = to_device(x)
    m = _max_dev(xt, n_rows, n_cols)
    e = empty(x.shape)
    _exp_shifted_kernel[_tile_grid(n_rows, n_cols)](xt, m, e, n_rows, n_cols, TR=TILE_R, TC=TILE_C, **LAUNCH)
    return xt, m, e, _sum_dev(e, n_rows, n_cols)


def _checked(x, need_cols=False):
    x = np.ascontiguousarray(_rows(x))
    if need_cols and x.shape[1] == 0:  # the reference's row_max refuses an empty row
        raise ValueError("row_max of an empty row")
    return x


def row_sum(x):
    x = _checked(x)
    if x.shape[0] == 0:
        return np.empty(0, np.float32)
    return to_host(_sum_dev(to_device(x), *x.shape))


def row_max(x):
    x = _checked(x, need_cols=True)
    if x.shape[0] == 0:
        return np.empty(0, np.float32)
    return to_host(_max_dev(to_device(x), *x.shape))


def row_mean(x):
    x = _checked(x)
    if x.shape[0] == 0:
        return np.empty(0, np.float32)
    return to_host(_sum_dev(to_device(x), *x.shape, mean=True))


def softmax(x):
    x = _checked(x, need_cols=True)
    if x.size == 0:
        return np.empty_like(x)
    n_rows, n_cols = x.shape
    _, _, e, s = _softmax_parts(x)
    _divide_kernel[_tile_grid(n_rows, n_cols)](e, s, e, n_rows, n_cols, TR=TILE_R, TC=TILE_C, **LAUNCH)
    return to_host(e)


def log_softmax(x):
    x = _checked(x, need_cols=True)
    if x.size == 0:
        return np.empty_like(x)
    n_rows, n_cols = x.shape
    xt, m, e, s = _softmax_parts(x)
    _log_softmax_kernel[_tile_grid(n_rows, n_cols)](xt, m, s, e, n_rows, n_cols, TR=TILE_R, TC=TILE_C,
                                                    **LAUNCH)
    return to_host(e)


def cross_entropy_fwd(x, targets):
    x = _checked(x)
    t = _check_targets(x, targets)
    _checked(x, need_cols=True)
    n_rows, n_cols = x.shape
    if n_rows == 0:
        return np.empty(0, np.float32)
    xt, m, _, s = _softmax_parts(x)
    out = empty((n_rows,))
    _ce_fwd_kernel[_chain_grid(n_rows)](xt, to_device(t, np.int64), m, s, out, n_rows, n_cols, ROWS=ROWS,
                                        num_warps=CHAIN_WARPS, **LAUNCH)
    return to_host(out)


def cross_entropy_bwd(x, targets, g):
    x = _checked(x)
    t = _check_targets(x, targets)
    _checked(x, need_cols=True)
    g = np.ascontiguousarray(g, dtype=np.float32)
    if g.shape != (x.shape[0],):  # the kernel reads g[row]: refuse what would read past it
        raise ValueError(f"g must have shape ({x.shape[0]},), got {g.shape}")
    if x.size == 0:
        return np.empty_like(x)
    n_rows, n_cols = x.shape
    _, _, e, s = _softmax_parts(x)
    _ce_bwd_kernel[_tile_grid(n_rows, n_cols)](e, to_device(t, np.int64), s, to_device(g), e, n_rows, n_cols,
                                               TR=TILE_R, TC=TILE_C, **LAUNCH)
    return to_host(e)


def row_dot(a, b):
    """r = +0.0; for j: r = fma(a[j], b[j], r), per row."""
    a, b = np.ascontiguousarray(_rows(a)), np.ascontiguousarray(_rows(b))
    if a.shape != b.shape:
        raise ValueError(f"row_dot of shapes {a.shape} and {b.shape}")
    n_rows, n_cols = a.shape
    if n_rows == 0:
        return np.empty(0, np.float32)
    out = empty((n_rows,))
    _row_dot_kernel[_chain_grid(n_rows)](to_device(a), to_device(b), out, n_rows, n_cols, ROWS=ROWS,
                                         num_warps=CHAIN_WARPS, **LAUNCH)
    return to_host(out)
