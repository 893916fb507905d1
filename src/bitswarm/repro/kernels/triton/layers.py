"""triton kernels for RMSNorm, rotary embedding, token embedding and SwiGLU.

Bit-identical to `bitswarm.repro.reference.layers`, whose docstring is the spec (operation
order); the rules every kernel follows are in `runtime`. Parallel only across independent
outputs:

* RMSNorm: a program owns a block of rows (one row per lane); each row's sum of squares and
  backward dot product is a loop over the features in order. The weight gradient is a loop over
  the rows in order, one program per block of features, continuing from `dw_acc`.
* RoPE, SwiGLU, the embedding lookup: elementwise / copies, tiles of independent outputs.
* Embedding backward: the host sorts the token indices by id (stably: token order within an id),
  and one program per (distinct id, block of features) adds that id's rows of dy in token order
  onto the accumulator row held in registers. Every table row is read and written once, so no
  add depends on another program's store or on a store earlier in the same loop.

`rope_tables` and `rope_inv_freq` are the reference implementation itself (tiny tables; the
numba module does the same).
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.kernels.triton import runtime as rt  # noqa: I001 - before triton: sets the interpreter up
import triton
import triton.language as tl

from bitswarm.repro.kernels.triton.transcendental import rsqrt32, sigmoid32, silu32
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

# Block sizes change only the schedule, never the bits (no reduction crosses a block).
ROW_BLOCK = 32  # rows per program in per-row reductions: one warp, one row per lane
ROW_TILE = 32  # features per tile in the elementwise part of those programs (registers per lane)
COL_BLOCK = 128  # features per program in reductions over rows (and in the embedding)
ELEM_BLOCK = 1024  # elements per program in elementwise kernels
ROW_WARPS = 1  # per-row chains: one lane per row, so a wider program would only idle


def _pow2(n: int, cap: int) -> int:
    return max(1, min(cap, triton.next_power_of_2(max(1, n))))


# ---------------------------------------------------------------------------------------------
# RMSNorm


@triton.jit
def _rmsnorm_fwd_kernel(x, w, y, rstd, n, d, eps, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    base = rows * d
    ss = tl.zeros([BLOCK_N], tl.float32)
    for j in range(d):
        v = tl.load(x + base + j, mask=rmask, other=0.0)
        ss = tl.fma(v, v, ss)
    r = rsqrt32(tl.math.div_rn(ss, tl.cast(d, tl.float32)) + eps)
    tl.store(rstd + rows, r, mask=rmask)
    for j0 in range(0, d, BLOCK_D):
        cols = j0 + tl.arange(0, BLOCK_D)
        cmask = cols < d
        m = rmask[:, None] & cmask[None, :]
        off = base[:, None] + cols[None, :]
        xv = tl.load(x + off, mask=m, other=0.0)
        wv = tl.load(w + cols, mask=cmask, other=0.0)
        tl.store(y + off, (xv * r[:, None]) * wv[None, :], mask=m)


@triton.jit
def _rmsnorm_bwd_dx_kernel(dy, x, w, rstd, dx, n, d, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    base = rows * d
    r = tl.load(rstd + rows, mask=rmask, other=0.0)
    dot = tl.zeros([BLOCK_N], tl.float32)
    for j in range(d):
        wj = tl.load(w + j)
        g = tl.load(dy + base + j, mask=rmask, other=0.0)
        v = tl.load(x + base + j, mask=rmask, other=0.0)
        dot = tl.fma(g * wj, v * r, dot)
    c = tl.math.div_rn(dot, tl.cast(d, tl.float32))
    for j0 in range(0, d, BLOCK_D):
        cols = j0 + tl.arange(0, BLOCK_D)
        cmask = cols < d
        m = rmask[:, None] & cmask[None, :]
        off = base[:, None] + cols[None, :]
        xh = tl.load(x + off, mask=m, other=0.0) * r[:, None]
        dxh = tl.load(dy + off, mask=m, other=0.0) * tl.load(w + cols, mask=cmask, other=0.0)[None, :]
        tl.store(dx + off, r[:, None] * tl.fma(-xh, c[:, None], dxh), mask=m)


@triton.jit
def _rmsnorm_bwd_dw_kernel(dy, x, rstd, dw, n, d, BLOCK_D: tl.constexpr):
    cols = tl.program_id(0).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d
    acc = tl.load(dw + cols, mask=cmask, other=0.0)
    for i in range(n):
        off = tl.cast(i, tl.int64) * d + cols
        r = tl.load(rstd + i)
        g = tl.load(dy + off, mask=cmask, other=0.0)
        v = tl.load(x + off, mask=cmask, other=0.0)
        acc = tl.fma(g, v * r, acc)
    tl.store(dw + cols, acc, mask=cmask)


def _row_grid(n: int):
    return (triton.cdiv(n, ROW_BLOCK),)


def rmsnorm_fwd(x, w, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """y = x * rstd * w per row, and rstd (N,); see `reference.layers.rmsnorm_fwd`."""
    x, w = _check_rmsnorm(x, w)
    n, d = x.shape
    if n == 0:
        return np.empty_like(x), np.empty(0, np.float32)
    y = rt.empty((n, d))
    rstd = rt.empty((n,))
    # eps travels as a Python float holding the fp32 value exactly, and arrives as that fp32
    with np.errstate(all="ignore"):  # the interpreter's numpy would warn about inf and NaN
        _rmsnorm_fwd_kernel[_row_grid(n)](
            rt.to_device(x), rt.to_device(w), y, rstd, n, d, float(_eps(eps)),
            BLOCK_N=ROW_BLOCK, BLOCK_D=_pow2(d, ROW_TILE), num_warps=ROW_WARPS, **rt.LAUNCH,
        )
    return rt.to_host(y), rt.to_host(rstd)


def rmsnorm_bwd(dy, x, w, rstd, dw_acc) -> np.ndarray:
    """dx, and this batch's weight gradient added into dw_acc (D,) in place; see the reference."""
    dy, x, w, rstd = _check_rmsnorm_bwd(dy, x, w, rstd)
    n, d = x.shape
    _acc(dw_acc, "dw_acc", (d,))
    if n == 0:
        return np.empty_like(x)
    dy_t, x_t, rstd_t = rt.to_device(dy), rt.to_device(x), rt.to_device(rstd)
    dx = rt.empty((n, d))
    with np.errstate(all="ignore"):
        _rmsnorm_bwd_dx_kernel[_row_grid(n)](
            dy_t, x_t, rt.to_device(w), rstd_t, dx, n, d,
            BLOCK_N=ROW_BLOCK, BLOCK_D=_pow2(d, ROW_TILE), num_warps=ROW_WARPS, **rt.LAUNCH,
        )
    if d:
        dw = rt.in_place(dw_acc)
        with np.errstate(all="ignore"):
            _rmsnorm_bwd_dw_kernel[(triton.cdiv(d, COL_BLOCK),)](
                dy_t, x_t, rstd_t, dw, n, d, BLOCK_D=COL_BLOCK, **rt.LAUNCH
            )
        rt.write_back(dw_acc, dw)
    return rt.to_host(dx)


