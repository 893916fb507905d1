"""Matmul: the numpy spec (one fma chain per output, k increasing) and the numba kernel, bit for bit."""

from __future__ import annotations

import concurrent.futures
import threading

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitswarm.repro.fp import fma_ref
from bitswarm.repro.kernels.cpu import matmul as fast
from bitswarm.repro.reference import matmul as ref

F32 = np.float32


def same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    """Identical fp32 bits; NaN counts as equal to NaN (NaN payloads are not part of the spec)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape != y.shape or x.dtype != F32 or y.dtype != F32:
        return False
    eq = x.view(np.uint32) == y.view(np.uint32)
    return bool(np.all(eq | (np.isnan(x) & np.isnan(y))))


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


def special(rng, *shape):
    """Normal values mixed with ±0, subnormals, huge values, ±inf and NaN."""
    x = randn(rng, *shape)
    kind = rng.integers(0, 10, size=shape)
    x = np.where(kind == 1, rng.choice([0.0, -0.0], size=shape), x)
    x = np.where(kind == 2, randn(rng, *shape) * F32(1e-39), x)  # subnormal
    x = np.where(kind == 3, randn(rng, *shape) * F32(1e-20), x)  # products underflow
    x = np.where(kind == 4, randn(rng, *shape) * F32(1e19), x)  # products overflow
    x = np.where((kind == 5) & (rng.random(shape) < 0.1), rng.choice([np.inf, -np.inf], size=shape), x)
    x = np.where((kind == 6) & (rng.random(shape) < 0.05), np.nan, x)
    return x.astype(F32)


@pytest.fixture(params=["pool", "prange"])
def parallel_path(request, monkeypatch):
    """Make the kernel take its threaded path even for small problems (many edge tiles)."""
    monkeypatch.setattr(fast, "SERIAL_WORK", 0)
    monkeypatch.setattr(fast, "THREADING", request.param)


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


# ---------------------------------------------------------------- the spec itself


def test_reference_is_one_sequential_fma_chain():
    rng = np.random.default_rng(1)
    a, b, c = randn(rng, 3, 9), randn(rng, 9, 4), randn(rng, 3, 4)
    out = ref.matmul_acc(a, b, c.copy())
    for i in range(3):
        for j in range(4):
            acc = c[i, j]
            for k in range(9):
                acc = fma_ref(a[i, k], b[k, j], acc)
            assert same_bits(np.asarray(acc, F32), out[i, j])


def test_reference_order_is_sequential_not_pairwise():
    # (((0 + 1e8) + 1) - 1e8) = 0 in fp32 (1e8 + 1 rounds to 1e8); any other order can give 1.
    a = np.array([[1e8, 1.0, -1e8]], F32)
    b = np.ones((3, 1), F32)
    assert ref.matmul(a, b)[0, 0] == 0.0
    assert fast.matmul(a, b)[0, 0] == 0.0
    a2 = np.array([[1.0, 1e8, -1e8]], F32)  # (1 + 1e8) - 1e8 = 0 as well; 1e8 - 1e8 + 1 would be 1
    assert fast.matmul(a2, b)[0, 0] == 0.0


def test_fused_not_mul_then_add():
    # a*b = 1 + 2^-22 + 2^-46 exactly; c = -(1 + 2^-22): fma gives 2^-46, mul+add would give 0.
    x = F32(1 + 2.0**-23)
    a = np.array([[1.0, x]], F32)
    b = np.array([[-(1 + 2.0**-22)], [x]], F32)
    expected = F32(2.0**-46)
    assert ref.matmul(a, b)[0, 0] == expected
    assert fast.matmul(a, b)[0, 0] == expected


def test_subnormals_are_kept():
    a = np.array([[1e-39, 3e-45]], F32)
    b = np.array([[1.0], [1.0]], F32)
    for mod in (ref, fast):
        out = mod.matmul(a, b)
        assert out[0, 0] == F32(1e-39) + F32(3e-45) and out[0, 0] != 0
    big = np.full((13, 70), F32(2e-39))
    assert np.all(fast.matmul(big, np.ones((70, 3), F32)) > 1e-37)


def test_initial_zero_is_positive_and_signed_zeros_follow_ieee():
    a = np.array([[-0.0, 1.0]], F32)
    b = np.array([[1.0, 0.0], [-0.0, -0.0]], F32)
    for mod in (ref, fast):
        out = mod.matmul(a, b)  # every product is ±0, and +0 + (-0) = +0
        assert np.all(out == 0) and not np.signbit(out).any()
        out = mod.matmul_acc(a, b, np.full((1, 2), -0.0, F32))  # -0 + (-0) = -0 all along
        assert np.all(out == 0) and np.signbit(out).all()


# ---------------------------------------------------------------- kernel == spec

SHAPES = [
    (1, 1, 1),
    (1, 5, 1),
    (7, 13, 5),
    (6, 64, 64),
    (12, 3, 128),
    (65, 259, 33),
    (5, 2100, 70),  # several k chunks (KC = 256)
    (7, 1025, 65),  # a last k chunk of length one
    (7, 257, 65),  # two chunks, the last of length one
    (400, 9, 70),  # several row blocks
    (9, 10, 600),  # several column blocks
    (2, 7, 259),
]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_matches_reference(m, k, n):
    rng = np.random.default_rng(m * 1000003 + k * 1009 + n)
    a, b = randn(rng, m, k), randn(rng, k, n)
    assert same_bits(fast.matmul(a, b), ref.matmul(a, b))


@pytest.mark.parametrize("m,k,n", [(7, 13, 5), (65, 259, 33), (5, 2100, 70), (400, 9, 70), (9, 10, 600)])
def test_parallel_path_matches_reference(m, k, n, parallel_path, threads):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread only")
    numba.set_num_threads(2)
    rng = np.random.default_rng(k)
    a, b, c = randn(rng, m, k), randn(rng, k, n), randn(rng, m, n)
    assert same_bits(fast.matmul_acc(a, b, c.copy()), ref.matmul_acc(a, b, c.copy()))


def test_thread_count_does_not_change_bits(threads, parallel_path):
    rng = np.random.default_rng(7)
    a, b, c = randn(rng, 131, 300), randn(rng, 300, 197), randn(rng, 131, 197)
    results = []
    for t in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS), numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(t)
        results.append(fast.matmul_acc(a, b, c.copy()))
    expected = ref.matmul_acc(a, b, c.copy())
    assert all(same_bits(r, expected) for r in results)


def test_large_problem_default_path_is_consistent(threads):
    # big enough for the threaded path with its default blocking; checked against threads=1
    rng = np.random.default_rng(3)
    a, b = randn(rng, 400, 576), randn(rng, 576, 300)
    assert a.shape[0] * a.shape[1] * b.shape[1] >= fast.SERIAL_WORK
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    many = fast.matmul(a, b)
    numba.set_num_threads(1)
    one = fast.matmul(a, b)
    assert same_bits(many, one)
    # and a few outputs against the spec (a full reference run would be slow)
    rows = [0, 5, 6, 399]
    assert same_bits(many[rows], ref.matmul(a[rows], b))


class _LateExecutor:
    """Stands in for the helper pool: jobs start only after `delay` seconds, or never."""

    def __init__(self, delay: float | None):
        self.delay, self.timers = delay, []

    def submit(self, fn, *args):
        future = concurrent.futures.Future()
        if self.delay is not None:
            timer = threading.Timer(self.delay, lambda: future.set_result(fn(*args)))
            timer.start()
            self.timers.append(timer)
        return future


@pytest.mark.parametrize("delay", [None, 0.05])
def test_pool_does_not_wait_for_helpers_that_never_started(delay, monkeypatch, threads):
    late = _LateExecutor(delay)
    monkeypatch.setattr(fast._helpers, "get", lambda: late)
    monkeypatch.setattr(fast, "SERIAL_WORK", 0)
    monkeypatch.setattr(fast, "THREADING", "pool")
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(8)
    for _ in range(3):  # later calls reuse the scratch memory while late helpers start
        a, b, c = randn(rng, 40, 50), randn(rng, 50, 300), randn(rng, 40, 300)
        assert same_bits(fast.matmul_acc(a, b, c.copy()), ref.matmul_acc(a, b, c.copy()))
    for timer in late.timers:
        timer.join()


def test_k_zero_leaves_c_unchanged():
    rng = np.random.default_rng(0)
    c = randn(rng, 4, 3)
    for mod in (ref, fast):
        out = mod.matmul_acc(np.empty((4, 0), F32), np.empty((0, 3), F32), c.copy())
        assert same_bits(out, c)
        assert same_bits(mod.matmul(np.empty((4, 0), F32), np.empty((0, 3), F32)), np.zeros((4, 3), F32))
    assert fast.matmul(np.empty((0, 5), F32), np.empty((5, 3), F32)).shape == (0, 3)


def test_accumulates_into_c_in_place():
    rng = np.random.default_rng(11)
    a, b, c = randn(rng, 17, 40), randn(rng, 40, 70), randn(rng, 17, 70)
    c_fast = c.copy()
    out = fast.matmul_acc(a, b, c_fast)
    assert out is c_fast
    assert same_bits(c_fast, ref.matmul_acc(a, b, c.copy()))


@pytest.mark.parametrize("k_split", [1, 37, 256, 1024, 1100])
def test_two_k_halves_equal_one_call(k_split):
    """Gradient accumulation: continuing the chains over k in two calls gives the same bits."""
    rng = np.random.default_rng(k_split)
    a, b, c = randn(rng, 19, 1101), randn(rng, 1101, 67), randn(rng, 19, 67)
    whole = fast.matmul_acc(a, b, c.copy())
    parts = c.copy()
    fast.matmul_acc(a[:, :k_split], b[:k_split], parts)
    fast.matmul_acc(a[:, k_split:], b[k_split:], parts)
    assert same_bits(parts, whole)
    assert same_bits(whole, ref.matmul_acc(a, b, c.copy()))


def test_strided_and_transposed_inputs():
    rng = np.random.default_rng(5)
    at = randn(rng, 40, 30)  # a = at.T is (30, 40), F-ordered
    bt = randn(rng, 70, 40)  # b = bt.T is (40, 70)
    big = randn(rng, 64, 90)
    cases = [
        (at.T, bt.T),
        (big[1:61:2, 3:43], bt.T),  # row and column slices
        (at.T, big[::-1, :70][:40]),  # negative stride
        (np.asfortranarray(at.T), np.asfortranarray(bt.T)),
        (big[:30, ::2][:, :40], big[10:50, 5:75]),
    ]
    for a, b in cases:
        expected = ref.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))
        assert same_bits(fast.matmul(a, b), expected)
        assert same_bits(ref.matmul(a, b), expected)


def test_readonly_broadcast_and_unaligned_inputs():
    rng = np.random.default_rng(6)
    a = randn(rng, 9, 20)
    a.flags.writeable = False
    b = np.broadcast_to(randn(rng, 1, 70), (20, 70))  # stride 0 along k
    expected = ref.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))
    assert same_bits(fast.matmul(a, b), expected)
    raw = np.zeros(a.nbytes + 1, np.uint8)
    unaligned = np.ndarray(a.shape, F32, raw[1:].data)
    unaligned[...] = a
    assert same_bits(fast.matmul(unaligned, b), expected)


@pytest.mark.parametrize("m,k,n", [(7, 13, 5), (65, 40, 70), (6, 300, 64)])
def test_special_values(m, k, n):
    rng = np.random.default_rng(m + k + n)
    a, b, c = special(rng, m, k), special(rng, k, n), special(rng, m, n)
    expected = ref.matmul_acc(a, b, c.copy())
    assert not np.isfinite(expected).all()
    assert same_bits(fast.matmul_acc(a, b, c.copy()), expected)


def test_large_magnitudes_overflow_like_the_chain():
    a = np.array([[3e38, 3e38, -3e38]], F32)
    b = np.ones((3, 1), F32)
    for mod in (ref, fast):
        assert mod.matmul(a, b)[0, 0] == np.inf  # 3e38 + 3e38 overflows; inf - 3e38 = inf
    rng = np.random.default_rng(9)
    a, b = randn(rng, 9, 50, scale=1e18), randn(rng, 50, 66, scale=1e19)
    assert same_bits(fast.matmul(a, b), ref.matmul(a, b))


def test_special_values_parallel(parallel_path, threads):
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(99)
    a, b, c = special(rng, 70, 33), special(rng, 33, 130), special(rng, 70, 130)
    assert same_bits(fast.matmul_acc(a, b, c.copy()), ref.matmul_acc(a, b, c.copy()))


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 20),
    k=st.integers(0, 40),
    n=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
    transpose_a=st.booleans(),
    transpose_b=st.booleans(),
    specials=st.booleans(),
)
def test_random_shapes(m, k, n, seed, transpose_a, transpose_b, specials):
    rng = np.random.default_rng(seed)
    gen = special if specials else randn
    a = gen(rng, k, m).T if transpose_a else gen(rng, m, k)
    b = gen(rng, n, k).T if transpose_b else gen(rng, k, n)
    c = gen(rng, m, n)
    assert same_bits(fast.matmul_acc(a, b, c.copy()), ref.matmul_acc(a, b, c.copy()))


# ---------------------------------------------------------------- batched


def test_bmm_matches_reference_and_per_batch_matmul():
    rng = np.random.default_rng(21)
    a, b, c = randn(rng, 3, 7, 29), randn(rng, 3, 29, 66), randn(rng, 3, 7, 66)
    expected = ref.bmm_acc(a, b, c.copy())
    assert same_bits(fast.bmm_acc(a, b, c.copy()), expected)
    for p in range(3):
        assert same_bits(expected[p], ref.matmul_acc(a[p], b[p], c[p].copy()))
    assert same_bits(fast.bmm(a, b), ref.bmm(a, b))


def test_bmm_strided_and_parallel(parallel_path, threads):
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(22)
    a = randn(rng, 8, 20, 13)[::2].transpose(0, 2, 1)  # (4, 13, 20), strided batch, transposed
    b = randn(rng, 4, 20, 70)[:, :, 3:68]  # (4, 20, 65)
    c = randn(rng, 4, 13, 65)
    assert same_bits(fast.bmm_acc(a, b, c.copy()), ref.bmm_acc(a, b, c.copy()))


# ---------------------------------------------------------------- argument checks


def test_bad_arguments():
    a, b = np.ones((3, 4), F32), np.ones((4, 5), F32)
    with pytest.raises(TypeError):
        fast.matmul(a.astype(np.float64), b)
    with pytest.raises(TypeError):
        ref.matmul(a, b.astype(np.float16))
    with pytest.raises(TypeError):
        fast.matmul_acc(a, b, np.zeros((3, 5), np.float64))
    with pytest.raises(ValueError):
        fast.matmul(a, np.ones((3, 5), F32))
    with pytest.raises(ValueError):
        ref.matmul(a, np.ones((3, 5), F32))
    with pytest.raises(ValueError):
        fast.matmul_acc(a, b, np.zeros((3, 6), F32))
    with pytest.raises(ValueError):
        fast.matmul_acc(a, b, np.zeros((5, 3), F32).T)  # not C-contiguous
    with pytest.raises(ValueError):
        fast.matmul_acc(a, b, np.zeros((3, 10), F32)[:, ::2])
    with pytest.raises(ValueError):
        fast.bmm(np.ones((2, 3, 4), F32), np.ones((3, 4, 5), F32))  # batch mismatch
    with pytest.raises(ValueError):
        fast.matmul(np.ones((2, 3, 4), F32), b)
    buf = np.ones((4, 4), F32)
    with pytest.raises(ValueError):
        fast.matmul_acc(buf, buf, buf)  # c overlaps the inputs
