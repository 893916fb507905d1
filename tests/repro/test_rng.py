"""Philox4x32-10 known answers, numpy == numba, and the bitswarm stream layout."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from bitswarm.repro import rng

U32 = np.uint32

# Random123 known-answer tests (kat_vectors, philox4x32_10)
KATS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KATS)
def test_philox_known_answers(counter, key, expected):
    got = rng.philox4x32(np.array(counter, U32), np.array(key, U32))
    assert got.dtype == U32
    assert tuple(int(x) for x in got) == expected
    got_nb = rng.philox4x32_nb(*counter, *key)
    assert tuple(int(x) for x in got_nb) == expected


@njit(cache=True)
def _philox_many_nb(ctr, key, out):
    for i in range(ctr.shape[0]):
        w = rng.philox4x32_nb(ctr[i, 0], ctr[i, 1], ctr[i, 2], ctr[i, 3], key[i, 0], key[i, 1])
        for j in range(4):
            out[i, j] = w[j]


def test_philox_numpy_equals_numba():
    gen = np.random.default_rng(1)
    n = 20000
    ctr = gen.integers(0, 2**32, size=(n, 4), dtype=np.uint64).astype(U32)
    key = gen.integers(0, 2**32, size=(n, 2), dtype=np.uint64).astype(U32)
    ctr[:100] = 0xFFFFFFFF  # edges
    key[50:150] = 0
    out = np.zeros((n, 4), U32)
    _philox_many_nb(ctr, key, out)
    assert np.array_equal(rng.philox4x32(ctr, key), out)


def test_philox_broadcasts_key():
    ctr = np.arange(40, dtype=U32).reshape(10, 4)
    key = np.array([3, 4], U32)
    full = rng.philox4x32(ctr, np.tile(key, (10, 1)))
    assert np.array_equal(rng.philox4x32(ctr, key), full)
    assert np.array_equal(rng.philox4x32(ctr[3], key), full[3])


def test_philox_rejects_bad_inputs():
    with pytest.raises(TypeError, match="uint32"):
        rng.philox4x32(np.zeros(4, np.int64), np.zeros(2, U32))
    with pytest.raises(ValueError, match="counter"):
        rng.philox4x32(np.zeros(3, U32), np.zeros(2, U32))
    with pytest.raises(ValueError, match="key"):
        rng.philox4x32(np.zeros(4, U32), np.zeros(3, U32))


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------


def test_key_and_counter_layout():
    assert rng.key_for(0).tolist() == [0, 0]
    assert rng.key_for(0x0123456789ABCDEF).tolist() == [0x89ABCDEF, 0x01234567]
    assert rng.key_for(2**64 - 1).tolist() == [0xFFFFFFFF, 0xFFFFFFFF]
    assert rng.key_for(np.uint64(5)).tolist() == [5, 0]
    c = rng.counter_for(0x0000000500000007, 9, rng.PURPOSE_SAMPLE)
    assert c.dtype == U32 and c.tolist() == [7, 5, 9, rng.PURPOSE_SAMPLE]


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_key_for_rejects_out_of_range(seed):
    with pytest.raises(ValueError, match="seed"):
        rng.key_for(seed)


@pytest.mark.parametrize("seed", [1.0, "1", True, None])
def test_key_for_rejects_non_integers(seed):
    with pytest.raises(TypeError, match="seed"):
        rng.key_for(seed)


def test_layout_pinned_values():
    """Fixed outputs of the layout, for other implementations (triton) to reproduce."""
    assert rng.sample_uniform(1234, 7, 0).view(U32) == np.float32(0.4911183).view(U32)
    w = rng.random_words(42, 3, 6, purpose=rng.PURPOSE_UNIFORM)
    first = rng.philox4x32(np.array([0, 0, 3, rng.PURPOSE_UNIFORM], U32), rng.key_for(42))
    second = rng.philox4x32(np.array([1, 0, 3, rng.PURPOSE_UNIFORM], U32), rng.key_for(42))
    assert w.tolist() == first.tolist() + second.tolist()[:2]


# --------------------------------------------------------------------------------------------
# uniform
# --------------------------------------------------------------------------------------------


def test_uniform_is_exact_and_in_range():
    edges = np.array([0, 1, 255, 256, 257, 0x7FFFFFFF, 0x80000000, 0xFFFFFEFF, 0xFFFFFF00, 0xFFFFFFFF], U32)
    rand = np.random.default_rng(2).integers(0, 2**32, size=100000, dtype=np.uint64).astype(U32)
    bits = np.concatenate([edges, rand])
    u = rng.uniform(bits)
    assert u.dtype == np.float32
    expected = (bits.astype(np.float64) // 256) / 2**24  # exact in fp64, and exactly fp32
    assert np.array_equal(u.astype(np.float64), expected)
    assert u.min() == 0.0 and u.max() < 1.0
    assert rng.uniform(U32(0xFFFFFFFF)) == np.float32(1 - 2**-24)
    for b in edges:
        assert np.float32(rng.uniform_nb(b)).view(U32) == rng.uniform(b).view(U32)


def test_uniform_rejects_non_uint32():
    with pytest.raises(TypeError, match="bits"):
        rng.uniform(np.array([1, 2], np.int64))


def test_uniforms_chi_square():
    n, bins = 2**20, 256
    u = rng.uniforms(20240601, 0, n)
    counts = np.bincount((u * bins).astype(np.int64), minlength=bins)
    expected = n / bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # df = 255: mean 255, sd ~22.6; a loose window, fixed seed
    assert 150 < chi2 < 400, chi2
    assert abs(float(u.mean()) - 0.5) < 0.002


# --------------------------------------------------------------------------------------------
# token sampling uniforms
# --------------------------------------------------------------------------------------------


def test_sample_uniform_layout():
    seed, rid = 0xDEADBEEF12345678, 17
    for t in [0, 1, 2**32 - 1, 2**32, 2**40 + 3, 2**64 - 1]:
        ctr = np.array([t & 0xFFFFFFFF, t >> 32, rid, rng.PURPOSE_SAMPLE], U32)
        want = rng.uniform(rng.philox4x32(ctr, rng.key_for(seed))[0])
        got = rng.sample_uniform(seed, rid, t)
        assert got.dtype == np.float32 and got.view(U32) == want.view(U32)
        k0, k1 = rng.key_for(seed).tolist()
        assert np.float32(rng.sample_uniform_nb(k0, k1, rid, np.uint64(t))).view(U32) == want.view(U32)
        if t < 2**62:
            # the same value is word 4 * token_index of the (seed, request_id, SAMPLE) stream
            w = rng.random_words(seed, rid, 1, purpose=rng.PURPOSE_SAMPLE, offset=4 * t)
            assert rng.uniform(w)[0].view(U32) == want.view(U32)


def test_sample_uniforms_batch_is_elementwise():
    seed = 99
    rids = np.array([5, 5, 0, 2**32 - 1, 7, 5], np.uint32)
    tix = np.array([0, 1, 3, 2**33, 0, 0], np.uint64)
    batch = rng.sample_uniforms(seed, rids, tix)
    assert batch.dtype == np.float32 and batch.shape == (6,)
    for b in range(6):
        assert batch[b].view(U32) == rng.sample_uniform(seed, int(rids[b]), int(tix[b])).view(U32)
    perm = np.array([3, 1, 5, 0, 2, 4])
    assert np.array_equal(rng.sample_uniforms(seed, rids[perm], tix[perm]), batch[perm])
    assert batch[0] == batch[5]  # same (seed, request, token): same value
    assert batch[0] != batch[4]  # different request
    # broadcast: one request, many token indices
    row = rng.sample_uniforms(seed, 5, np.arange(4))
    assert row[1] == batch[1]


def test_sample_uniforms_rejects_bad_ids():
    with pytest.raises(ValueError, match="request_ids"):
        rng.sample_uniforms(1, [2**32], [0])
    with pytest.raises(ValueError, match="token_indices"):
        rng.sample_uniforms(1, [0], [-1])
    with pytest.raises(TypeError, match="token_indices"):
        rng.sample_uniforms(1, [0], [0.5])
    with pytest.raises(ValueError, match="request_id"):
        rng.sample_uniform(1, -3, 0)


# --------------------------------------------------------------------------------------------
# general streams
# --------------------------------------------------------------------------------------------


def test_random_words_offsets_are_consistent():
    full = rng.random_words(7, 1, 64, purpose=5)
    for off in range(0, 20):
        for n in (0, 1, 3, 4, 9):
            assert np.array_equal(rng.random_words(7, 1, n, purpose=5, offset=off), full[off : off + n])
    # far into the stream: block index uses both counter words
    off = 2**40 + 1
    w = rng.random_words(7, 1, 3, purpose=5, offset=off)
    blk = rng.philox4x32(rng.counter_for(off >> 2, 1, 5), rng.key_for(7))
    assert w.tolist() == blk.tolist()[1:4]
    end = rng.random_words(7, 1, 4, purpose=5, offset=2**64 - 4)
    assert np.array_equal(end, rng.philox4x32(rng.counter_for(2**62 - 1, 1, 5), rng.key_for(7)))
    with pytest.raises(ValueError, match="offset"):
        rng.random_words(7, 1, 5, purpose=5, offset=2**64 - 4)


def test_streams_and_purposes_differ():
    a = rng.uniforms(1, 0, 8)
    assert not np.array_equal(a, rng.uniforms(1, 1, 8))
    assert not np.array_equal(a, rng.uniforms(2, 0, 8))
    assert not np.array_equal(a, rng.uniforms(1, 0, 8, purpose=rng.PURPOSE_SAMPLE))
    with pytest.raises(ValueError, match="stream"):
        rng.uniforms(1, 2**32, 8)
    with pytest.raises(ValueError, match="purpose"):
        rng.random_words(1, 0, 8, purpose=-1)


def test_integers_exact_formula():
    seed, stream = 31337, 4
    for high in [1, 2, 3, 10, 1000, 2**31 + 11, 2**32 - 1, 2**32]:
        got = rng.integers(seed, stream, 50, high, offset=3)
        assert got.dtype == np.int64 and got.min() >= 0 and got.max() < high
        w = rng.random_words(seed, stream, 2 * 53, purpose=rng.PURPOSE_INTEGER)
        for j in range(50):
            x = (int(w[2 * (j + 3)]) << 32) | int(w[2 * (j + 3) + 1])
            assert int(got[j]) == (x * high) >> 64
    assert not rng.integers(1, 0, 100, 1).any()


def test_integers_roughly_uniform():
    n, high = 200000, 10
    x = rng.integers(5, 0, n, high)
    counts = np.bincount(x, minlength=high)
    chi2 = float(((counts - n / high) ** 2 / (n / high)).sum())
    assert chi2 < 40, chi2  # df = 9


@pytest.mark.parametrize("high", [0, 2**32 + 1, -4])
def test_integers_rejects_bad_high(high):
    with pytest.raises(ValueError, match="high"):
        rng.integers(1, 0, 4, high)