# ---------------------------------------------------------------------------------------------
# rotary position embedding


@triton.jit
def _rope_kernel(x, cos, sin, y, rows_total, t, nh, h, BWD: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)  # (b, t, head) rows
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m = (rows < rows_total)[:, None] & (cols < h)[None, :]
    tok = (rows // nh) % t
    off = rows[:, None] * (2 * h) + cols[None, :]
    toff = tok[:, None] * h + cols[None, :]
    x1 = tl.load(x + off, mask=m, other=0.0)
    x2 = tl.load(x + off + h, mask=m, other=0.0)
    c = tl.load(cos + toff, mask=m, other=0.0)
    s = tl.load(sin + toff, mask=m, other=0.0)
    if BWD:  # the transpose rotation: the same formula with -sin (negation is exact)
        s = -s
    tl.store(y + off, tl.fma(x1, c, -(x2 * s)), mask=m)
    tl.store(y + off + h, tl.fma(x2, c, x1 * s), mask=m)


def _rope(x4: np.ndarray, c: np.ndarray, s: np.ndarray, bwd: bool) -> np.ndarray:
    nb, t, nh, dh = x4.shape
    h = dh // 2
    rows = nb * t * nh
    if rows == 0 or h == 0:
        return np.empty_like(x4)
    y = rt.empty(x4.shape)
    bh = _pow2(h, 64)
    br = _pow2(rows, max(1, ELEM_BLOCK // bh))
    with np.errstate(all="ignore"):
        _rope_kernel[(triton.cdiv(rows, br), triton.cdiv(h, bh))](
            rt.to_device(x4), rt.to_device(c), rt.to_device(s), y, rows, t, nh, h,
            BWD=bwd, BLOCK_R=br, BLOCK_H=bh, **rt.LAUNCH,
        )
    return rt.to_host(y)


def rope_fwd(x, cos, sin) -> np.ndarray:  # noqa: A002 - names of the tables
    """Rotate x (T, H, Dh) or (B, T, H, Dh) by the tables (T, Dh/2); see the reference."""
    x4, c, s, shape = _check_rope(x, cos, sin)
    return _rope(x4, c, s, False).reshape(shape)


def rope_bwd(dy, cos, sin) -> np.ndarray:  # noqa: A002
    """Gradient of rope_fwd: the inverse (transpose) rotation of dy."""
    d4, c, s, shape = _check_rope(dy, cos, sin, "dy")
    return _rope(d4, c, s, True).reshape(shape)


# ---------------------------------------------------------------------------------------------
# token embedding


@triton.jit
def _embedding_fwd_kernel(ids, table, y, n, d, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < n
    m = rmask[:, None] & (cols < d)[None, :]
    src = tl.load(ids + rows, mask=rmask, other=0)
    v = tl.load(table + src[:, None] * d + cols[None, :], mask=m, other=0.0)
    tl.store(y + rows[:, None] * d + cols[None, :], v, mask=m)


@triton.jit
def _embedding_bwd_kernel(uniq, starts, order, dy, acc, d, BLOCK_D: tl.constexpr):
    u = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d
    row = acc + tl.load(uniq + u) * d + cols
    a = tl.load(row, mask=cmask, other=0.0)
    for k in range(tl.load(starts + u), tl.load(starts + u + 1)):
        tok = tl.load(order + k)  # the tokens of this id, in token order
        a = a + tl.load(dy + tok * d + cols, mask=cmask, other=0.0)
    tl.store(row, a, mask=cmask)


def embedding_fwd(ids, table) -> np.ndarray:
    """table[ids] as a new (N, D) array; ids (N,) integers in 0..V-1 (IndexError otherwise)."""
    table = _f32(table, "table", 2)
    ids = _check_ids(ids, table.shape[0])
    n, d = ids.shape[0], table.shape[1]
    if n == 0 or d == 0:
        return np.empty((n, d), np.float32)
    y = rt.empty((n, d))
    bd = _pow2(d, COL_BLOCK)
    bn = _pow2(n, max(1, ELEM_BLOCK // bd))
    _embedding_fwd_kernel[(triton.cdiv(n, bn), triton.cdiv(d, bd))](
        rt.to_device(ids, np.int64), rt.to_device(table), y, n, d, BLOCK_N=bn, BLOCK_D=bd, **rt.LAUNCH
    )
    return rt.to_host(y)


def embedding_bwd(ids, dy, dtable_acc) -> None:
    """dtable_acc[ids[n], :] += dy[n, :] for n in order, in place; see the reference."""
    ids, dy = _check_embedding_bwd(ids, dy, dtable_acc)
    n, d = dy.shape
    if n == 0 or d == 0:
        return
    # integer bookkeeping only: which tokens hit each row, in token order (stable sort)
    order = np.argsort(ids, kind="stable")
    uniq, first = np.unique(ids[order], return_index=True)
    starts = np.append(first, n)
    acc = rt.in_place(dtable_acc)
    with np.errstate(all="ignore"):
        _embedding_bwd_kernel[(uniq.shape[0], triton.cdiv(d, COL_BLOCK))](
            rt.to_device(uniq, np.int64), rt.to_device(starts, np.int64), rt.to_device(order, np.int64),
            rt.to_device(dy), acc, d, BLOCK_D=COL_BLOCK, **rt.LAUNCH,
        )
    rt.write_back(dtable_acc, acc)


# ---------------------------------------------------------------------------------------------
# SwiGLU (flat, elementwise)


@triton.jit
def _swiglu_fwd_kernel(g, u, h, n, BLOCK: tl.constexpr):
    k = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = k < n
    gk = tl.load(g + k, mask=m, other=0.0)
    tl.store(h + k, silu32(gk) * tl.load(u + k, mask=m, other=0.0), mask=m)


@triton.jit
def _swiglu_bwd_kernel(dh, g, u, dg, du, n, BLOCK: tl.constexpr):
    k = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = k < n
    gk = tl.load(g + k, mask=m, other=0.0)
    dhk = tl.load(dh + k, mask=m, other=0.0)
    s = sigmoid32(gk)
    dsilu = s * tl.fma(gk, 1.0 - s, 1.0)
    tl.store(dg + k, (dhk * tl.load(u + k, mask=m, other=0.0)) * dsilu, mask=m)
    tl.store(du + k, dhk * silu32(gk), mask=m)


def _flat_grid(n: int):
    return (triton.cdiv(n, ELEM_BLOCK),)


def swiglu_fwd(gate, up) -> np.ndarray:
    """h = silu(gate) * up, elementwise (any shape)."""
    gate, up = _check_swiglu(gate, up)
    if gate.size == 0:
        return np.empty_like(gate)
    h = rt.empty((gate.size,))
    with np.errstate(all="ignore"):
        _swiglu_fwd_kernel[_flat_grid(gate.size)](
            rt.to_device(gate), rt.to_device(up), h, gate.size, BLOCK=ELEM_BLOCK, **rt.LAUNCH
        )
    return rt.to_host(h).reshape(gate.shape)


def swiglu_bwd(dh, gate, up) -> tuple[np.ndarray, np.ndarray]:
    """(dgate, dup) for h = silu(gate) * up; see the reference."""
    gate, up = _check_swiglu(gate, up)
    dh = _f32(dh, "dh")
    _same_shape("dh", dh, gate)
    if gate.size == 0:
        return np.empty_like(gate), np.empty_like(gate)
    dg = rt.empty((gate.size,))
    du = rt.empty((gate.size,))
    with np.errstate(all="ignore"):
        _swiglu_bwd_kernel[_flat_grid(gate.size)](
            rt.to_device(dh), rt.to_device(gate), rt.to_device(up), dg, du, gate.size,
            BLOCK=ELEM_BLOCK, **rt.LAUNCH,
        )
    return rt.to_host(dg).reshape(gate.shape), rt.to_host(du).reshape(gate.shape)
