"""fp32 transcendentals (exp, log, sigmoid, silu, rsqrt, sin, cos) as the executable spec in numpy.

Every function takes a float32 array of any shape and returns a float32 array of the same shape.
Only correctly rounded IEEE operations are used: fp32 ``+ - * /``, ``sqrt``, ``fma`` (through
`fp.fma_ref`), plus exact operations (comparisons, selects, negation/abs, exact int<->float
conversions, bit manipulation of the float representation). ``sin``/``cos`` work internally in
fp64 with plain ``+ - *`` (also correctly rounded, no fma). No libm call is on the computation
path. The kernels in `bitswarm.repro.kernels.cpu.transcendental` perform the same operations in
the same order and are tested bit for bit against these functions.

Conventions shared by all functions:

* A NaN result is always the canonical quiet NaN ``0x7FC00000`` (payloads are not propagated,
  because devices disagree on them).
* Constants are given as exact float32 bit patterns (``_f32(0x...)``) or, for the fp64 ones, as
  exact ``float.fromhex`` literals; the decimal in the comment is informative only.
* ``fma(a, b, c)`` below means the correctly rounded fp32 ``a*b + c``; "Horner with fma" means
  ``q = cN; q = fma(q, r, cN-1); ...; q = fma(q, r, c0)``.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.fp import as_f32, fma_ref

__all__ = ["exp", "log", "sigmoid", "silu", "rsqrt", "sin", "cos"]


def _f32(bits: int) -> np.float32:
    """The float32 whose IEEE bit pattern is `bits`."""
    return np.array(bits, dtype=np.uint32).view(np.float32)[()]


ONE = np.float32(1.0)
TWO = np.float32(2.0)
ZERO = np.float32(0.0)
NEG_ZERO = np.float32(-0.0)
INF = np.float32(np.inf)
QNAN = _f32(0x7FC00000)  # the one NaN every function returns

# ---- exp ----------------------------------------------------------------------------------
EXP_XMAX = np.float32(89.0)  # exp(x) > FLT_MAX for x >= 88.72284; clamping keeps 2^k buildable
EXP_XMIN = np.float32(-110.0)  # exp(x) rounds to 0 from -103.97209 down; silu needs to -108.7
EXP_MAGIC = _f32(0x4B400000)  # 1.5 * 2^23: adding it rounds |t| < 2^22 to an integer (RNE)
EXP_MAGIC_BITS = np.int32(0x4B400000)
LOG2E = _f32(0x3FB8AA3B)  # 1.44269502 = fl(1/ln 2)
EXP_LN2_HI = _f32(0x3F317218)  # 0.693147182 = fl(ln 2)
EXP_LN2_LO = _f32(0xB102E308)  # -1.90465421e-09 = fl(ln 2 - EXP_LN2_HI)
# exp(r) ~ 1 + r + c2 r^2 + ... + c6 r^6 on |r| <= 0.3466, near-minimax in relative error
# (fitted offline, coefficients rounded to fp32 one by one and the rest refitted): 2^-28.2
EXP_C2 = _f32(0x3EFFFFFE)  # 0.49999994
EXP_C3 = _f32(0x3E2AAA49)  # 0.16666521
EXP_C4 = _f32(0x3D2AAC55)  # 0.041668255
EXP_C5 = _f32(0x3C091CB5)  # 0.0083686607
EXP_C6 = _f32(0x3AB52905)  # 0.0013821429

# ---- log ----------------------------------------------------------------------------------
LOG_SQRT_HALF_BITS = np.int32(0x3F3504F3)  # bits of fl(sqrt(1/2)) = 0.70710677
LOG_TWO23 = _f32(0x4B000000)  # 2^23, lifts a subnormal into the normal range exactly
LOG_MIN_NORMAL = _f32(0x00800000)  # 2^-126
LOG_LN2_HI = _f32(0x3F317200)  # 0.693145752: ln 2 to 15 bits, so e * LOG_LN2_HI is exact
LOG_LN2_LO = _f32(0x35BFBE8E)  # 1.42860677e-06 = fl(ln 2 - LOG_LN2_HI)
# R(z) = z*(L1 + L2 z + L3 z^2 + L4 z^3) ~ (2 atanh(s) - 2 s)/s, z = s^2, |s| <= 0.1716;
# near-minimax absolute error 2^-34.2 (fitted offline as for exp)
LOG_L1 = _f32(0x3F2AAAAA)  # 0.66666663
LOG_L2 = _f32(0x3ECCCE13)  # 0.40000972
LOG_L3 = _f32(0x3E91E9E8)  # 0.28498769
LOG_L4 = _f32(0x3E78A045)  # 0.24279888

# ---- sin / cos (fp64 internally) ----------------------------------------------------------
TRIG_XMAX = np.float32(2.0**20)  # the domain |x| <= 2^20; outside it sin/cos return NaN
TWO_OVER_PI = float.fromhex("0x1.45f306dc9c883p-1")  # 0.6366197723675814
TRIG_MAGIC = float.fromhex("0x1.8p+52")  # 1.5 * 2^52: rounds |t| < 2^51 to an integer (RNE)
# pi/2 = PIO2_1 + PIO2_2 + PIO2_3 + O(2^-122). PIO2_1 and PIO2_2 have <= 32 significant bits, so
# k * PIO2_i is exact in fp64 for |k| < 2^21, and x - k*PIO2_1 is exact (both on a 2^-32 grid).
PIO2_1 = float.fromhex("0x1.921fb544p+0")  # 1.5707963267341256
PIO2_2 = float.fromhex("0x1.0b4611a6p-34")  # 6.077100506303966e-11
PIO2_3 = float.fromhex("0x1.3198a2e037073p-69")  # 2.0222662487959506e-21
# Taylor coefficients (-1)^n/(2n+1)! and (-1)^n/(2n)!, each rounded to fp64; on |r| <= pi/4 the
# truncation error is below 2^-44 relative, far under an fp32 ulp.
SIN_S = tuple(
    float.fromhex(h)
    for h in (
        "-0x1.5555555555555p-3",
        "0x1.1111111111111p-7",
        "-0x1.a01a01a01a01ap-13",
        "0x1.71de3a556c734p-19",
        "-0x1.ae64567f544e4p-26",
        "0x1.6124613a86d09p-33",
    )
)
COS_C = tuple(
    float.fromhex(h)
    for h in (
        "-0x1.0000000000000p-1",
        "0x1.5555555555555p-5",
        "-0x1.6c16c16c16c17p-10",
        "0x1.a01a01a01a01ap-16",
        "-0x1.27e4fb7789f5cp-22",
        "0x1.1eed8eff8d898p-29",
    )
)


def _pow2(k: np.ndarray) -> np.ndarray:
    """2^k as float32 for int32 k in [-126, 127], built from the exponent bits."""
    return ((k + np.int32(127)) << np.int32(23)).astype(np.int32).view(np.float32)


def _exp_parts(x: np.ndarray):
    """exp(x) ~ (p * s1) * s2 before the last fp32 rounding; x float32, clamped, NaN-free, 1-D.

    Returns (q, r, s1, s2); the callers form p = fma(q, r, 1).
    t = fma(x, LOG2E, MAGIC)                 (t - MAGIC = k = x*LOG2E rounded to an integer)
    k = t - MAGIC;  ki = bits(t) - bits(MAGIC)
    r = fma(-k, EXP_LN2_HI, x)               (exact: both terms lie on a common 2^-25 grid)
    r = fma(-k, EXP_LN2_LO, r)
    q = fma(C6, r, C5); q = fma(q, r, C4); q = fma(q, r, C3); q = fma(q, r, C2)
    q = fma(q, r, 1)                         (then p = fma(q, r, 1) in [0.7, 1.42])
    k1 = ki >> 1 (floor), k2 = ki - k1;  s1 = 2^k1, s2 = 2^k2 (normal numbers)
    p * s1 is exact, so (p * s1) * s2 rounds once, also into the subnormal range or to inf.
    """
    t = fma_ref(x, LOG2E, EXP_MAGIC)
    k = t - EXP_MAGIC
    ki = t.view(np.int32) - EXP_MAGIC_BITS
    r = fma_ref(-k, EXP_LN2_HI, x)
    r = fma_ref(-k, EXP_LN2_LO, r)
    q = fma_ref(EXP_C6, r, EXP_C5)
    q = fma_ref(q, r, EXP_C4)
    q = fma_ref(q, r, EXP_C3)
    q = fma_ref(q, r, EXP_C2)
    q = fma_ref(q, r, ONE)
    k1 = ki >> np.int32(1)
    k2 = ki - k1
    return q, r, _pow2(k1), _pow2(k2)


def _clamp_exp_arg(x: np.ndarray) -> np.ndarray:
    """x clamped to [EXP_XMIN, EXP_XMAX] with two compare-selects; NaN becomes EXP_XMAX."""
    xc = np.where(x < EXP_XMAX, x, EXP_XMAX)
    return np.where(xc > EXP_XMIN, xc, EXP_XMIN)


def _unary(fn, x):
    """Apply a 1-D float32 implementation to an array of any shape."""
    shape = np.shape(x)
    a = as_f32(x)
    with np.errstate(all="ignore"):
        y = fn(a.reshape(-1))
    return y.astype(np.float32, copy=False).reshape(shape)


def _exp(x):
    q, r, s1, s2 = _exp_parts(_clamp_exp_arg(x))
    y = (fma_ref(q, r, ONE) * s1) * s2
    return np.where(x != x, QNAN, y)


def exp(x: np.ndarray) -> np.ndarray:
    """e^x, max error 1 ulp (exhaustive check), subnormal results with one rounding.

    xc = x clamped to [-110, 89] (compare-select: xc = x < 89 ? x : 89; xc = xc > -110 ? xc : -110)
    exp(x) = (fma(q, r, 1) * s1) * s2 with (q, r, s1, s2) from `_exp_parts(xc)` (range reduction
    x = k ln2 + r, |r| <= ln2/2, degree-6 polynomial with fma Horner, scaling by 2^k in two
    exact power-of-two factors so that the last multiply is the only rounding).
    Special values: exp(+-0) = 1, exp(-inf) = 0, exp(+inf) = inf, x >= 88.72284 -> inf,
    x <= -103.97209 -> 0, NaN -> canonical NaN.
    """
    return _unary(_exp, x)


def _log(x):
    ok = (x > ZERO) & (x < INF)  # NaN fails both
    xw = np.where(ok, x, ONE)
    sub = xw < LOG_MIN_NORMAL
    xw = np.where(sub, xw * LOG_TWO23, xw)
    ix = xw.view(np.int32) - LOG_SQRT_HALF_BITS
    e = ((ix >> np.int32(23)) - np.where(sub, np.int32(23), np.int32(0))).astype(np.float32)
    m = ((ix & np.int32(0x007FFFFF)) + LOG_SQRT_HALF_BITS).view(np.float32)
    f = m - ONE
    s = f / (TWO + f)
    z = s * s
    u = fma_ref(LOG_L4, z, LOG_L3)
    u = fma_ref(u, z, LOG_L2)
    u = fma_ref(u, z, LOG_L1)
    w = fma_ref(-z, u, f)
    ph = e * LOG_LN2_HI
    hi = ph + f
    lo = f - (hi - ph)
    lo = fma_ref(e, LOG_LN2_LO, lo)
    lo = fma_ref(-s, w, lo)
    y = hi + lo
    y = np.where(ok, y, np.where(x == ZERO, -INF, np.where(x == INF, INF, QNAN)))
    return y


def log(x: np.ndarray) -> np.ndarray:
    """Natural logarithm, max error 1 ulp (exhaustive check).

    Special values: log(+-0) = -inf, log(+inf) = inf, log(x < 0) = log(NaN) = canonical NaN,
    log(1) = +0. Finite x > 0 (the others take the path with x = 1 and are replaced at the end):
      subnormal x: x = x * 2^23 (exact), eadj = -23, else eadj = 0
      ix = bits(x) - bits(fl(sqrt(1/2)));  e = (ix >> 23) + eadj  (as float32, exact)
      m = float((ix & 0x7FFFFF) + bits(fl(sqrt(1/2))))  -> x = 2^e * m, m in [0.7071, 1.4142)
      f = m - 1 (exact);  s = f / (2 + f);  z = s * s
      u = fma(L4, z, L3); u = fma(u, z, L2); u = fma(u, z, L1)
      w = fma(-z, u, f)                                   (= f - R, R = z*u)
      log(m) = log1p(f) = 2 atanh(s) = f - s*(f - R)      (since 2s = f - s*f)
      ph = e * LOG_LN2_HI (exact);  hi = ph + f;  lo = f - (hi - ph)   (Fast2Sum: hi + lo
           = ph + f exactly, since |ph| >= |f| or ph = 0)
      lo = fma(e, LOG_LN2_LO, lo);  lo = fma(-s, w, lo);  y = hi + lo
    """
    return _unary(_log, x)


def _sig_core(x):
    """Shared by sigmoid and silu (see `sigmoid`): q0, c and the scales, 1 where x >= 0."""
    a = -np.abs(x)
    a = np.where(a > EXP_XMIN, a, EXP_XMIN)
    q, r, s1, s2 = _exp_parts(a)
    p = fma_ref(q, r, ONE)
    pl = fma_ref(q, r, ONE - p)  # rounding error of p (1 - p is exact): p + pl ~ 1 + q*r
    e = (p * s1) * s2
    dh = ONE + e
    dl = e - (dh - ONE)  # Fast2Sum: dh + dl = 1 + e exactly
    inv = ONE / dh
    neg = x < ZERO
    n = np.where(neg, p, ONE)
    nl = np.where(neg, pl, ZERO)
    q0 = n * inv
    rem = fma_ref(-q0, dh, n)
    t = fma_ref(-q0, dl, rem + nl)
    c = t * inv
    one = np.full_like(x, ONE)
    return q0, c, np.where(neg, s1, one), np.where(neg, s2, one)


def _sigmoid(x):
    q0, c, sc1, sc2 = _sig_core(x)
    y = ((q0 + c) * sc1) * sc2
    return np.where(x != x, QNAN, y)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), max error 1 ulp; saturates to exactly 1 and to 0 (through subnormals).

    a = -|x|, clamped: a = a > -110 ? a : -110;  (q, r, s1, s2) = `_exp_parts(a)`
    p = fma(q, r, 1);  pl = fma(q, r, 1 - p)                       (p + pl ~ exp(r))
    e = (p * s1) * s2  (= exp(a), in [0, 1]);  dh = 1 + e;  dl = e - (dh - 1)   (dh + dl = 1 + e)
    inv = 1 / dh;  (n, nl) = (p, pl) if x < 0 else (1, 0)
                                    (x < 0: sigmoid(x) = e/(1+e) = (p + pl)/(1+e) * 2^k)
    q0 = n * inv;  rem = fma(-q0, dh, n);  t = fma(-q0, dl, rem + nl)   (t ~ n + nl - q0*(1+e))
    c = t * inv;  y = q0 + c
    x < 0: y = (y * s1) * s2 (one rounding, also into subnormals); x >= 0: y as is.
    NaN -> canonical NaN. Never NaN for non-NaN x: sigmoid(+inf) = 1, sigmoid(-inf) = 0.
    """
    return _unary(_sigmoid, x)


