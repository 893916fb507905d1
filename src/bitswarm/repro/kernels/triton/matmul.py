"""Matmul in triton, bit-identical to `bitswarm.repro.reference.matmul` (its docstring is the spec).

Every output element is one fma chain over k in increasing k, starting from the output's
initial value. A program owns a BLOCK_M x BLOCK_N tile of C, holds it as one fp32 tensor and
walks k = 0..K-1 in order, each step one `tl.fma` of a column of A's rows and a row of B's
columns into the whole tile: the chains of all its outputs run side by side, each in its own
k order. Programs split only the outputs, never k, so neither the grid nor the block sizes
change a bit. No `tl.dot`: tensor cores would round and order differently.

A and B are read through their strides (a transposed view such as `W.T`, or any axis order
of a contiguous array, travels as it is); other layouts are copied to a contiguous array first.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.kernels.triton import runtime  # noqa: F401 - sets up the interpreter first
from bitswarm.repro.kernels.triton.runtime import LAUNCH, in_place, to_device, write_back

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# The numba module's checks, so that errors are the same (c C-contiguous, writeable, apart from a, b).
from bitswarm.repro.kernels.cpu.matmul import _check, _fresh_output  # noqa: E402

__all__ = ["matmul", "matmul_acc", "bmm", "bmm_acc"]

MAX_BLOCK = 64  # tile side: 64 x 64 accumulators per program (32 per thread with 4 warps)
MIN_BLOCK = 16


@triton.jit
def _bmm_kernel(a_ptr, b_ptr, c_ptr, M, N, K, s_ab, s_am, s_ak, s_bb, s_bk, s_bn,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tiles_n = tl.cdiv(N, BLOCK_N)
    tile = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    rm = ((tile // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = ((tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask_m = rm < M
    mask_n = rn < N
    mask = mask_m[:, None] & mask_n[None, :]
    c_ptrs = c_ptr + batch * M * N + rm[:, None] * N + rn[None, :]
    acc = tl.load(c_ptrs, mask=mask, other=0.0)
    a_ptrs = a_ptr + batch * s_ab + rm * s_am
    b_ptrs = b_ptr + batch * s_bb + rn * s_bn
    for _k in range(K):
        # Rows/columns past the edge compute on zeros and are never stored.
        a_col = tl.load(a_ptrs, mask=mask_m, other=0.0)
        b_row = tl.load(b_ptrs, mask=mask_n, other=0.0)
        acc = tl.fma(a_col[:, None], b_row[None, :], acc)
        a_ptrs += s_ak
        b_ptrs += s_bk
    tl.store(c_ptrs, acc, mask=mask)


def _operand(x: np.ndarray):
    """A device tensor with x's elements and x's element strides, axis by axis.

    When x is a permutation of a contiguous array's axes (C or F order, `W.T`, a transposed
    batch), that array travels as it is (on the CPU: the same memory); otherwise x is copied
    into C order first.
    """
    order = sorted(range(x.ndim), key=lambda ax: -x.strides[ax])
    xp = x.transpose(order)
    if not (xp.flags.c_contiguous and x.flags.aligned):
        order, xp = list(range(x.ndim)), np.array(x, np.float32, order="C")
    t = to_device(xp)
    strides = [0] * x.ndim
    for i, ax in enumerate(order):
        strides[ax] = int(t.stride(i))
    return t, strides


def _block(size: int) -> int:
    return min(MAX_BLOCK, max(MIN_BLOCK, triton.next_power_of_2(size)))


def _run(a3: np.ndarray, b3: np.ndarray, c3: np.ndarray) -> None:
    nb, m, kk = a3.shape
    n = b3.shape[2]
    if nb == 0 or m == 0 or n == 0 or kk == 0:
        return  # no k: every chain is empty and c keeps its values
    at, (s_ab, s_am, s_ak) = _operand(a3)
    bt, (s_bb, s_bk, s_bn) = _operand(b3)
    ct = in_place(c3)
    bm, bn = _block(m), _block(n)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), nb)
    with np.errstate(all="ignore"):  # the interpreter's numpy would warn about inf and NaN
        _bmm_kernel[grid](at, bt, ct, m, n, kk, s_ab, s_am, s_ak, s_bb, s_bk, s_bn,
                          BLOCK_M=bm, BLOCK_N=bn, **LAUNCH)
    write_back(c3, ct)


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
    c = _fresh_output(a, b, 2)
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
    c = _fresh_output(a, b, 3)
    return bmm_acc(a, b, c)
