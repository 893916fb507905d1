"""Top-p sampling and greedy: the numpy spec, and the numba kernel choice-identical to it."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from bitswarm.repro import rng
from bitswarm.repro.kernels.cpu import sampling as nb
from bitswarm.repro.reference import sampling as ref

F32 = np.float32
U_MAX = F32(1 - 2**-24)
IMPLS = [pytest.param(ref, id="reference"), pytest.param(nb, id="numba")]


def literal_spec(p, top_p, u) -> int:
    """The docstring's algorithm transcribed with scalar fp32 operations and plain loops."""
    v = len(p)
    order = sorted(range(v), key=lambda i: (-float(p[i]), i))
    cum, k = F32(0), v
    cums = []
    for j, tok in enumerate(order):
        cum = F32(cum + p[tok])
        cums.append(cum)
        if cum >= top_p:
            k = j + 1
            break
    total = cums[k - 1]
    if total == 0:
        return 0
    target = F32(u * total)
    c, last = F32(0), None
    for j in range(k):
        tok = order[j]
        c_new = F32(c + p[tok])
        if target < c_new:
            return tok
        if c_new > c:
            last = tok
        c = c_new
    return last


def random_rows(gen, b, v, kind):
    logits = gen.standard_normal((b, v)) * gen.uniform(0.3, 6)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True)).astype(F32)
    if kind == "ties":
        p = (np.round(p * 8) / 8).astype(F32)  # many equal values, some zeros
    elif kind == "zeros":
        p[gen.random((b, v)) < 0.5] = 0
        p[gen.random((b, v)) < 0.05] = F32(-0.0)
    elif kind == "subnormal":
        p = (p * F32(2.0**-130)).astype(F32)
    elif kind == "allzero":
        p[:] = 0
    return np.ascontiguousarray(p, dtype=F32)


KINDS = ["plain", "ties", "zeros", "subnormal", "allzero"]


def test_numba_equals_reference_and_spec():
    gen = np.random.default_rng(11)
    tops = [F32(1.0), F32(0.95), F32(0.5), F32(1e-7), F32(2.0**-126)]
    checked = 0
    for trial in range(250):
        kind = KINDS[trial % len(KINDS)]
        b, v = 8, int(gen.integers(1, 70))
        p = random_rows(gen, b, v, kind)
        top = tops[trial % len(tops)] if trial % 7 else gen.uniform(0.01, 1, b).astype(F32)
        us = gen.random(b).astype(F32)
        us[0], us[1], us[2] = U_MAX, F32(0), F32(1 - 2**-23)
        want = ref.sample_rows(p, top, us)
        assert np.array_equal(nb.sample_rows(p, top, us), want), (trial, kind)
        tops_b = np.broadcast_to(top, (b,))
        for r in range(b):
            assert literal_spec(p[r], tops_b[r], us[r]) == want[r], (trial, kind, r)
            assert p[r, want[r]] > 0 or not (p[r] > 0).any()
            checked += 1
    assert checked == 2000


def test_large_vocab_numba_equals_reference():
    gen = np.random.default_rng(12)
    p = random_rows(gen, 4, 50000, "plain")
    p[1] = (np.round(p[1] * 2**14) / 2**14).astype(F32)
    us = gen.random(4).astype(F32)
    for top in [F32(1.0), F32(0.9)]:
        assert np.array_equal(nb.sample_rows(p, top, us), ref.sample_rows(p, top, us))


