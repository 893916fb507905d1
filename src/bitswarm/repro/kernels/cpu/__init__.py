"""numba CPU kernels: no fastmath, fma only through `fp.fma32`, parallel only across outputs.

On a CPU with AVX-512, LLVM's default tuning still prefers 256-bit vectors; the matmul
micro-kernel then runs at half width (74 vs 106 GFLOP/s on one core here, measured). Vector
width never changes a bit (lanes are independent outputs, nothing is reassociated), so unless
the user chose the target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, e.g. the generic-x86-64 golden
test), full-width vectors are allowed before the first kernel compiles. The setting is part of
numba's cache key, so cached kernels of either width never mix.

glibc hands arrays above 128 KiB out as fresh mmap'd pages and returns them on free, so every
activation of a training step was faulted in page by page again: 228k minor faults per
SmolLM2 step (0.9 GB), which also stalled the matmul threads (the MLP projections ran at 59
GFLOP/s in the model, 220 alone). Keeping freed memory for reuse (arrays up to 32 MiB from the
heap, no trimming below 1 GiB) took a step from 5.0 to 4.05 s with 2k faults. The cost: a
process keeps up to its peak heap after a job ends.
"""

from __future__ import annotations

import os


def _allow_full_width_vectors() -> None:
    if "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ:
        return
    import llvmlite.binding as llvm
    from numba.core import config

    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(",") and config.CPU_FEATURES is None:
        config.CPU_FEATURES = features + ",-prefer-256-bit"


def _reuse_freed_memory() -> None:
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): leave the allocator alone
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


_allow_full_width_vectors()
_reuse_freed_memory()
