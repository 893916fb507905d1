"""Matmul on the CPU (numba), bit-identical to `bitswarm.repro.reference.matmul`.

The order (the spec): every output element is ONE sequential fma chain over k in increasing k,
starting from the output's initial value::

    acc = C[i, j]
    for k in 0 .. K-1:
        acc = fma(A[i, k], B[k, j], acc)
    C[i, j] = acc

How it is made fast without changing that order (BLIS-style blocking):

* A is packed into micro-panels of MR rows (``ap[p, k, r] = A[p*MR + r, k]``) and B into
  micro-panels of NR columns (``bp[q, k, j] = B[k, q*NR + j]``), zero-padded at the edges.
  Packing also turns any strided or transposed view into unit-stride streams.
* The micro-kernel holds an MR x NR tile of C in registers (a stack array whose indices are all
  compile-time constants after unrolling, so LLVM keeps it in vector registers) and runs the
  fma chains of all MR*NR outputs side by side over a chunk of k. Each output still sees its
  own k in increasing order; the tile is stored between k chunks, which is exact in fp32, and
  the chunks are visited in increasing k. Padded rows/columns compute on zeros and are never
  stored.
* Threads (numba ``prange``) only split the output into independent blocks; k is never split.
  So the result does not depend on the thread count, the block sizes or the tile sizes.

fma is only ever `bitswarm.repro.fp.fma32` (llvm.fma.f32); no fastmath, so LLVM may vectorize
the chains across outputs but cannot contract, reassociate or flush subnormals.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from bitswarm.repro.fp import fma32

__all__ = ["matmul", "matmul_acc", "bmm", "bmm_acc"]

MR = 6  # rows of the register tile
NR = 64  # columns of the register tile (4 AVX-512 / 8 AVX2 vectors)
KC = 1024  # k per pass over a C tile: the B micro-panel (KC*NR*4 = 256 KiB) stays in L2
MC = 1024  # at most this many rows of C per task (a task packs its B columns once)
NC = 256  # at most this many columns of C per task (multiple of NR)
SERIAL_WORK = 1 << 24  # below this many fma (M*N*K) one thread: waking others costs more (much more on a busy machine)

_JIT = dict(nogil=True, error_model="numpy", boundscheck=False, cache=True)


@intrinsic
def _tile_buffer(typingctx):
    """A pointer to MR*NR float32 on the stack (alloca in the entry block, 64-byte aligned)."""
    sig = types.CPointer(types.float32)()

    def codegen(context, builder, signature, args):
        ptr = cgutils.alloca_once(builder, ir.ArrayType(ir.FloatType(), MR * NR))
        ptr.align = 64
        zero = ir.Constant(ir.IntType(32), 0)
        return builder.gep(ptr, [zero, zero], inbounds=True)

    return sig, codegen


@njit(inline="never", **_JIT)
def _micro_kernel(kc, av, bp, c, ci, cj):
    """c[ci:ci+MR, cj:cj+NR] continues its fma chains over kc >= 1 more k (av (MR, kc), bp (kc, NR)).

    The first and the last k step read from / write to c directly (same loop shape as the
    middle steps, so all three vectorize alike); the middle steps run in registers.
    """
    acc = carray(_tile_buffer(), (MR, NR))
    for r in range(MR):  # k = 0, starting from c
        row = c[ci + r, cj : cj + NR]  # unit stride, indexed from 0: plain vector loads
        a = av[r, 0]
        for j in range(NR):
            acc[r, j] = fma32(a, bp[0, j], row[j])
    for k in range(1, kc - 1):
        for r in range(MR):
            a = av[r, k]
            for j in range(NR):
                acc[r, j] = fma32(a, bp[k, j], acc[r, j])
    if kc > 1:  # the last k, into c
        k = kc - 1
        for r in range(MR):
            row = c[ci + r, cj : cj + NR]
            a = av[r, k]
            for j in range(NR):
                row[j] = fma32(a, bp[k, j], acc[r, j])
    else:
        for r in range(MR):
            row = c[ci + r, cj : cj + NR]
            for j in range(NR):
                row[j] = acc[r, j]


@njit(**_JIT)
def _pack_b_block(b, bi, j_lo, j_hi, bp):
    """Columns [j_lo, j_hi) of b[bi] (K, N) into bp: bp[(q*K + k)*NR + j] = b[bi, k, j_lo + q*NR + j]."""
    kk = b.shape[1]
    nq = (j_hi - j_lo + NR - 1) // NR
    by_rows = abs(b.strides[2]) <= abs(b.strides[1])
    for q in range(nq):
        j0 = j_lo + q * NR
        cols = min(NR, j_hi - j0)
        base = q * kk * NR
        if cols < NR:
            for k in range(kk):
                for j in range(cols, NR):
                    bp[base + k * NR + j] = 0.0
        if by_rows:  # rows of b are contiguous-ish: read along j
            for k in range(kk):
                src = b[bi, k, j0 : j0 + cols]
                d = base + k * NR
                for j in range(cols):
                    bp[d + j] = src[j]
        else:  # b is a transposed view (x @ W.T): read along k
            for j in range(cols):
                src = b[bi, :, j0 + j]
                for k in range(kk):
                    bp[base + k * NR + j] = src[k]


@njit(**_JIT)
def _task(a, b, c, t, mc, nc, bp, apad, tile):
    """Output block t of c (B, M, N): rows/cols of one batch entry, all k, in increasing k."""
    nb, m, n = c.shape
    kk = b.shape[1]
    nmb = (m + mc - 1) // mc
    nnb = (n + nc - 1) // nc
    per_batch = nmb * nnb
    bi = t // per_batch
    rem = t - bi * per_batch
    ib = rem // nnb
    jb = rem - ib * nnb
    i_lo = ib * mc
    i_hi = min(m, i_lo + mc)
    j_lo = jb * nc
    j_hi = min(n, j_lo + nc)
    _pack_b_block(b, bi, j_lo, j_hi, bp)
    am = a[bi]
    cm = c[bi]
    zero = i_lo - i_lo  # not a literal 0: one compiled micro-kernel serves both calls
    for k0 in range(0, kk, KC):  # k chunks in increasing k: the chains carry on in order
        kc = min(KC, kk - k0)
        for j0 in range(j_lo, j_hi, NR):
            pb = (((j0 - j_lo) // NR) * kk + k0) * NR
            bpan = bp[pb : pb + kc * NR].reshape((kc, NR))
            cols = min(NR, j_hi - j0)
            for i0 in range(i_lo, i_hi, MR):
                rows = min(MR, i_hi - i0)
                if rows == MR:
                    av = am[i0 : i0 + MR, k0 : k0 + kc]  # a strided view; read in place
                else:  # edge rows: zero-padded copy, the padding rows are never stored
                    for r in range(rows):
                        for k in range(kc):
                            apad[r, k] = am[i0 + r, k0 + k]
                    for r in range(rows, MR):
                        for k in range(kc):
                            apad[r, k] = 0.0
                    av = apad[:, :kc]
                if rows == MR and cols == NR:
                    _micro_kernel(kc, av, bpan, cm, i0, j0)
                else:  # edge tile: through a full-size buffer, only the real part goes back
                    for r in range(rows):
                        for j in range(cols):
                            tile[r, j] = cm[i0 + r, j0 + j]
                    _micro_kernel(kc, av, bpan, tile, zero, zero)
                    for r in range(rows):
                        for j in range(cols):
                            cm[i0 + r, j0 + j] = tile[r, j]


@intrinsic
def _next_task(typingctx, counter):
    """Atomically counter[0] += 1 and return the old value (hands out tasks to threads)."""
    sig = types.int64(counter)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        one = ir.Constant(ir.IntType(64), 1)
        return builder.atomic_rmw("add", ary.data, one, "monotonic")

    return sig, codegen


@njit(**_JIT)
def _worker(tid, a, b, c, mc, nc, bp_ws, apads, tiles, counter):
    """Thread tid takes output blocks one at a time until none are left (dynamic balance)."""
    nb, m, n = c.shape
    ntasks = nb * ((m + mc - 1) // mc) * ((n + nc - 1) // nc)
    while True:
        t = _next_task(counter)
        if t >= ntasks:
            break
        _task(a, b, c, t, mc, nc, bp_ws[tid], apads[tid], tiles[tid])


@njit(**_JIT)
def _bmm_serial(a, b, c, mc, nc, bp_ws, apads, tiles):
    # [:, ::1, :] types a and b as strided ('A') whatever their layout: everything below
    # compiles once instead of once per combination of C/F/strided inputs.
    a = a[:, ::1, :]
    b = b[:, ::1, :]
    nb, m, n = c.shape
    for t in range(nb * ((m + mc - 1) // mc) * ((n + nc - 1) // nc)):
        _task(a, b, c, t, mc, nc, bp_ws[0], apads[0], tiles[0])


@njit(parallel=True, **_JIT)
def _bmm_parallel(a, b, c, mc, nc, bp_ws, apads, tiles):
    a = a[:, ::1, :]
    b = b[:, ::1, :]
    counter = np.zeros(1, np.int64)
    for tid in prange(bp_ws.shape[0]):  # one iteration per thread; tasks are handed out dynamically
        _worker(tid, a, b, c, mc, nc, bp_ws, apads, tiles, counter)


def _split(size: int, cap: int, unit: int) -> int:
    """The block length (a multiple of unit, at most cap) that cuts size into equal blocks."""
    units = -(-size // unit)
    per = -(-units // -(-units * unit // cap)) if cap >= unit else 1
    return per * unit


def _block_sizes(nb: int, m: int, n: int, threads: int) -> tuple[int, int]:
    """Output block (rows, cols) per task: as large as the caches like, enough for all threads.

    Only speed depends on this; every output's fma chain is the same whatever the blocks are.
    A task packs its columns of B once, so tall blocks (many rows) repack B least: split the
    columns first, the rows only when there are too few columns.
    """
    mc, nc = _split(m, MC, MR), _split(n, NC, NR)

    def tasks(mc_: int, nc_: int) -> int:
        return nb * -(-m // mc_) * -(-n // nc_)

    want = 4 * threads if threads > 1 else 1
    while tasks(mc, nc) < want and nc > NR:
        nc = _split(n, nc // 2, NR)
    while tasks(mc, nc) < want and mc > MR:
        mc = _split(m, mc // 2, MR)
    return mc, nc


class _Workspace(threading.local):
    """Per calling thread, grow-only scratch memory (saves page faults on every call)."""

    def __init__(self) -> None:
        self.flat = np.empty(0, np.float32)

    def get(self, size: int) -> np.ndarray:
        if self.flat.size < size:
            self.flat = np.empty(max(size, self.flat.size + self.flat.size // 2), np.float32)
        return self.flat[:size]


_workspace = _Workspace()
WORKSPACE_LIMIT = 1 << 26  # floats (256 MiB); bigger requests get a one-off allocation


def _check(a, b, c, ndim: int) -> None:
    for name, x in (("a", a), ("b", b), ("c", c)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise TypeError(f"repro matmul works on float32, {name} is {x.dtype}")
        if not x.dtype.isnative:
            raise TypeError(f"{name} must be in native byte order")
        if x.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if not c.flags.c_contiguous:
        raise ValueError("c must be C-contiguous")
    if not c.flags.writeable:
        raise ValueError("c must be writeable")
    *ba, m, k = a.shape
    *bb, k2, n = b.shape
    *bc, mc, nc = c.shape
    if k != k2 or (m, n) != (mc, nc) or ba != bb or ba != bc:
        raise ValueError(f"shape mismatch: a {a.shape} @ b {b.shape} into c {c.shape}")
    if np.may_share_memory(c, a) or np.may_share_memory(c, b):
        raise ValueError("c must not overlap a or b")


def _run(a3: np.ndarray, b3: np.ndarray, c3: np.ndarray) -> None:
    nb, m, kk = a3.shape
    n = b3.shape[2]
    if nb == 0 or m == 0 or n == 0 or kk == 0:
        return  # no k: every chain is empty and c keeps its values
    threads = numba.get_num_threads()
    if nb * m * n * kk < SERIAL_WORK:
        threads = 1
    mc, nc = _block_sizes(nb, m, n, threads)
    b_size = kk * nc  # nc is a multiple of NR
    a_size = MR * min(kk, KC)
    sizes = (threads * b_size, threads * a_size, threads * MR * NR)
    total = sum(sizes)
    flat = _workspace.get(total) if total <= WORKSPACE_LIMIT else np.empty(total, np.float32)
    bp_ws = flat[: sizes[0]].reshape(threads, b_size)
    apads = flat[sizes[0] : sizes[0] + sizes[1]].reshape(threads, MR, a_size // MR)
    tiles = flat[sizes[0] + sizes[1] :].reshape(threads, MR, NR)
    if threads == 1:
        _bmm_serial(a3, b3, c3, mc, nc, bp_ws, apads, tiles)
    else:
        _bmm_parallel(a3, b3, c3, mc, nc, bp_ws, apads, tiles)


def matmul_acc(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """c[i, j] continues its chain: for k = 0..K-1 in order, c = fma(a[i, k], b[k, j], c).

    a (M, K) and b (K, N) float32, any strides; c (M, N) float32, C-contiguous, updated in place
    and returned. Calling it on k-ranges [0, K1) then [K1, K) gives the same bits as one call.
    """
    _check(a, b, c, 2)
    _run(a[None], b[None], c[None])
    return c


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b as `matmul_acc` into a fresh zero (+0.0) output."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.ndim != 2 or b.ndim != 2:
        raise ValueError("matmul takes two 2-D numpy arrays")
    c = np.zeros((a.shape[0], b.shape[1]), np.float32)
    return matmul_acc(a, b, c)


def bmm_acc(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Batched `matmul_acc`: for every batch entry p, c[p] continues with a[p] @ b[p].

    a (B, M, K), b (B, K, N) float32, any strides; c (B, M, N) float32, C-contiguous.
    """
    _check(a, b, c, 3)
    _run(a, b, c)
    return c


def bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched a @ b as `bmm_acc` into a fresh zero (+0.0) output."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.ndim != 3 or b.ndim != 3:
        raise ValueError("bmm takes two 3-D numpy arrays")
    c = np.zeros((a.shape[0], a.shape[1], b.shape[2]), np.float32)
    return bmm_acc(a, b, c)