@pytest.mark.parametrize("impl", IMPLS)
def test_tiny_top_p_is_greedy(impl):
    gen = np.random.default_rng(3)
    for kind in ["plain", "ties"]:
        p = random_rows(gen, 16, 30, kind)
        for u in [F32(0), F32(0.5), U_MAX]:
            got = impl.sample_rows(p, F32(1e-30), np.full(16, u, F32))
            assert np.array_equal(got, ref.greedy(p))
    p = np.array([0.25, 0.5, 0.0, 0.5], F32)
    assert impl.sample_from_probs(p, F32(1e-9), U_MAX) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_edges(impl):
    s = impl.sample_from_probs
    assert s(np.zeros(5, F32), F32(1), F32(0.3)) == 0  # all zero: lowest id
    assert s(np.array([0, 0, 1, 0], F32), F32(1), U_MAX) == 2
    assert s(np.array([0.0, 0.5, 0.0, 0.5, 0.0], F32), F32(1), U_MAX) == 3
    assert s(np.array([0.0, 0.5, 0.0, 0.5, 0.0], F32), F32(1), F32(0)) == 1
    assert s(np.array([1.0], F32), F32(0.5), F32(0.7)) == 0
    # the nucleus: top_p=0.6 keeps tokens 0 and 1 (cum 0.5 < 0.6 <= 0.8)
    p = np.array([0.5, 0.3, 0.2], F32)
    assert s(p, F32(0.6), U_MAX) == 1
    assert s(p, F32(1.0), U_MAX) == 2
    # top_p exactly reached: 0.5 + 0.25 == 0.75, so the nucleus is {0, 2}
    p = np.array([0.5, 0.125, 0.25, 0.125], F32)
    assert s(p, F32(0.75), U_MAX) == 2


@pytest.mark.parametrize("impl", IMPLS)
def test_fallback_with_subnormal_total(impl):
    """u * total rounds up to total only for a subnormal total: step 6 of the spec."""
    tiny = F32(2.0**-140)
    p = np.array([0, tiny, tiny, F32(2.0**-149), 0], F32)
    total = F32(F32(tiny + tiny) + F32(2.0**-149))
    assert F32(U_MAX * total) == total  # target < c never holds: the fallback decides
    assert impl.sample_from_probs(p, F32(1), U_MAX) == 3  # the last token that grew c
    assert literal_spec(p, F32(1), U_MAX) == 3


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_independence(impl):
    gen = np.random.default_rng(4)
    p = random_rows(gen, 8, 40, "ties")
    us = gen.random(8).astype(F32)
    top = gen.uniform(0.2, 1, 8).astype(F32)
    batch = impl.sample_rows(p, top, us)
    for r in range(8):
        assert impl.sample_from_probs(p[r], top[r], us[r]) == batch[r]
        assert impl.sample_rows(p[r : r + 1], top[r : r + 1], us[r : r + 1])[0] == batch[r]
    perm = gen.permutation(8)
    assert np.array_equal(impl.sample_rows(p[perm], top[perm], us[perm]), batch[perm])
    other = random_rows(gen, 8, 40, "plain")
    mixed = np.concatenate([p[:3], other[3:]])
    assert np.array_equal(impl.sample_rows(mixed, top, us)[:3], batch[:3])


def test_numba_thread_count_does_not_matter():
    gen = np.random.default_rng(5)
    p = random_rows(gen, 64, 300, "ties")
    us = gen.random(64).astype(F32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = nb.sample_rows(p, F32(0.9), us)
        g1 = nb.greedy(p)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(nb.sample_rows(p, F32(0.9), us), one)
    assert np.array_equal(nb.greedy(p), g1)


def test_decode_tokens_depend_only_on_seed_request_and_index():
    """End to end: tokens from rng.sample_uniforms do not change when the batch changes."""
    gen = np.random.default_rng(6)
    seed = 2024
    p = random_rows(gen, 6, 25, "plain")
    rids = np.array([3, 9, 4, 3, 12, 40], np.uint32)
    tix = np.array([0, 5, 2, 1, 7, 0], np.uint64)
    tokens = nb.sample_rows(p, F32(0.9), rng.sample_uniforms(seed, rids, tix))
    for r in range(6):
        u = rng.sample_uniform(seed, int(rids[r]), int(tix[r]))
        assert ref.sample_from_probs(p[r], F32(0.9), u) == tokens[r]


def test_empirical_frequencies_match_probabilities():
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02, 0.0], F32)
    n = 40000
    us = rng.uniforms(77, 0, n)
    rows = np.broadcast_to(p, (n, p.size))
    counts = np.bincount(nb.sample_rows(rows, F32(1), us), minlength=p.size)
    freq = counts / n
    sd = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * sd + 1e-12), freq
    assert counts[-1] == 0
    # top-p renormalizes over the nucleus {0, 1, 2} (cum 0.8 >= 0.75)
    counts = np.bincount(nb.sample_rows(rows, F32(0.75), us), minlength=p.size)
    q = np.array([0.4, 0.25, 0.15]) / 0.8
    sdq = np.sqrt(q * (1 - q) / n)
    assert counts[3:].sum() == 0
    assert np.all(np.abs(counts[:3] / n - q) <= 5 * sdq), counts


