"""Parallel kernels with a serial twin for small inputs.

Waking the thread pool costs more than a few thousand elements of work (decoding one token
calls hundreds of kernels on single rows), and a loop parallel only across independent outputs
gives the same bits serially. So each kernel is compiled twice and the call picks by size.

Both twins are cached on disk (numba's cache=True): compiling the kernels of one forward pass
took 3.4 s of every `generate`. numba names a cache file by the function's qualified name and
first line, so the serial twin is compiled from a copy of the function under its own name;
otherwise the two compilations of one function would share, and overwrite, one cache entry.
"""

from __future__ import annotations

import types

import numba

SMALL_WORK = 1 << 15  # elements; below this the serial twin is faster on this class of machine


class Kernel:
    def __init__(self, fn):
        self.parallel = numba.njit(parallel=True, cache=True)(fn)
        self.serial = numba.njit(cache=True)(_renamed(fn, "_serial"))
        self.__doc__ = fn.__doc__

    def __call__(self, work: int, *args):
        if work < SMALL_WORK or numba.get_num_threads() == 1:
            return self.serial(*args)
        return self.parallel(*args)


def _renamed(fn, suffix: str):
    """The same code under another name (see the module doc)."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + suffix
    twin.__module__ = fn.__module__
    twin.__doc__ = fn.__doc__
    return twin


def kernel(fn) -> Kernel:
    """Decorator for a function whose prange loop runs over independent outputs only."""
    return Kernel(fn)
