"""numba fp32 transcendentals, bit-identical to `bitswarm.repro.reference.transcendental`.

The scalar functions (`exp32`, `log32`, `sigmoid32`, `silu32`, `rsqrt32`, `sin32`, `cos32`) take
and return float32, are inlined into the numba kernels that call them, and perform exactly the
operations documented in the reference module, in the same order (the constants are imported
from there). Every intermediate stays float32 (module-level np.float32 constants; a bare Python
float literal would promote to float64), except inside sin/cos, which the spec defines in fp64.
No fastmath: LLVM then neither contracts mul+add into fma nor reassociates; fma only via `fma32`.
Divisions go through `_div` (a plain IEEE fdiv): numba's `/` under the default error model
would add a zero-divisor check and raise, which also stops loop vectorization.
The array functions (`exp`, `log`, ...) take float32 arrays of any shape.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from bitswarm.repro.fp import as_f32, fma32
from bitswarm.repro.kernels.cpu.dispatch import kernel
from bitswarm.repro.reference import transcendental as _ref

__all__ = [
    "exp32",
    "log32",
    "sigmoid32",
    "silu32",
    "rsqrt32",
    "sin32",
    "cos32",
    "exp",
    "log",
    "sigmoid",
    "silu",
    "rsqrt",
    "sin",
    "cos",
]


@intrinsic
def _f2i(typingctx, x):
    """The IEEE bit pattern of a float32 as int32 (a bitcast, no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _i2f(typingctx, i):
    """The float32 whose bit pattern is the low 32 bits of integer i (a bitcast)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v, i32 = args[0], ir.IntType(32)
        if v.type.width > 32:
            v = builder.trunc(v, i32)
        elif v.type.width < 32:
            v = builder.sext(v, i32) if signature.args[0].signed else builder.zext(v, i32)
        return builder.bitcast(v, ir.FloatType())

    return types.float32(i), codegen


@intrinsic
def _div(typingctx, a, b):
    """IEEE fp32 a / b (x/0 = +-inf, 0/0 = NaN) with no zero-divisor check or exception,
    whatever the caller's numba error model."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.fdiv(args[0], args[1])

    return types.float32(types.float32, types.float32), codegen


# The reference's constants, bound here as module globals so that numba freezes them (float32
# stays float32, the fp64 trig constants stay fp64).
ONE = _ref.ONE
TWO = _ref.TWO
ZERO = _ref.ZERO
INF = _ref.INF
NEG_INF = np.float32(-np.inf)
QNAN = _ref.QNAN
EXP_XMAX = _ref.EXP_XMAX
EXP_XMIN = _ref.EXP_XMIN
EXP_MAGIC = _ref.EXP_MAGIC
EXP_MAGIC_BITS = int(_ref.EXP_MAGIC_BITS)
LOG2E = _ref.LOG2E
EXP_LN2_HI = _ref.EXP_LN2_HI
EXP_LN2_LO = _ref.EXP_LN2_LO
EXP_C2 = _ref.EXP_C2
EXP_C3 = _ref.EXP_C3
EXP_C4 = _ref.EXP_C4
EXP_C5 = _ref.EXP_C5
EXP_C6 = _ref.EXP_C6
LOG_SQRT_HALF_BITS = int(_ref.LOG_SQRT_HALF_BITS)
LOG_TWO23 = _ref.LOG_TWO23
LOG_MIN_NORMAL = _ref.LOG_MIN_NORMAL
LOG_LN2_HI = _ref.LOG_LN2_HI
LOG_LN2_LO = _ref.LOG_LN2_LO
LOG_L1 = _ref.LOG_L1
LOG_L2 = _ref.LOG_L2
LOG_L3 = _ref.LOG_L3
LOG_L4 = _ref.LOG_L4
TRIG_XMAX = _ref.TRIG_XMAX
TWO_OVER_PI = _ref.TWO_OVER_PI
TRIG_MAGIC = _ref.TRIG_MAGIC
PIO2_1 = _ref.PIO2_1
PIO2_2 = _ref.PIO2_2
PIO2_3 = _ref.PIO2_3
S1, S2, S3, S4, S5, S6 = _ref.SIN_S
C1, C2, C3, C4, C5, C6 = _ref.COS_C


@numba.njit(inline="always", cache=False)
def _pow2(k):
    """2^k as float32 for integer k in [-126, 127]."""
    return _i2f((k + 127) << 23)


@numba.njit(inline="always", cache=False)
def _exp_parts(x):
    """(q, r, s1, s2) of the reference `_exp_parts` for a clamped, non-NaN float32 x."""
    t = fma32(x, LOG2E, EXP_MAGIC)
    k = t - EXP_MAGIC
    ki = np.int64(_f2i(t)) - EXP_MAGIC_BITS
    r = fma32(-k, EXP_LN2_HI, x)
    r = fma32(-k, EXP_LN2_LO, r)
    q = fma32(EXP_C6, r, EXP_C5)
    q = fma32(q, r, EXP_C4)
    q = fma32(q, r, EXP_C3)
    q = fma32(q, r, EXP_C2)
    q = fma32(q, r, ONE)
    k1 = ki >> 1
    k2 = ki - k1
    return q, r, _pow2(k1), _pow2(k2)


@numba.njit(inline="always", cache=False)
def exp32(x):
    """e^x for a float32 x; see `reference.transcendental.exp`."""
    xc = x if x < EXP_XMAX else EXP_XMAX  # NaN -> EXP_XMAX, replaced below
    xc = xc if xc > EXP_XMIN else EXP_XMIN
    q, r, s1, s2 = _exp_parts(xc)
    y = (fma32(q, r, ONE) * s1) * s2
    return QNAN if x != x else y


@numba.njit(inline="always", cache=False)
def log32(x):
    """Natural log of a float32 x; see `reference.transcendental.log`."""
    ok = (x > ZERO) and (x < INF)
    xw = x if ok else ONE
    sub = xw < LOG_MIN_NORMAL
    xw = xw * LOG_TWO23 if sub else xw
    ix = np.int64(_f2i(xw)) - LOG_SQRT_HALF_BITS
    e = np.float32((ix >> 23) - (23 if sub else 0))
    m = _i2f((ix & 0x007FFFFF) + LOG_SQRT_HALF_BITS)
    f = m - ONE
    s = _div(f, TWO + f)
    z = s * s
    u = fma32(LOG_L4, z, LOG_L3)
    u = fma32(u, z, LOG_L2)
    u = fma32(u, z, LOG_L1)
    w = fma32(-z, u, f)
    ph = e * LOG_LN2_HI
    hi = ph + f
    lo = f - (hi - ph)
    lo = fma32(e, LOG_LN2_LO, lo)
    lo = fma32(-s, w, lo)
    y = hi + lo
    if ok:
        return y
    if x == ZERO:
        return NEG_INF
    if x == INF:
        return INF
    return QNAN


@numba.njit(inline="always", cache=False)
def _sig_core(x):
    """(q0, c, sc1, sc2) of the reference `_sig_core` for a non-NaN float32 x."""
    a = -abs(x)
    a = a if a > EXP_XMIN else EXP_XMIN
    q, r, s1, s2 = _exp_parts(a)
    p = fma32(q, r, ONE)
    pl = fma32(q, r, ONE - p)
    e = (p * s1) * s2
    dh = ONE + e
    dl = e - (dh - ONE)
    inv = _div(ONE, dh)
    neg = x < ZERO
    n = p if neg else ONE
    nl = pl if neg else ZERO
    q0 = n * inv
    rem = fma32(-q0, dh, n)
    t = fma32(-q0, dl, rem + nl)
    c = t * inv
    sc1 = s1 if neg else ONE
    sc2 = s2 if neg else ONE
    return q0, c, sc1, sc2


@numba.njit(inline="always", cache=False)
def sigmoid32(x):
    """1 / (1 + e^-x) for a float32 x; see `reference.transcendental.sigmoid`."""
    q0, c, sc1, sc2 = _sig_core(x)
    y = ((q0 + c) * sc1) * sc2
    return QNAN if x != x else y


@numba.njit(inline="always", cache=False)
def silu32(x):
    """x * sigmoid(x) for a float32 x; see `reference.transcendental.silu`."""
    xs = x if x > EXP_XMIN else EXP_XMIN
    q0, c, sc1, sc2 = _sig_core(xs)
    v = fma32(xs, q0, xs * c)
    y = (v * sc1) * sc2
    y = INF if x == INF else y
    return QNAN if x != x else y


@numba.njit(inline="always", cache=False)
def rsqrt32(x):
    """1 / sqrt(x) for a float32 x: two correctly rounded fp32 operations."""
    y = _div(ONE, np.sqrt(x))
    return QNAN if y != y else y


@numba.njit(inline="always", cache=False)
def _sincos(x, shift):
    """sin (shift 0) or cos (shift 1) of a float32 x; see `reference.transcendental.sin`."""
    if not (abs(x) <= TRIG_XMAX):  # NaN and inf too
        return QNAN
    xd = np.float64(x)
    t = xd * TWO_OVER_PI
    k = (t + TRIG_MAGIC) - TRIG_MAGIC
    r = xd - k * PIO2_1
    r = r - k * PIO2_2
    r = r - k * PIO2_3
    z = r * r
    ps = S6 * z + S5
    ps = ps * z + S4
    ps = ps * z + S3
    ps = ps * z + S2
    ps = ps * z + S1
    sn = r * (ps * z + 1.0)
    pc = C6 * z + C5
    pc = pc * z + C4
    pc = pc * z + C3
    pc = pc * z + C2
    pc = pc * z + C1
    cs = pc * z + 1.0
    n = (np.int64(k) + shift) & 3
    y = cs if (n & 1) == 1 else sn
    y = -y if (n & 2) == 2 else y
    return np.float32(y)


@numba.njit(inline="always", cache=False)
def sin32(x):
    """sin(x) for a float32 x, |x| <= 2^20 (NaN outside)."""
    return _sincos(x, 0)


@numba.njit(inline="always", cache=False)
def cos32(x):
    """cos(x) for a float32 x, |x| <= 2^20 (NaN outside)."""
    return _sincos(x, 1)


# ---- array functions: a parallel loop over independent elements ------------------------------


def _elementwise(scalar):
    """The array loop for one scalar function: parallel over independent elements, with a
    serial twin for small inputs (dispatch.kernel)."""

    def loop(x, out):
        for i in prange(x.size):
            out[i] = scalar(x[i])

    return kernel(loop)


_exp_1d = _elementwise(exp32)
_log_1d = _elementwise(log32)
_sigmoid_1d = _elementwise(sigmoid32)
_silu_1d = _elementwise(silu32)
_rsqrt_1d = _elementwise(rsqrt32)
_sin_1d = _elementwise(sin32)
_cos_1d = _elementwise(cos32)


def _apply(loop, x) -> np.ndarray:
    shape = np.shape(x)  # as_f32 turns a 0-d array into a 1-d one
    a = as_f32(x)
    out = np.empty(a.size, dtype=np.float32)
    loop(a.size, a.reshape(-1), out)
    return out.reshape(shape)


def exp(x: np.ndarray) -> np.ndarray:
    """e^x elementwise; bit-identical to `reference.transcendental.exp`."""
    return _apply(_exp_1d, x)


def log(x: np.ndarray) -> np.ndarray:
    """Natural log elementwise; bit-identical to `reference.transcendental.log`."""
    return _apply(_log_1d, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic sigmoid elementwise; bit-identical to `reference.transcendental.sigmoid`."""
    return _apply(_sigmoid_1d, x)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) elementwise; bit-identical to `reference.transcendental.silu`."""
    return _apply(_silu_1d, x)


def rsqrt(x: np.ndarray) -> np.ndarray:
    """1 / sqrt(x) elementwise; bit-identical to `reference.transcendental.rsqrt`."""
    return _apply(_rsqrt_1d, x)


def sin(x: np.ndarray) -> np.ndarray:
    """sin elementwise (NaN where |x| > 2^20); bit-identical to `reference.transcendental.sin`."""
    return _apply(_sin_1d, x)


def cos(x: np.ndarray) -> np.ndarray:
    """cos elementwise (NaN where |x| > 2^20); bit-identical to `reference.transcendental.cos`."""
    return _apply(_cos_1d, x)
