"""numba CPU kernels: no fastmath, fma only through `fp.fma32`, parallel only across outputs.

On a CPU with AVX-512, LLVM's default tuning still prefers 256-bit vectors; the matmul
micro-kernel then runs at half width (74 vs 106 GFLOP/s on one core here, measured). Vector
width never changes a bit (lanes are independent outputs, nothing is reassociated), so unless
the user chose the target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, e.g. the generic-x86-64 golden
test), full-width vectors are allowed before the first kernel compiles. The setting is part of
numba's cache key, so cached kernels of either width never mix.
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


_allow_full_width_vectors()
