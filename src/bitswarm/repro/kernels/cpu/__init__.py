"""numba CPU kernels: no fastmath, fma only through `fp.fma32`, parallel only across outputs."""
