"""The one NaN: every NaN an op produces or passes on is the quiet NaN 0x7FC00000.

Hardware disagrees on NaN bits: an invalid operation (inf - inf, 0 * inf) gives 0xFFC00000 on
x86, 0x7FC00000 on Arm and 0x7FFFFFFF on NVIDIA GPUs, and an operation on NaN inputs passes on
the payload of whichever operand the instruction (or the compiler's operand order) picks. NaN-ness
itself never differs: every IEEE operation, comparison and select treats all NaNs alike. So
making the bits canonical where values are committed is enough for equal hashes on every device:

* `backend.get_backend` runs this over every result and every in-place argument of every op of a
  verifiable backend, so op outputs (and with them the training state) never hold another NaN;
* `hashing.tensor_hash` hashes any NaN as this one, which covers the numpy glue between ops
  (residual adds, scaling) whose results are hashed in traces without passing through an op.
"""

from __future__ import annotations

import numba
import numpy as np

from bitswarm.repro.kernels.cpu.dispatch import _renamed

QNAN_BITS = 0x7FC00000
QNAN = np.array(QNAN_BITS, dtype=np.uint32).view(np.float32)[()]
_PARALLEL_FROM = 1 << 20  # elements; below this one thread scans faster than waking the pool


def _scan(bits):
    n = 0
    for i in numba.prange(bits.size):
        if (bits[i] & 0x7FFFFFFF) > 0x7F800000 and bits[i] != QNAN_BITS:
            bits[i] = QNAN_BITS
            n += 1
    return n


_scan_serial = numba.njit(cache=True, nogil=True)(_scan)
# its own name, so its own on-disk cache entry: otherwise the serial twin would load the parallel
# build and wake the thread pool on every call (0.5 ms, measured)
_scan_parallel = numba.njit(cache=True, nogil=True, parallel=True)(_renamed(_scan, "_parallel"))


def canonical_nan_(x: np.ndarray) -> int:
    """Rewrite every NaN in a float32 array as QNAN in place; returns how many were rewritten."""
    if x.dtype != np.float32 or x.size == 0:
        return 0
    if not (x.flags.c_contiguous and x.flags.writeable):
        fix = np.isnan(x) & (x.view(np.uint32) != QNAN_BITS)
        x[fix] = QNAN
        return int(fix.sum())
    flat = x.reshape(-1).view(np.uint32)
    if flat.size >= _PARALLEL_FROM and numba.get_num_threads() > 1:
        return int(_scan_parallel(flat))
    return int(_scan_serial(flat))


def canonical(result):
    """`result` with every float32 NaN in it canonical: arrays in place, scalars replaced;
    tuples, lists and dicts are walked."""
    if isinstance(result, np.ndarray):
        canonical_nan_(result)
        return result
    if isinstance(result, np.float32):
        return QNAN if result != result else result
    if isinstance(result, tuple):
        return tuple(canonical(r) for r in result)
    if isinstance(result, list):
        for i, r in enumerate(result):
            result[i] = canonical(r)
        return result
    if isinstance(result, dict):
        for k in result:
            result[k] = canonical(result[k])
        return result
    return result
