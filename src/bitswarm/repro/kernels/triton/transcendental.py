"""triton fp32 transcendentals, bit-identical to `bitswarm.repro.reference.transcendental`.

The device functions (`exp32`, `log32`, `sigmoid32`, `silu32`, `rsqrt32`, `sin32`, `cos32`) are
`@triton.jit` functions of one fp32 tensor (any block shape) that other kernels call inline; they
perform exactly the operations the reference module documents, in the same order, with its
constants. They are ports of the numba scalar functions in `kernels.cpu.transcendental`:
an explicit `tl.fma` where the spec says fma, `tl.math.div_rn` for its divisions, `tl.math.sqrt_rn`
for its square root, and the bit tricks through `.to(..., bitcast=True)`. The callers launch with
`runtime.LAUNCH`, so the compiler contracts no other multiply-add. sin/cos work in fp64 with plain
``+ - *``, as the spec does.

Every constant is materialised from its exact bit pattern (`_f32` / `_f64`): a Python float in a
kernel would be typed by triton's promotion rules, not by the spec.

The array functions (`exp`, `log`, ...) take float32 arrays of any shape and run one elementwise
kernel.
"""

from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from bitswarm.repro.fp import as_f32

# importing runtime sets TRITON_INTERPRET (no GPU) before the @triton.jit decorators below run
from bitswarm.repro.kernels.triton.runtime import LAUNCH, empty, to_device, to_host
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


def _bits32(v) -> tl.constexpr:
    """The IEEE bits of float32 `v` as a signed int32 value (what `tl.full(..., tl.int32)` takes)."""
    return tl.constexpr(int(np.array(v, dtype=np.float32).view(np.int32)))


def _bits64(v) -> tl.constexpr:
    """The IEEE bits of float64 `v` as a signed int64 value."""
    return tl.constexpr(int(np.array(v, dtype=np.float64).view(np.int64)))


# The reference's constants as bit patterns (triton only lets a kernel read constexpr globals).
ONE = _bits32(_ref.ONE)
TWO = _bits32(_ref.TWO)
ZERO = _bits32(_ref.ZERO)
INF = _bits32(_ref.INF)
NEG_INF = _bits32(-_ref.INF)
QNAN = _bits32(_ref.QNAN)
EXP_XMAX = _bits32(_ref.EXP_XMAX)
EXP_XMIN = _bits32(_ref.EXP_XMIN)
EXP_MAGIC = _bits32(_ref.EXP_MAGIC)
EXP_MAGIC_BITS = tl.constexpr(int(_ref.EXP_MAGIC_BITS))
LOG2E = _bits32(_ref.LOG2E)
EXP_LN2_HI = _bits32(_ref.EXP_LN2_HI)
EXP_LN2_LO = _bits32(_ref.EXP_LN2_LO)
EXP_C2 = _bits32(_ref.EXP_C2)
EXP_C3 = _bits32(_ref.EXP_C3)
EXP_C4 = _bits32(_ref.EXP_C4)
EXP_C5 = _bits32(_ref.EXP_C5)
EXP_C6 = _bits32(_ref.EXP_C6)
LOG_SQRT_HALF_BITS = tl.constexpr(int(_ref.LOG_SQRT_HALF_BITS))
LOG_TWO23 = _bits32(_ref.LOG_TWO23)
LOG_MIN_NORMAL = _bits32(_ref.LOG_MIN_NORMAL)
LOG_LN2_HI = _bits32(_ref.LOG_LN2_HI)
LOG_LN2_LO = _bits32(_ref.LOG_LN2_LO)
LOG_L1 = _bits32(_ref.LOG_L1)
LOG_L2 = _bits32(_ref.LOG_L2)
LOG_L3 = _bits32(_ref.LOG_L3)
LOG_L4 = _bits32(_ref.LOG_L4)
TRIG_XMAX = _bits32(_ref.TRIG_XMAX)
TWO_OVER_PI = _bits64(_ref.TWO_OVER_PI)
TRIG_MAGIC = _bits64(_ref.TRIG_MAGIC)
PIO2_1 = _bits64(_ref.PIO2_1)
PIO2_2 = _bits64(_ref.PIO2_2)
PIO2_3 = _bits64(_ref.PIO2_3)
D_ONE = _bits64(1.0)
S1, S2, S3, S4, S5, S6 = (_bits64(c) for c in _ref.SIN_S)
C1, C2, C3, C4, C5, C6 = (_bits64(c) for c in _ref.COS_C)


