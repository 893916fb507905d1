"""fp32 primitives shared by the numpy reference and the numba kernels.

numpy has no fused multiply-add, so `fma_ref` computes a correctly rounded fp32 fma exactly:
the product of two fp32 values is exact in fp64 (48 ≤ 53 significant bits); the fp64 sum with
the addend is made *round-to-odd* (TwoSum gives its exact error; an inexact sum with an even
last bit is moved one fp64 ulp toward the error), and rounding a round-to-odd value with
53 ≥ 2·24 + 2 bits to fp32 is correctly rounded (Boldo & Melquiond, 2008). Infinities and NaN
take the plain path, where they give IEEE results. `fma32` is the same operation as one
hardware instruction inside numba code (llvm.fma.f32, never contracted or reassociated).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

F32 = np.float32


def fma_ref(a, b, c) -> np.ndarray:
    """Correctly rounded fp32 a*b + c, elementwise, with numpy broadcasting."""
    with np.errstate(invalid="ignore", over="ignore"):
        a64 = np.asarray(a, dtype=np.float32).astype(np.float64)
        b64 = np.asarray(b, dtype=np.float32).astype(np.float64)
        c64 = np.asarray(c, dtype=np.float32).astype(np.float64)
        p = a64 * b64  # exact
        s = p + c64
        bb = s - p
        err = (p - (s - bb)) + (c64 - bb)  # exact: p + c == s + err
    bits = s.view(np.int64)
    fix = np.isfinite(s) & (err != 0) & ((bits & 1) == 0)
    if np.any(fix):
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    with np.errstate(over="ignore"):
        return s.astype(np.float32)


@intrinsic
def fma32(typingctx, a, b, c):
    """One fused multiply-add on fp32 values inside numba code."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return sig, codegen


def as_f32(x) -> np.ndarray:
    """A C-contiguous float32 array; refuses silent conversions from other float types."""
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        raise TypeError(f"repro tensors are float32, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def ulp_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How many fp32 values lie between x and y (0 = identical bits, NaN == NaN)."""
    xi = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    yi = np.asarray(y, np.float32).view(np.int32).astype(np.int64)
    # map sign-magnitude to a monotonic integer line
    xi = np.where(xi < 0, -(xi & 0x7FFFFFFF), xi)
    yi = np.where(yi < 0, -(yi & 0x7FFFFFFF), yi)
    d = np.abs(xi - yi)
    both_nan = np.isnan(x) & np.isnan(y)
    return np.where(both_nan, 0, d)
