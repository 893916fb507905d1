"""Parallel kernels with a serial twin for small inputs.

Waking the thread pool costs more than a few thousand elements of work (decoding one token
calls hundreds of kernels on single rows), and a loop parallel only across independent outputs
gives the same bits serially. So each kernel is compiled twice and the call picks by size.
"""

from __future__ import annotations

import numba

SMALL_WORK = 1 << 15  # elements; below this the serial twin is faster on this class of machine


class Kernel:
    def __init__(self, fn):
        self.parallel = numba.njit(parallel=True)(fn)
        self.serial = numba.njit(fn)
        self.__doc__ = fn.__doc__

    def __call__(self, work: int, *args):
        if work < SMALL_WORK or numba.get_num_threads() == 1:
            return self.serial(*args)
        return self.parallel(*args)


def kernel(fn) -> Kernel:
    """Decorator for a function whose prange loop runs over independent outputs only."""
    return Kernel(fn)