# --------------------------------------------------------------------------------------------
# greedy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_greedy(impl):
    nan, inf = F32(np.nan), F32(np.inf)
    assert impl.greedy(np.array([0.1, 0.7, 0.7, 0.2], F32)) == 1
    assert impl.greedy(np.array([nan, -1.0, 3.0, nan], F32)) == 2
    assert impl.greedy(np.array([nan, nan], F32)) == 0
    assert impl.greedy(np.array([-inf, nan, -inf], F32)) == 0
    assert impl.greedy(np.array([-5.0, -0.0, 0.0], F32)) == 1  # -0.0 == +0.0: lowest id
    assert impl.greedy(np.array([1.0, inf, nan, inf], F32)) == 1
    x = np.array([[1, 2, 2], [nan, -3, -3], [0, 0, 0]], F32)
    got = impl.greedy(x)
    assert got.dtype == np.int64 and got.tolist() == [1, 1, 0]
    assert isinstance(impl.greedy(x[0]), int)


def test_greedy_numba_equals_reference():
    gen = np.random.default_rng(8)
    x = np.round(gen.standard_normal((200, 33)), 1).astype(F32)
    x[gen.random(x.shape) < 0.1] = np.nan
    x[gen.random(x.shape) < 0.05] = -np.inf
    assert np.array_equal(nb.greedy(x), ref.greedy(x))


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------

GOOD = np.array([0.5, 0.5], F32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "probs,top_p,u,match",
    [
        (np.array([0.5, np.nan], F32), F32(1), F32(0.5), "probs.*NaN"),
        (np.array([0.5, -0.1], F32), F32(1), F32(0.5), "probs.*negative"),
        (np.array([0.5, np.inf], F32), F32(1), F32(0.5), "probs"),
        (np.array([1.5, 0.0], F32), F32(1), F32(0.5), "probs"),
        (np.zeros(0, F32), F32(1), F32(0.5), "probs"),
        (GOOD.reshape(1, 2), F32(1), F32(0.5), "probs"),
        (GOOD, F32(0), F32(0.5), "top_p"),
        (GOOD, F32(1.5), F32(0.5), "top_p"),
        (GOOD, F32(np.nan), F32(0.5), "top_p"),
        (GOOD, F32(1), F32(1.0), "u"),
        (GOOD, F32(1), F32(-0.25), "u"),
        (GOOD, F32(1), F32(np.nan), "u"),
        (GOOD, F32(1), np.array([0.5], F32), "u"),
    ],
)
def test_bad_inputs_value_error(impl, probs, top_p, u, match):
    with pytest.raises(ValueError, match=match):
        impl.sample_from_probs(probs, top_p, u)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_inputs_rows_and_dtypes(impl):
    p = np.tile(GOOD, (3, 1))
    us = np.full(3, 0.5, F32)
    with pytest.raises(ValueError, match="us"):
        impl.sample_rows(p, F32(1), us[:2])
    with pytest.raises(ValueError, match="top_p"):
        impl.sample_rows(p, np.ones(2, F32), us)
    with pytest.raises(ValueError, match="top_p"):
        impl.sample_rows(p, np.array([1, 0, 1], F32), us)
    with pytest.raises(TypeError, match="probs"):
        impl.sample_rows(p.astype(np.float64), F32(1), us)
    with pytest.raises(TypeError, match="us"):
        impl.sample_rows(p, F32(1), us.astype(np.float64))
    with pytest.raises(TypeError, match="x"):
        impl.greedy(np.array([1, 2], np.int64))
    with pytest.raises(ValueError, match="x"):
        impl.greedy(np.zeros((2, 0), F32))
    # a Python float is rounded to float32 once
    assert impl.sample_from_probs(GOOD, 0.9, 0.75) == impl.sample_from_probs(GOOD, F32(0.9), F32(0.75))
    assert impl.sample_rows(np.zeros((0, 4), F32), F32(1), np.zeros(0, F32)).shape == (0,)