def _silu(x):
    xs = np.where(x > EXP_XMIN, x, EXP_XMIN)  # silu(x) rounds to -0 below -108.7; NaN -> -110
    q0, c, sc1, sc2 = _sig_core(xs)
    v = fma_ref(xs, q0, xs * c)
    y = (v * sc1) * sc2
    y = np.where(x == INF, INF, y)
    return np.where(x != x, QNAN, y)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), max error 1 ulp; silu(-inf) = -0.0, silu(+inf) = inf, NaN -> NaN.

    xs = x > -110 ? x : -110   (below -108.7 the true result rounds to -0; this also maps -inf)
    q0, c, s1, s2 as in `sigmoid` evaluated at xs (sigmoid(xs) = (q0 + c) * scale)
    v = fma(xs, q0, xs * c)     (x*q0 exact inside the fma, so one rounding for x*sigmoid)
    xs < 0: y = (v * s1) * s2, else y = v;   x = +inf: y = inf (v would be inf*0 = NaN)
    """
    return _unary(_silu, x)


def _rsqrt(x):
    y = ONE / np.sqrt(x)
    return np.where(y != y, QNAN, y)


def rsqrt(x: np.ndarray) -> np.ndarray:
    """1 / sqrt(x): two correctly rounded fp32 operations, max error 1 ulp.

    rsqrt(+0) = inf, rsqrt(-0) = -inf, rsqrt(inf) = 0, rsqrt(x < 0) = rsqrt(NaN) = canonical NaN.
    """
    return _unary(_rsqrt, x)


def _sincos(x, shift: int):
    """sin (shift 0) or cos (shift 1) of float32 x, computed in fp64, rounded once to fp32."""
    ok = np.abs(x) <= TRIG_XMAX  # NaN and inf fail
    xd = np.where(ok, x, ZERO).astype(np.float64)
    t = xd * TWO_OVER_PI
    k = (t + TRIG_MAGIC) - TRIG_MAGIC
    r = xd - k * PIO2_1
    r = r - k * PIO2_2
    r = r - k * PIO2_3
    z = r * r
    ps = SIN_S[5]
    for cf in SIN_S[4::-1]:
        ps = ps * z + cf
    sn = r * (ps * z + 1.0)
    pc = COS_C[5]
    for cf in COS_C[4::-1]:
        pc = pc * z + cf
    cs = pc * z + 1.0
    n = (k.astype(np.int64) + shift) & 3
    y = np.where((n & 1) == 1, cs, sn)
    y = np.where((n & 2) == 2, -y, y)
    return np.where(ok, y.astype(np.float32), QNAN)


def sin(x: np.ndarray) -> np.ndarray:
    """sin(x) for |x| <= 2^20 (NaN outside, also for inf and NaN); max error 1 ulp (exhaustive).

    In fp64 (every step one correctly rounded op; no fma, no contraction), X = float64(x):
      t = X * TWO_OVER_PI;  k = (t + 1.5*2^52) - 1.5*2^52       (nearest integer, |k| < 2^20)
      r = X - k*PIO2_1;  r = r - k*PIO2_2;  r = r - k*PIO2_3         (|r| <= pi/4 + 2^-30;
          k*PIO2_1, k*PIO2_2 and the first subtraction are exact, the rest rounds at 2^-53)
      z = r*r
      ps = S6; ps = ps*z + S5; ...; ps = ps*z + S1;  sn = r * (ps*z + 1)      (sin r)
      pc = C6; pc = pc*z + C5; ...; pc = pc*z + C1;  cs = pc*z + 1             (cos r)
      n = k mod 4 (two's complement k & 3):  y = sn, cs, -sn, -cs for n = 0, 1, 2, 3
    Result float32(y) (one RNE conversion). sin(-0) = -0: r = -0 and r * (...) keeps the sign.
    """
    return _unary(lambda a: _sincos(a, 0), x)


def cos(x: np.ndarray) -> np.ndarray:
    """cos(x) for |x| <= 2^20 (NaN outside); the `sin` computation with n = (k + 1) mod 4."""
    return _unary(lambda a: _sincos(a, 1), x)
