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

While generating, weights do not change, so `generate` hands `matmul` each weight as a
`PackedWT` (W packed once into contiguous 64-output panels, see there): decode steps and the
prompt's prefill read the panels, one contiguous stream per panel instead of strided gathers
(SmolLM2's 211 decode matmuls: ~24 GB/s, as fast as torch.mv, against ~11).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray

from bitswarm.repro.fp import fma32
from bitswarm.repro.kernels.cpu import matmul as _tiled
from bitswarm.repro.kernels.cpu.matmul import NR, _ptr, _tile_buffer, _tile_fma_of
from bitswarm.repro.kernels.cpu.dispatch import kernel

SMALL_M = 8
JB = 16
MP = 8  # rows of A in _rows_times_wt (zero-padded, so its row loop is one vector)
JW = 16  # outputs per block of _rows_times_wt: JW x MP accumulators in registers
JP = 64  # outputs per panel of a PackedWT: 4 AVX-512 vectors (at 32, LLVM unrolls the loop fully
#          and leaves it scalar)
PANEL_M = 256  # up to this many rows (a prompt's prefill) a PackedWT is read as panels; beyond,
#               the tiled kernel is faster (measured on SmolLM2's shapes, 2 threads)
RG = 4  # rows per pass over a panel in _rows_times_panels: RG x JP accumulators = 16 vectors
assert JP == NR  # whole RG x JP tiles run matmul's vector micro-kernel
_tile_fma_rg = _tile_fma_of(RG)


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


class PackedWT:
    """W.T (K, N) of a row-major weight W (N, K), read as panels when few rows meet it (decoding).

    `panels[q, k, jj] = W[q*JP + jj, k]` (zero past W's last row): per k, a panel's JP outputs
    take one broadcast of x[k] and JP/16 contiguous vector loads and fmas, and the panel is one
    contiguous stream. Reading W.T in place gathers one value from each of JB rows per k
    (`_bmm_rows`, 9-12 GB/s measured in SmolLM2's decode matmuls, against ~24 for the panels). Each output is
    still the one fma chain over k in increasing k from its initial value: the bits of
    `matmul(x, W.T)`.

    The panels are filled by the first few-row call (fused with it: each panel is packed and then
    read back from L2), so a prefill-only use never packs. They are a snapshot of W: the owner
    must drop the object before W can change (`Llama.decoding` keeps one per weight for a single
    `generate` call). `matmul`/`matmul_acc` take it as b; with more than PANEL_M rows it is `w.T`.
    """

    __slots__ = ("packed", "panels", "w")

    def __init__(self, w: np.ndarray):
        if not (isinstance(w, np.ndarray) and w.ndim == 2 and w.dtype == np.float32 and w.size):
            raise TypeError("PackedWT needs a non-empty 2-D float32 weight (out, in)")
        self.w = w
        self.panels = np.empty((-(-w.shape[0] // JP), w.shape[1], JP), np.float32)
        self.packed = False

    @property
    def shape(self) -> tuple[int, int]:
        return self.w.shape[1], self.w.shape[0]


@numba.njit(cache=True)
def _pack_panel(w, wp, q):
    """wp[q, k, jj] = w[q*JP + jj, k], zero past w's rows (k outer: contiguous writes, the JP
    rows' current cache lines stay in L1)."""
    n, kk = w.shape
    j0 = q * JP
    nj = min(JP, n - j0)
    for k in range(kk):
        for jj in range(nj):
            wp[q, k, jj] = w[j0 + jj, k]
        for jj in range(nj, JP):
            wp[q, k, jj] = 0


@numba.njit(cache=True)
def _row_panel(x, w, wp, c, pack, q):
    """c[j] for the JP outputs of panel q continue their chains over k of x[k] * w[j, k], read
    from the panel (packed first when `pack`), the JP accumulators in registers."""
    if pack:
        _pack_panel(w, wp, q)
    kk = wp.shape[1]
    j0 = q * JP
    nj = min(JP, c.shape[0] - j0)
    acc = carray(_tile_buffer(), (JP,))
    for jj in range(JP):
        acc[jj] = 0
    for jj in range(nj):
        acc[jj] = c[j0 + jj]
    p = _ptr(wp, q * kk * JP * 4)
    for k in range(kk):
        xv = x[k]
        for jj in range(JP):
            acc[jj] = fma32(xv, p[k * JP + jj], acc[jj])
    for jj in range(nj):
        c[j0 + jj] = acc[jj]


@numba.njit(cache=True)
def _rows_panel(ag, w, wp, c, pack, q):
    """c[i, j] for the JP outputs of panel q continue their chains over k of a[i, k] * w[j, k]
    (packed first when `pack`); a in groups of RG rows, ag[g, k, r] = a[g*RG + r, k]
    (zero-padded). Per k, each weight vector meets the RG broadcast rows of a group, RG x JP
    accumulators in registers; the panel comes from memory once, from L2 for the later groups."""
    if pack:
        _pack_panel(w, wp, q)
    kk = wp.shape[1]
    m, n = c.shape
    j0 = q * JP
    nj = min(JP, n - j0)
    p = _ptr(wp, q * kk * JP * 4)
    for g in range(ag.shape[0]):
        i0 = g * RG
        rows = min(RG, m - i0)
        if rows == RG and nj == JP:  # a whole tile: the vector micro-kernel, straight into c
            _tile_fma_rg(kk, _ptr(ag, g * kk * RG * 4), 1, RG, p, _ptr(c, (i0 * n + j0) * 4), n)
            continue
        acc = carray(_tile_buffer(), (RG, JP))
        for r in range(RG):
            for jj in range(JP):
                acc[r, jj] = 0
        for r in range(rows):
            for jj in range(nj):
                acc[r, jj] = c[i0 + r, j0 + jj]
        ap = _ptr(ag, g * kk * RG * 4)
        for k in range(kk):
            for r in range(RG):
                ar = ap[k * RG + r]
                for jj in range(JP):
                    acc[r, jj] = fma32(ar, p[k * JP + jj], acc[r, jj])
        for r in range(rows):
            for jj in range(nj):
                c[i0 + r, j0 + jj] = acc[r, jj]


@kernel
def _row_times_panels(x, w, wp, c, pack):
    """c (N,) continues with x (K,) @ W.T, one panel per task (`_row_panel`)."""
    for q in numba.prange(wp.shape[0]):
        _row_panel(x, w, wp, c, pack, q)


@kernel
def _rows_times_panels(ag, w, wp, c, pack):
    """c (M, N) continues with a @ W.T, a grouped as in `_rows_panel`, one panel per task."""
    for q in numba.prange(wp.shape[0]):
        _rows_panel(ag, w, wp, c, pack, q)


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


def _panel_rows(a, b: PackedWT, c) -> bool:
    """Whether a (M, K) @ b into c runs on b's panels (the inputs are copied, so any strides)."""
    w = b.w
    return (
        isinstance(a, np.ndarray) and isinstance(c, np.ndarray) and a.ndim == 2 and c.ndim == 2
        and a.dtype == np.float32 and c.dtype == np.float32
        and 0 < a.shape[0] <= PANEL_M and a.shape[1] == w.shape[1] and c.shape == (a.shape[0], w.shape[0])
        and c.flags.c_contiguous and c.flags.writeable
        and not (np.may_share_memory(c, a) or np.may_share_memory(c, w) or np.may_share_memory(c, b.panels))
    )


def _packed_acc(a, b: PackedWT, c):
    """c continues with a @ b for a packed b: on the panels up to PANEL_M rows, else w.T."""
    w = b.w
    if not _panel_rows(a, b, c):
        return matmul_acc(a, w.T, c)  # many rows, or inputs refused there (with the reason)
    m, kk = a.shape
    if m == 1:
        _row_times_panels(w.size, np.ascontiguousarray(a[0]), w, b.panels, c[0], not b.packed)
    else:
        ag = np.zeros((-(-m // RG) * RG, kk), np.float32)
        ag[:m] = a
        ag = np.ascontiguousarray(ag.reshape(-1, RG, kk).transpose(0, 2, 1))
        _rows_times_panels(w.size * m, ag, w, b.panels, c, not b.packed)
    b.packed = True
    return c


def matmul_acc(a, b, c):
    if isinstance(b, PackedWT):
        return _packed_acc(a, b, c)
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
    if isinstance(b, PackedWT):
        if isinstance(a, np.ndarray) and a.ndim == 2 and a.shape[1] == b.shape[0]:
            return _packed_acc(a, b, np.zeros((a.shape[0], b.shape[1]), np.float32))
        return matmul(a, b.w.T)  # refused there, with the reason
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim == 2 and b_arr.ndim == 2 and a_arr.shape[1] == b_arr.shape[0]:
        c = np.zeros((a_arr.shape[0], b_arr.shape[1]), np.float32)
        if _small(a_arr, b_arr, c):
            return matmul_acc(a_arr, b_arr, c)
    return _tiled.matmul(a, b)
