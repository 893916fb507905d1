"""fp.fma_ref (numpy emulation) is the hardware fma (fp.fma32) bit for bit, and correctly rounded."""

from fractions import Fraction

import numba
import numpy as np

from bitswarm.repro.fp import fma32, fma_ref, ulp_distance


@numba.njit
def _hw(a, b, c, out):
    for i in range(a.size):
        out[i] = fma32(a[i], b[i], c[i])


def _same(x, y):
    return (x.view(np.uint32) == y.view(np.uint32)) | (np.isnan(x) & np.isnan(y))


def _check(a, b, c):
    out = np.empty_like(a)
    _hw(a, b, c, out)
    ref = fma_ref(a, b, c)
    bad = ~_same(out, ref)
    assert not bad.any(), (a[bad][:3], b[bad][:3], c[bad][:3], out[bad][:3], ref[bad][:3])


def test_random_bit_patterns():
    rng = np.random.default_rng(0)
    n = 300_000
    a, b, c = (rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32) for _ in range(3))
    _check(a, b, c)


def test_cancellation_and_ties():
    rng = np.random.default_rng(1)
    n = 300_000
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    c = (-(a.astype(np.float64) * b) * (1 + rng.standard_normal(n) * 1e-7)).astype(np.float32)
    _check(a, b, c)


def test_subnormals_and_specials():
    rng = np.random.default_rng(2)
    n = 200_000
    sub = rng.integers(1, 2**23, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    small = (rng.standard_normal(n) * 1e-20).astype(np.float32)
    _check(small, small, sub)
    _check(sub, np.full(n, 3.0, np.float32), -sub)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0], np.float32)
    a, b, c = (x.ravel() for x in np.meshgrid(specials, specials, specials))
    _check(a.copy(), b.copy(), c.copy())


def test_correctly_rounded_against_exact_rationals():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(2000).astype(np.float32)
    b = rng.standard_normal(2000).astype(np.float32)
    c = rng.standard_normal(2000).astype(np.float32) * np.float32(1e-3)
    got = fma_ref(a, b, c)
    for x, y, z, g in zip(a, b, c, got):
        exact = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
        lo, hi = np.nextafter(g, np.float32(-np.inf)), np.nextafter(g, np.float32(np.inf))
        err = abs(Fraction(float(g)) - exact)
        assert err <= abs(Fraction(float(lo)) - exact) and err <= abs(Fraction(float(hi)) - exact)


def test_ulp_distance():
    one = np.float32(1)
    assert ulp_distance(np.array([one]), np.array([np.nextafter(one, np.float32(2))]))[0] == 1
    assert ulp_distance(np.array([np.float32(-0.0)]), np.array([np.float32(0.0)]))[0] == 0
    assert ulp_distance(np.array([np.nan], np.float32), np.array([np.nan], np.float32))[0] == 0