@triton.jit
def _f32(bits: tl.constexpr):
    """The fp32 scalar whose bit pattern is `bits`."""
    return tl.full([], bits, tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _f64(bits: tl.constexpr):
    """The fp64 scalar whose bit pattern is `bits`."""
    return tl.full([], bits, tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def _pow2(k):
    """2^k as fp32 for int32 k in [-126, 127], built from the exponent bits."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _exp_parts(x):
    """(q, r, s1, s2) of the reference `_exp_parts` for a clamped, NaN-free fp32 x."""
    magic = _f32(EXP_MAGIC)
    t = tl.fma(x, _f32(LOG2E), magic)
    k = t - magic
    ki = t.to(tl.int32, bitcast=True) - EXP_MAGIC_BITS
    r = tl.fma(-k, _f32(EXP_LN2_HI), x)
    r = tl.fma(-k, _f32(EXP_LN2_LO), r)
    q = tl.fma(_f32(EXP_C6), r, _f32(EXP_C5))
    q = tl.fma(q, r, _f32(EXP_C4))
    q = tl.fma(q, r, _f32(EXP_C3))
    q = tl.fma(q, r, _f32(EXP_C2))
    q = tl.fma(q, r, _f32(ONE))
    k1 = ki >> 1  # arithmetic shift: floor, as the spec's int32 >>
    k2 = ki - k1
    return q, r, _pow2(k1), _pow2(k2)


@triton.jit
def exp32(x):
    """e^x for an fp32 tensor; see `reference.transcendental.exp`."""
    xmax = _f32(EXP_XMAX)
    xmin = _f32(EXP_XMIN)
    xc = tl.where(x < xmax, x, xmax)  # NaN -> EXP_XMAX, replaced below
    xc = tl.where(xc > xmin, xc, xmin)
    q, r, s1, s2 = _exp_parts(xc)
    y = (tl.fma(q, r, _f32(ONE)) * s1) * s2
    return tl.where(x != x, _f32(QNAN), y)


@triton.jit
def log32(x):
    """Natural log of an fp32 tensor; see `reference.transcendental.log`."""
    one = _f32(ONE)
    zero = _f32(ZERO)
    inf = _f32(INF)
    ok = (x > zero) & (x < inf)  # NaN fails both
    xw = tl.where(ok, x, one)
    sub = xw < _f32(LOG_MIN_NORMAL)
    xw = tl.where(sub, xw * _f32(LOG_TWO23), xw)
    ix = xw.to(tl.int32, bitcast=True) - LOG_SQRT_HALF_BITS
    e = ((ix >> 23) - tl.where(sub, 23, 0)).to(tl.float32)
    m = ((ix & 0x007FFFFF) + LOG_SQRT_HALF_BITS).to(tl.float32, bitcast=True)
    f = m - one
    s = tl.math.div_rn(f, _f32(TWO) + f)
    z = s * s
    u = tl.fma(_f32(LOG_L4), z, _f32(LOG_L3))
    u = tl.fma(u, z, _f32(LOG_L2))
    u = tl.fma(u, z, _f32(LOG_L1))
    w = tl.fma(-z, u, f)
    ph = e * _f32(LOG_LN2_HI)
    hi = ph + f
    lo = f - (hi - ph)
    lo = tl.fma(e, _f32(LOG_LN2_LO), lo)
    lo = tl.fma(-s, w, lo)
    y = hi + lo
    special = tl.where(x == zero, _f32(NEG_INF), tl.where(x == inf, inf, _f32(QNAN)))
    return tl.where(ok, y, special)


@triton.jit
def _sig_core(x):
    """(q0, c, sc1, sc2) of the reference `_sig_core` for a NaN-free fp32 x."""
    one = _f32(ONE)
    zero = _f32(ZERO)
    xmin = _f32(EXP_XMIN)
    a = -tl.abs(x)
    a = tl.where(a > xmin, a, xmin)
    q, r, s1, s2 = _exp_parts(a)
    p = tl.fma(q, r, one)
    pl = tl.fma(q, r, one - p)
    e = (p * s1) * s2
    dh = one + e
    dl = e - (dh - one)
    inv = tl.math.div_rn(one, dh)
    neg = x < zero
    n = tl.where(neg, p, one)
    nl = tl.where(neg, pl, zero)
    q0 = n * inv
    rem = tl.fma(-q0, dh, n)
    t = tl.fma(-q0, dl, rem + nl)
    c = t * inv
    return q0, c, tl.where(neg, s1, one), tl.where(neg, s2, one)


@triton.jit
def sigmoid32(x):
    """1 / (1 + e^-x) for an fp32 tensor; see `reference.transcendental.sigmoid`."""
    q0, c, sc1, sc2 = _sig_core(x)
    y = ((q0 + c) * sc1) * sc2
    return tl.where(x != x, _f32(QNAN), y)


@triton.jit
def silu32(x):
    """x * sigmoid(x) for an fp32 tensor; see `reference.transcendental.silu`."""
    xmin = _f32(EXP_XMIN)
    inf = _f32(INF)
    xs = tl.where(x > xmin, x, xmin)
    q0, c, sc1, sc2 = _sig_core(xs)
    v = tl.fma(xs, q0, xs * c)
    y = (v * sc1) * sc2
    y = tl.where(x == inf, inf, y)
    return tl.where(x != x, _f32(QNAN), y)


@triton.jit
def rsqrt32(x):
    """1 / sqrt(x) for an fp32 tensor: two correctly rounded fp32 operations."""
    y = tl.math.div_rn(_f32(ONE), tl.math.sqrt_rn(x))
    return tl.where(y != y, _f32(QNAN), y)


@triton.jit
def _sincos(x, SHIFT: tl.constexpr):
    """sin (SHIFT 0) or cos (SHIFT 1) of an fp32 tensor; see `reference.transcendental.sin`."""
    ok = tl.abs(x) <= _f32(TRIG_XMAX)  # NaN and inf fail
    xd = tl.where(ok, x, _f32(ZERO)).to(tl.float64)
    magic = _f64(TRIG_MAGIC)
    t = xd * _f64(TWO_OVER_PI)
    k = (t + magic) - magic
    r = xd - k * _f64(PIO2_1)
    r = r - k * _f64(PIO2_2)
    r = r - k * _f64(PIO2_3)
    z = r * r
    ps = _f64(S6) * z + _f64(S5)
    ps = ps * z + _f64(S4)
    ps = ps * z + _f64(S3)
    ps = ps * z + _f64(S2)
    ps = ps * z + _f64(S1)
    sn = r * (ps * z + _f64(D_ONE))
    pc = _f64(C6) * z + _f64(C5)
    pc = pc * z + _f64(C4)
    pc = pc * z + _f64(C3)
    pc = pc * z + _f64(C2)
    pc = pc * z + _f64(C1)
    cs = pc * z + _f64(D_ONE)
    n = (k.to(tl.int64) + SHIFT) & 3
    y = tl.where((n & 1) == 1, cs, sn)
    y = tl.where((n & 2) == 2, -y, y)
    return tl.where(ok, y.to(tl.float32), _f32(QNAN))


@triton.jit
def sin32(x):
    """sin(x) for an fp32 tensor, |x| <= 2^20 (NaN outside)."""
    return _sincos(x, 0)


@triton.jit
def cos32(x):
    """cos(x) for an fp32 tensor, |x| <= 2^20 (NaN outside)."""
    return _sincos(x, 1)


# ---- array functions: one program per BLOCK of independent elements ---------------------------

_EXP, _LOG, _SIGMOID, _SILU, _RSQRT, _SIN, _COS = range(7)
_BLOCK = 1024


@triton.jit
def _elementwise_kernel(x_ptr, y_ptr, n, OP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if OP == 0:
        y = exp32(x)
    elif OP == 1:
        y = log32(x)
    elif OP == 2:
        y = sigmoid32(x)
    elif OP == 3:
        y = silu32(x)
    elif OP == 4:
        y = rsqrt32(x)
    elif OP == 5:
        y = sin32(x)
    else:
        y = cos32(x)
    tl.store(y_ptr + offs, y, mask=mask)


def _apply(op: int, x) -> np.ndarray:
    shape = np.shape(x)  # as_f32 keeps a 0-d array 0-d; reshape below restores any shape
    a = as_f32(x).reshape(-1)
    n = a.size
    if n == 0:
        return np.empty(shape, dtype=np.float32)
    xt = to_device(a)
    yt = empty((n,))
    with np.errstate(all="ignore"):  # the interpreter's numpy would warn where the spec overflows
        _elementwise_kernel[(triton.cdiv(n, _BLOCK),)](xt, yt, n, OP=op, BLOCK=_BLOCK, **LAUNCH)
    return to_host(yt).reshape(shape)


def exp(x: np.ndarray) -> np.ndarray:
    """e^x elementwise; bit-identical to `reference.transcendental.exp`."""
    return _apply(_EXP, x)


def log(x: np.ndarray) -> np.ndarray:
    """Natural log elementwise; bit-identical to `reference.transcendental.log`."""
    return _apply(_LOG, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic sigmoid elementwise; bit-identical to `reference.transcendental.sigmoid`."""
    return _apply(_SIGMOID, x)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) elementwise; bit-identical to `reference.transcendental.silu`."""
    return _apply(_SILU, x)


def rsqrt(x: np.ndarray) -> np.ndarray:
    """1 / sqrt(x) elementwise; bit-identical to `reference.transcendental.rsqrt`."""
    return _apply(_RSQRT, x)


def sin(x: np.ndarray) -> np.ndarray:
    """sin elementwise (NaN where |x| > 2^20); bit-identical to `reference.transcendental.sin`."""
    return _apply(_SIN, x)


def cos(x: np.ndarray) -> np.ndarray:
    """cos elementwise (NaN where |x| > 2^20); bit-identical to `reference.transcendental.cos`."""
    return _apply(_COS, x)
