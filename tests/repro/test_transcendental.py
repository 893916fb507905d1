"""fp32 transcendentals: numba == numpy reference bit for bit, <= 2 ulp vs fp64, special values."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from bitswarm.repro.fp import ulp_distance
from bitswarm.repro.kernels.cpu import transcendental as cpu
from bitswarm.repro.reference import transcendental as ref

NAMES = ["exp", "log", "sigmoid", "silu", "rsqrt", "sin", "cos"]
MAX_ULP = 2
QNAN_BITS = 0x7FC00000


def f32bits(*bits: int) -> np.ndarray:
    return np.array(bits, dtype=np.uint32).view(np.float32)


def around(x: float, n: int) -> np.ndarray:
    """The 2n+1 consecutive float32 values centred on float32(x) (same sign)."""
    b = np.array(x, dtype=np.float32).view(np.int32)
    return (b + np.arange(-n, n + 1, dtype=np.int32)).view(np.float32)


def bits_of(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


_SPECIAL = f32bits(
    0x00000000, 0x00000001, 0x00000002, 0x007FFFFF, 0x00800000, 0x00800001, 0x7F7FFFFF,
    0x7F800000, 0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0x3F800000, 0x3F7FFFFF, 0x3F800001,
    0x3F3504F3, 0x3FB504F3, 0x4B400000, 0x49800000, 0x49800001, 0x497FFFFF,
)
SPECIALS = np.concatenate(
    [
        _SPECIAL,
        -_SPECIAL,
        np.array(
            [88.72283, 88.722839, 88.72284, 89.0, 90.0, 87.33654, 88.0, -87.33654, -87.33655,
             -103.972, -103.97207, -103.97208, -103.97209, -104.0, -108.7, -109.9, -110.0, -110.00001,
             -200.0, 17.0, 17.5, 18.0, 1e-8, 1e-30, 0.5, 2.0, 3.0, 1e6, 1048575.9,
             1.5707964, 3.1415927, 4.712389, 6.2831855, 1e-3, -1e-3, 16.0, -16.0, 30.0],
            dtype=np.float32,
        ),
    ]
)


# float32 values in |x| <= 2^20 that lie closest to a multiple of pi/2 (found offline by an
# exhaustive search; 0x437CE5F1 = 252.898 is 2^-27.8 away), the worst cases for the range
# reduction, plus fl(pi/2), fl(pi), fl(2 pi).
HARD_TRIG = f32bits(
    0x437CE5F1, 0x43FCE5F1, 0x4096CBE4, 0x474D246F, 0x447CE5F1, 0x4116CBE4, 0x47CD246F,
    0x44FCE5F1, 0x3FC90FDB, 0x40490FDB, 0x40C90FDB,
)


def random_bit_patterns(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def dense_inputs(name: str) -> np.ndarray:
    """Sweeps over the ranges where each function is interesting (thresholds, cancellation)."""
    rng = np.random.default_rng(1)
    u = lambda lo, hi, n: rng.uniform(lo, hi, n).astype(np.float32)  # noqa: E731
    if name == "exp":
        parts = [
            u(-110, 90, 600_000),
            u(-1, 1, 200_000),
            np.linspace(-104.0, -87.0, 300_000, dtype=np.float32),  # subnormal results
            around(88.72284, 20_000),  # overflow threshold
            around(-103.97208, 20_000),  # underflow to 0
            around(-87.33655, 20_000),  # normal -> subnormal results
            around(1e-8, 1000),
            -around(1e-8, 1000),
        ]
    elif name == "log":
        parts = [
            around(1.0, 100_000),  # both sides of 1, where log is tiny
            u(0.5, 2.0, 300_000),
            around(0.70710677, 5000),
            around(1.4142135, 5000),
            rng.integers(1, 1 << 23, 200_000).astype(np.uint32).view(np.float32),  # subnormals
            np.abs(random_bit_patterns(200_000, 2)),
        ]
    elif name in ("sigmoid", "silu"):
        parts = [
            u(-120, 40, 600_000),
            u(-2, 2, 200_000),
            np.linspace(-110.0, -86.0, 200_000, dtype=np.float32),  # subnormal outputs
            around(17.0, 20_000),  # saturation to 1
            around(-103.97, 20_000),
            around(-108.7, 20_000),
            around(1e-6, 1000),
            -around(1e-6, 1000),
        ]
    elif name == "rsqrt":
        parts = [
            np.abs(random_bit_patterns(300_000, 3)),
            rng.integers(1, 1 << 23, 100_000).astype(np.uint32).view(np.float32),
            u(0.25, 4.0, 100_000),
        ]
    else:  # sin, cos
        parts = [
            u(-(2.0**20), 2.0**20, 600_000),
            u(-4.0, 4.0, 200_000),
            u(-1e-3, 1e-3, 50_000),
            around(2.0**20, 5000),
            -around(2.0**20, 5000),
            # floats closest to multiples of pi/2, where range reduction cancels most
            np.concatenate([around(v, 200) for v in HARD_TRIG]),
        ]
    return np.concatenate(parts)


def truth(name: str, x: np.ndarray) -> np.ndarray:
    """The function in fp64 (libm), rounded to fp32."""
    with np.errstate(all="ignore"):
        xd = x.astype(np.float64)
        y = {
            "exp": lambda: np.exp(xd),
            "log": lambda: np.log(xd),
            "sigmoid": lambda: 1.0 / (1.0 + np.exp(-xd)),
            # silu(-inf) is defined as -0.0 (fp64 would give -inf/inf = NaN)
            "silu": lambda: np.where(xd == -np.inf, -0.0, xd / (1.0 + np.exp(-xd))),
            "rsqrt": lambda: 1.0 / np.sqrt(xd),
            "sin": lambda: np.sin(xd),
            "cos": lambda: np.cos(xd),
        }[name]()
        return y.astype(np.float32)


@pytest.fixture(scope="module")
def random_bits() -> np.ndarray:
    return random_bit_patterns(1_000_000)


# ---- (a) numba == reference, bit for bit -------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_numba_matches_reference_bitwise(name, random_bits):
    x = np.concatenate([random_bits, SPECIALS, dense_inputs(name)[::4]])
    got = getattr(cpu, name)(x)
    want = getattr(ref, name)(x)
    assert got.dtype == np.float32 and want.dtype == np.float32
    bad = np.flatnonzero(bits_of(got) != bits_of(want))
    assert bad.size == 0, (
        f"{name}: {bad.size} mismatches, e.g. x={x[bad[:5]]} numba={got[bad[:5]]} ref={want[bad[:5]]}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_scalar_kernels_inside_njit_match(name):
    scalar = getattr(cpu, name + "32")

    @numba.njit(cache=False)
    def loop(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = scalar(x[i])
        return out

    x = np.concatenate([SPECIALS, dense_inputs(name)[::97]])
    assert np.array_equal(bits_of(loop(x)), bits_of(getattr(ref, name)(x)))
    scalar(np.float32(0.75))  # also callable from Python; float32 in, float32 out
    assert [str(sig.return_type) for sig in scalar.nopython_signatures] == ["float32"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 5), (2, 3, 4)])
def test_shapes_are_kept(name, shape):
    x = np.random.default_rng(5).uniform(0.1, 3.0, shape).astype(np.float32)
    for impl in (ref, cpu):
        y = getattr(impl, name)(x)
        assert y.shape == x.shape and y.dtype == np.float32
    assert np.array_equal(bits_of(getattr(ref, name)(x)), bits_of(getattr(cpu, name)(x)))


def test_refuses_other_dtypes():
    with pytest.raises(TypeError):
        ref.exp(np.zeros(3, dtype=np.float64))
    with pytest.raises(TypeError):
        cpu.exp(np.zeros(3, dtype=np.float64))


# ---- (b) accuracy against fp64 ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_within_2_ulp(name, random_bits):
    x = np.concatenate([random_bits, SPECIALS, dense_inputs(name)])
    if name in ("sin", "cos"):
        x = x[np.abs(x) <= ref.TRIG_XMAX]
    got = getattr(cpu, name)(x)
    want = truth(name, x)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{name}: NaN differs from fp64"
    finite = np.isfinite(want)
    assert np.array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    d = ulp_distance(got[finite], want[finite])
    worst = int(np.argmax(d))
    xw, gw, ww = x[finite][worst], got[finite][worst], want[finite][worst]
    assert d[worst] <= MAX_ULP, f"{name}({xw!r}) = {gw!r}, fp64 says {ww!r}"


# ---- (c) special values -----------------------------------------------------------------------


@pytest.fixture(params=["ref", "cpu"])
def impl(request):
    return ref if request.param == "ref" else cpu


def ev(impl, name, *xs) -> np.ndarray:
    return getattr(impl, name)(np.array(xs, dtype=np.float32))


def same_bits(a, b) -> bool:
    return np.array_equal(bits_of(a), bits_of(np.asarray(b, dtype=np.float32)))


def test_nan_results_are_canonical(impl):
    nans = f32bits(0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC12345)
    for name in NAMES:
        assert np.all(bits_of(getattr(impl, name)(nans)) == QNAN_BITS), name
    assert np.all(bits_of(ev(impl, "log", -1.0, -np.inf, -1e-45)) == QNAN_BITS)
    assert np.all(bits_of(ev(impl, "rsqrt", -1.0, -np.inf, -1e-45)) == QNAN_BITS)


def test_exp_special_values(impl):
    assert same_bits(ev(impl, "exp", -np.inf, np.inf, 0.0, -0.0), [0.0, np.inf, 1.0, 1.0])
    assert same_bits(ev(impl, "exp", 88.72284, 89.0, 1e30, 3.4e38), [np.inf] * 4)
    assert np.isfinite(ev(impl, "exp", 88.72283)[0])
    # exp(x) < 2^-150 (half the smallest subnormal) from -103.97209 down
    assert same_bits(ev(impl, "exp", -103.97209, -104.0, -1e30, -3.4e38), [0.0] * 4)
    assert same_bits(ev(impl, "exp", -103.97208, -103.972), f32bits(0x00000001, 0x00000001))
    # every float in the subnormal-result range is within 1 ulp of the truth
    x = np.linspace(-103.97, -87.34, 100_000, dtype=np.float32)
    y = getattr(impl, "exp")(x)
    assert np.all(y < np.float32(2.0**-126)) and np.all(y > 0)
    assert ulp_distance(y, truth("exp", x)).max() <= 1


def test_log_special_values(impl):
    assert same_bits(ev(impl, "log", 0.0, -0.0, np.inf, 1.0), [-np.inf, -np.inf, np.inf, 0.0])
    sub = f32bits(0x00000001, 0x00000002, 0x00012345, 0x007FFFFF)
    assert ulp_distance(getattr(impl, "log")(sub), truth("log", sub)).max() <= 1
    assert ev(impl, "log", 1.0000001)[0] > 0 and ev(impl, "log", 0.99999994)[0] < 0


def test_sigmoid_saturation(impl):
    assert same_bits(ev(impl, "sigmoid", np.inf, -np.inf, 0.0, -0.0), [1.0, 0.0, 0.5, 0.5])
    big = np.linspace(17.4, 1e6, 1000, dtype=np.float32)
    assert np.all(getattr(impl, "sigmoid")(big) == 1)
    assert np.all(getattr(impl, "sigmoid")(np.float32([15.0, 16.0, 16.6])) < 1)
    assert np.all(getattr(impl, "sigmoid")(np.linspace(-1e6, -104.0, 1000, dtype=np.float32)) == 0)
    assert np.all(getattr(impl, "sigmoid")(np.float32([-103.9, -90.0, -88.0])) > 0)
    x = random_bit_patterns(200_000, 7)
    x = x[np.isfinite(x)]
    y = getattr(impl, "sigmoid")(x)
    assert not np.any(np.isnan(y)) and np.all((y >= 0) & (y <= 1))


def test_silu_special_values(impl):
    assert same_bits(ev(impl, "silu", -np.inf, np.inf, 0.0, -0.0), [-0.0, np.inf, 0.0, -0.0])
    assert same_bits(ev(impl, "silu", -110.0, -1e30, -3.4e38), [-0.0] * 3)
    assert same_bits(ev(impl, "silu", 3.4e38, 1e30), [3.4e38, 1e30])
    # between -108.7 and -87 the result is subnormal although sigmoid(x) underflows earlier
    x = np.linspace(-108.5, -88.0, 20_000, dtype=np.float32)
    y = getattr(impl, "silu")(x)
    assert np.all(y < 0)
    assert ulp_distance(y, truth("silu", x)).max() <= MAX_ULP


def test_rsqrt_special_values(impl):
    got = ev(impl, "rsqrt", 0.0, -0.0, np.inf, 1.0, 4.0)
    assert same_bits(got, [np.inf, -np.inf, 0.0, 1.0, 0.5])
    assert same_bits(ev(impl, "rsqrt", 1e-45), [np.float32(1.0) / np.sqrt(np.float32(1e-45))])


def test_sin_cos_special_values(impl):
    assert same_bits(ev(impl, "sin", 0.0, -0.0), [0.0, -0.0])
    assert same_bits(ev(impl, "cos", 0.0, -0.0), [1.0, 1.0])
    tiny = f32bits(0x00000001, 0x80000001, 0x00800000, 0x39800000)  # sin(x) rounds to x
    assert same_bits(getattr(impl, "sin")(tiny), tiny)
    outside = np.float32([2.0**20 * (1 + 2.0**-23), -1048577.0, 1e30, np.inf, -np.inf])
    for name in ("sin", "cos"):
        assert np.all(bits_of(getattr(impl, name)(outside)) == QNAN_BITS)
        assert not np.any(np.isnan(getattr(impl, name)(np.float32([2.0**20, -(2.0**20)]))))
