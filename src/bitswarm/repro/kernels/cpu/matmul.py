"""Matmul on the CPU (numba), bit-identical to `bitswarm.repro.reference.matmul`.

The order (the spec): every output element is ONE sequential fma chain over k in increasing k,
starting from the output's initial value::

    acc = C[i, j]
    for k in 0 .. K-1:
        acc = fma(A[i, k], B[k, j], acc)
    C[i, j] = acc

How it is made fast without changing that order (BLIS-style blocking):

* B is packed, per task and per k chunk, into micro-panels of NR columns
  (``bp[q, k, j] = B[k0 + k, q*NR + j]``, zero-padded at the right edge); packing turns any
  strided or transposed view (``x @ W.T``) into unit-stride rows. A is read in place through
  a strided view (one broadcast per row and k), except the last rows when M is not a multiple
  of MR, which are copied into a zero-padded MR-row buffer.
* The micro-kernel holds an MR x NR tile of C in registers (MR*NR/VEC vectors, written in
  LLVM IR: `_tile_fma`) and runs the fma chains of all MR*NR outputs side by side over a
  chunk of k. Each output still sees its own k in increasing order; the tile is stored
  between k chunks, which is exact in fp32, and the chunks are visited in increasing k. Edge
  tiles run the same micro-kernel on a full-size copy; their padded rows/columns compute on
  zeros and are never stored.
* Threads (as many as ``numba.get_num_threads()``) only split the output into independent
  blocks, handed out one at a time through an atomic counter; k is never split. So the result
  does not depend on the thread count, the scheduling, the block sizes or the tile sizes.
  Problems below SERIAL_WORK fma run on the calling thread alone. The threads are either a
  numba ``prange`` loop (THREADING = "prange", default) or helper threads running the nogil
  kernel next to the caller (THREADING = "pool"); see THREADING.

fma is only ever llvm.fma (`bitswarm.repro.fp.fma32`, or its vector form lane by lane in the
micro-kernel); no fastmath, so LLVM may vectorize the chains across outputs but cannot
contract, reassociate or flush subnormals.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["matmul", "matmul_acc", "bmm", "bmm_acc"]

MR = 6  # rows of the register tile
NR = 64  # columns of the register tile (4 AVX-512 / 8 AVX2 vectors)
KC = 256  # k per pass over a C tile: the B micro-panel (KC*NR*4 = 64 KiB) stays near L1;
#          at 1024 (256 KiB) a 49152-row weight gradient ran at 101 GFLOP/s, at 256 at 132-167
MC = 1024  # at most this many rows of C per task (a task packs its B columns once)
NC = 256  # at most this many columns of C per task (multiple of NR)
THREADING = "prange"  # "prange": numba's parallel loop, the same OpenMP team as the elementwise
#   kernels (default). "pool": helper threads next to the caller, which join late on a busy
#   machine without holding anyone up; but after every parallel elementwise op the OpenMP
#   threads spin for a while and took the cores from the helper: 30 SmolLM2 MLP products, each
#   after a softmax, ran at 120 GFLOP/s against 173 without the softmax (prange: 166 vs 203).
#   prange's end-of-loop barrier waits for every thread (~10 ms per call on a busy machine).
SERIAL_WORK = 1 << 26  # fewer fma (M*N*K) than this: one thread (helpers would cost more)

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


@intrinsic
def _ptr(typingctx, arr, byte_offset):
    """A float32 pointer to arr's data plus byte_offset (no checks, no reference counting)."""
    sig = types.CPointer(types.float32)(arr, byte_offset)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        raw = builder.bitcast(ary.data, ir.IntType(8).as_pointer())
        moved = builder.gep(raw, [args[1]])
        return builder.bitcast(moved, ir.FloatType().as_pointer())

    return sig, codegen


VEC = 16  # lanes of the micro-kernel's vectors (one AVX-512 register; two AVX2 ones)


def _tile_fma_of(mr: int):
    """`_tile_fma` for tiles of mr rows (and NR columns)."""

    @intrinsic
    def tile_fma(typingctx, kc, ap, ars, aks, bp, cp, ldc):
        return _tile_fma_typing(mr, kc, ars, aks, ldc)

    return tile_fma


def _tile_fma_typing(mr, kc, ars, aks, ldc):
    """The micro-kernel's loop written directly in LLVM IR: mr x NR accumulators as mr*NR/VEC
    vectors <VEC x float>, loaded from the C tile, then for k = 0 .. kc-1 in order
    acc[r, j] = llvm.fma(a[r, k], b[k, j], acc[r, j]) (one vector fma per VEC outputs, a[r, k]
    broadcast), then stored back. Each lane is one output's own fma chain, so the bits are
    those of the scalar spec; what the IR fixes is the shape LLVM compiles: with the loop
    written as scalar code, the first and last k step (which read and write C) came out scalar
    (16x slower, a quarter of the time at k = 64), and the tile's registers depended on the
    unroller. On a machine without vector fma LLVM splits or scalarizes the same operations."""
    ints = (kc, ars, aks, ldc)
    if not all(isinstance(t, types.Integer) for t in ints):
        return None
    f32p = types.CPointer(types.float32)
    sig = types.void(types.intp, f32p, types.intp, types.intp, f32p, f32p, types.intp)

    def codegen(context, builder, signature, args):
        kc, ap, ars, aks, bp, cp, ldc = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        vec = ir.VectorType(ir.FloatType(), VEC)
        fma_type = ir.FunctionType(vec, [vec, vec, vec])
        fma = cgutils.get_or_insert_function(builder.module, fma_type, f"llvm.fma.v{VEC}f32")
        nv = NR // VEC

        def at(base, offset):
            return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

        def c_offset(r, v):
            return builder.add(builder.mul(ldc, ir.Constant(i64, r)), ir.Constant(i64, v * VEC))

        first = [builder.load(at(cp, c_offset(r, v)), align=4) for r in range(mr) for v in range(nv)]
        entry = builder.block
        loop = builder.append_basic_block("tile_k")
        done = builder.append_basic_block("tile_done")
        builder.branch(loop)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        accs = [builder.phi(vec) for _ in first]
        bk = builder.mul(k, ir.Constant(i64, NR))
        bs = [builder.load(at(bp, builder.add(bk, ir.Constant(i64, v * VEC))), align=4) for v in range(nv)]
        ak = builder.mul(k, aks)
        undef = ir.Constant(vec, ir.Undefined)
        lanes0 = ir.Constant(ir.VectorType(i32, VEC), [0] * VEC)
        nxt = []
        for r in range(mr):
            a = builder.load(builder.gep(ap, [builder.add(builder.mul(ars, ir.Constant(i64, r)), ak)]))
            splat = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(i32, 0)), undef, lanes0)
            nxt += [builder.call(fma, [splat, bs[v], accs[r * nv + v]]) for v in range(nv)]
        k1 = builder.add(k, ir.Constant(i64, 1))
        k.add_incoming(ir.Constant(i64, 0), entry)
        k.add_incoming(k1, loop)
        for phi, a0, a1 in zip(accs, first, nxt):
            phi.add_incoming(a0, entry)
            phi.add_incoming(a1, loop)
        builder.cbranch(builder.icmp_signed("<", k1, kc), loop, done)
        builder.position_at_end(done)
        for i, acc in enumerate(nxt):
            builder.store(acc, at(cp, c_offset(i // nv, i % nv)), align=4)
        return context.get_dummy_value()

    return sig, codegen


_tile_fma = _tile_fma_of(MR)


@njit(inline="never", **_JIT)
def _micro_kernel(kc, ap, ars, aks, bp, cp, ldc):
    """C tile at cp (MR x NR, row stride ldc) continues its fma chains over kc >= 1 more k.

    A tile at ap: element (r, k) at ap[r*ars + k*aks]; B micro-panel at bp: (k, j) at bp[k*NR + j].
    """
    _tile_fma(kc, ap, ars, aks, bp, cp, ldc)


@njit(**_JIT)
def _pack_b_block(b, bi, k0, kc, j_lo, j_hi, bp):
    """b[bi, k0:k0+kc, j_lo:j_hi] into NR-column micro-panels, zero-padded to a multiple of NR.

    bp[(q*kc + k)*NR + j] = b[bi, k0 + k, j_lo + q*NR + j].
    """
    nq = (j_hi - j_lo + NR - 1) // NR
    by_rows = abs(b.strides[2]) <= abs(b.strides[1])
    for q in range(nq):
        j0 = j_lo + q * NR
        cols = min(NR, j_hi - j0)
        base = q * kc * NR
        if cols < NR:
            for k in range(kc):
                for j in range(cols, NR):
                    bp[base + k * NR + j] = 0.0
        if by_rows:  # rows of b are contiguous-ish: read along j
            for k in range(kc):
                src = b[bi, k0 + k, j0 : j0 + cols]
                d = base + k * NR
                for j in range(cols):
                    bp[d + j] = src[j]
        else:  # b is a transposed view (x @ W.T): read along k
            for j in range(cols):
                src = b[bi, k0 : k0 + kc, j0 + j]
                for k in range(kc):
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
    a_off = bi * a.strides[0]
    ars = a.strides[1] // 4  # element strides (checked to be whole elements before the call)
    aks = a.strides[2] // 4
    ldc = n
    tp = _ptr(tile, 0)
    ldt = tile.shape[1]  # = NR, but not a literal: one compiled micro-kernel serves both calls
    for k0 in range(0, kk, KC):  # k chunks in increasing k: the chains carry on in order
        kc = min(KC, kk - k0)
        _pack_b_block(b, bi, k0, kc, j_lo, j_hi, bp)
        for j0 in range(j_lo, j_hi, NR):
            bpp = _ptr(bp, ((j0 - j_lo) // NR) * kc * NR * 4)
            cols = min(NR, j_hi - j0)
            for i0 in range(i_lo, i_hi, MR):
                rows = min(MR, i_hi - i0)
                if rows == MR:  # read a in place
                    app = _ptr(a, a_off + i0 * a.strides[1] + k0 * a.strides[2])
                    r_s, k_s = ars, aks
                else:  # edge rows: zero-padded copy, the padding rows are never stored
                    for r in range(rows):
                        for k in range(kc):
                            apad[r, k] = a[bi, i0 + r, k0 + k]
                    for r in range(rows, MR):
                        for k in range(kc):
                            apad[r, k] = 0.0
                    app = _ptr(apad, 0)
                    r_s, k_s = apad.shape[1], 1
                if rows == MR and cols == NR:
                    _micro_kernel(kc, app, r_s, k_s, bpp, _ptr(c, ((bi * m + i0) * n + j0) * 4), ldc)
                else:  # edge tile: through a full-size buffer, only the real part goes back
                    for r in range(rows):
                        for j in range(cols):
                            tile[r, j] = c[bi, i0 + r, j0 + j]
                    _micro_kernel(kc, app, r_s, k_s, bpp, tp, ldt)
                    for r in range(rows):
                        for j in range(cols):
                            c[bi, i0 + r, j0 + j] = tile[r, j]


@intrinsic
def _atomic_inc(typingctx, counter, idx):
    """Atomically counter[idx] += 1 and return the old value (acquire-release)."""
    sig = types.int64(counter, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "acq_rel")

    return sig, codegen


@intrinsic
def _atomic_load(typingctx, counter, idx):
    """counter[idx], read with acquire ordering."""
    sig = types.int64(counter, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@njit(**_JIT)
def _worker(tid, a, b, c, mc, nc, bp_ws, apads, tiles, counter):
    """Thread tid takes output blocks one at a time until none are left (dynamic balance).

    counter[0]: the next block to hand out; counter[1]: how many blocks are finished.
    """
    nb, m, n = c.shape
    ntasks = nb * ((m + mc - 1) // mc) * ((n + nc - 1) // nc)
    while True:
        t = _atomic_inc(counter, 0)
        if t >= ntasks:
            break
        _task(a, b, c, t, mc, nc, bp_ws[tid], apads[tid], tiles[tid])
        _atomic_inc(counter, 1)


@njit(**_JIT)
def _finished(counter):
    return _atomic_load(counter, 1)


@njit(**_JIT)
def _scratch(flat, threads, kcap, nc):
    """Per-thread scratch carved out of one flat buffer: B panels, padded A rows, a C tile."""
    b_size = kcap * nc
    s0 = threads * b_size
    s1 = s0 + threads * MR * kcap
    bp_ws = flat[:s0].reshape((threads, b_size))
    apads = flat[s0:s1].reshape((threads, MR, kcap))
    tiles = flat[s1 : s1 + threads * MR * NR].reshape((threads, MR, NR))
    return bp_ws, apads, tiles


def _scratch_size(threads: int, kcap: int, nc: int) -> int:
    return threads * (kcap * nc + MR * kcap + MR * NR)


@njit(**_JIT)
def _bmm_serial(a, b, c, mc, nc, flat):
    # [:, ::1, :] types a and b as strided ('A') whatever their layout: everything below
    # compiles once instead of once per combination of C/F/strided inputs.
    a = a[:, ::1, :]
    b = b[:, ::1, :]
    nb, m, n = c.shape
    bp_ws, apads, tiles = _scratch(flat, 1, min(b.shape[1], KC), nc)
    for t in range(nb * ((m + mc - 1) // mc) * ((n + nc - 1) // nc)):
        _task(a, b, c, t, mc, nc, bp_ws[0], apads[0], tiles[0])


@njit(parallel=True, **_JIT)
def _bmm_prange(a, b, c, mc, nc, flat, threads):
    a = a[:, ::1, :]
    b = b[:, ::1, :]
    bp_ws, apads, tiles = _scratch(flat, threads, min(b.shape[1], KC), nc)
    counter = np.zeros(2, np.int64)
    for tid in prange(threads):  # one iteration per thread; blocks are handed out dynamically
        _worker(tid, a, b, c, mc, nc, bp_ws, apads, tiles, counter)


@njit(**_JIT)
def _pool_worker(tid, a, b, c, mc, nc, flat, threads, counter):
    a = a[:, ::1, :]
    b = b[:, ::1, :]
    bp_ws, apads, tiles = _scratch(flat, threads, min(b.shape[1], KC), nc)
    _worker(tid, a, b, c, mc, nc, bp_ws, apads, tiles, counter)


class _Helpers:
    """Helper threads for the "pool" mode, started on first use (and again after a fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        with self.lock:
            if self.pool is None:
                workers = max(1, numba.config.NUMBA_NUM_THREADS - 1)
                self.pool = ThreadPoolExecutor(workers, thread_name_prefix="repro-matmul")
            return self.pool

    def forget(self) -> None:  # in a forked child the threads are gone
        self.lock = threading.Lock()
        self.pool = None


_helpers = _Helpers()
os.register_at_fork(after_in_child=_helpers.forget)


def _bmm_pool(a3, b3, c3, mc: int, nc: int, flat: np.ndarray, threads: int) -> None:
    """The calling thread works too and only waits for blocks a helper has actually taken.

    A helper that the OS does not schedule in time finds no blocks left and does nothing, so a
    busy machine costs at most one thread's speed, never a wait for a sleeping thread.
    """
    nb, m, _ = a3.shape
    n = b3.shape[2]
    ntasks = nb * -(-m // mc) * -(-n // nc)
    counter = np.zeros(2, np.int64)
    pool = _helpers.get()
    futures = [pool.submit(_pool_worker, tid, a3, b3, c3, mc, nc, flat, threads, counter)
               for tid in range(1, threads)]
    _pool_worker(0, a3, b3, c3, mc, nc, flat, threads, counter)
    while _finished(counter) < ntasks:  # blocks still being computed by a helper
        for f in futures:
            if f.done() and f.exception() is not None:
                raise f.exception()
        os.sched_yield()


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
WORKSPACE_LIMIT = 1 << 24  # floats (64 MiB); bigger requests get a one-off allocation


_F32 = np.dtype(np.float32)


def _check(a, b, c, ndim: int) -> None:
    for name, x in (("a", a), ("b", b), ("c", c)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.dtype is not _F32 and (x.dtype != _F32 or not x.dtype.isnative):
            raise TypeError(f"repro matmul works on native float32, {name} is {x.dtype}")
        if x.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if not c.flags.c_contiguous:
        raise ValueError("c must be C-contiguous")
    if not c.flags.writeable:
        raise ValueError("c must be writeable")
    if a.shape[:-2] != b.shape[:-2] or a.shape[:-2] != c.shape[:-2] or a.shape[-1] != b.shape[-2] \
            or c.shape[-2:] != (a.shape[-2], b.shape[-1]):
        raise ValueError(f"shape mismatch: a {a.shape} @ b {b.shape} into c {c.shape}")
    if np.may_share_memory(c, a) or np.may_share_memory(c, b):
        raise ValueError("c must not overlap a or b")


def _whole_element_strides(x: np.ndarray) -> np.ndarray:
    """x itself, or a copy if some stride is not a whole number of elements (exotic views)."""
    return x if all(s % x.itemsize == 0 for s in x.strides) else np.ascontiguousarray(x)


def _run(a3: np.ndarray, b3: np.ndarray, c3: np.ndarray) -> None:
    nb, m, kk = a3.shape
    n = b3.shape[2]
    if nb == 0 or m == 0 or n == 0 or kk == 0:
        return  # no k: every chain is empty and c keeps its values
    threads = 1 if nb * m * n * kk < SERIAL_WORK else numba.get_num_threads()
    if threads == 1:
        mc, nc = -(-m // MR) * MR, min(-(-n // NR) * NR, NC)
    else:
        mc, nc = _block_sizes(nb, m, n, threads)
    size = _scratch_size(threads, min(kk, KC), nc)
    flat = _workspace.get(size) if size <= WORKSPACE_LIMIT else np.empty(size, np.float32)
    if threads == 1:
        _bmm_serial(a3, b3, c3, mc, nc, flat)
    elif THREADING == "prange":
        _bmm_prange(a3, b3, c3, mc, nc, flat, threads)
    else:
        _bmm_pool(a3, b3, c3, mc, nc, flat, threads)


def matmul_acc(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """c[i, j] continues its chain: for k = 0..K-1 in order, c = fma(a[i, k], b[k, j], c).

    a (M, K) and b (K, N) float32, any strides; c (M, N) float32, C-contiguous, updated in place
    and returned. Calling it on k-ranges [0, K1) then [K1, K) gives the same bits as one call.
    """
    _check(a, b, c, 2)
    _run(_whole_element_strides(a)[None], b[None], c[None])
    return c


def _fresh_output(a, b, ndim: int) -> np.ndarray:
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    return np.zeros(a.shape[:-1] + b.shape[-1:], np.float32)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b as `matmul_acc` into a fresh zero (+0.0) output."""
    c = _fresh_output(a, b, 2)
    return matmul_acc(a, b, c)


def bmm_acc(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Batched `matmul_acc`: for every batch entry p, c[p] continues with a[p] @ b[p].

    a (B, M, K), b (B, K, N) float32, any strides; c (B, M, N) float32, C-contiguous.
    """
    _check(a, b, c, 3)
    _run(_whole_element_strides(a), b, c)
    return c


def bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched a @ b as `bmm_acc` into a fresh zero (+0.0) output."""
    c = _fresh_output(a, b, 3)
    return bmm_acc(a, b, c)
