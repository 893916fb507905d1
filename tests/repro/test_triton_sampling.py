"""Top-p sampling and greedy: the triton kernels choice-identical to the spec.

The cases are those of test_sampling (its test functions run again with the triton module as
`impl`); the random comparisons are smaller, as the interpreter is slow.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitswarm.repro import rng
from bitswarm.repro.kernels.triton import sampling as ts
from bitswarm.repro.reference import sampling as ref
from tests.repro import test_sampling as TS
from tests.repro.test_sampling import F32, KINDS, U_MAX, literal_spec, random_rows

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_triton_equals_reference_and_spec():
    gen = np.random.default_rng(11)
    tops = [F32(1.0), F32(0.95), F32(0.5), F32(1e-7), F32(2.0**-126)]
    for trial in range(60):
        kind = KINDS[trial % len(KINDS)]
        b, v = 8, int(gen.integers(1, 150))  # up to three rank blocks and two select tiles
        p = random_rows(gen, b, v, kind)
        top = tops[trial % len(tops)] if trial % 7 else gen.uniform(0.01, 1, b).astype(F32)
        us = gen.random(b).astype(F32)
        us[0], us[1], us[2] = U_MAX, F32(0), F32(1 - 2**-23)
        want = ref.sample_rows(p, top, us)
        assert np.array_equal(ts.sample_rows(p, top, us), want), (trial, kind)
        tops_b = np.broadcast_to(top, (b,))
        for r in range(b):
            assert literal_spec(p[r], tops_b[r], us[r]) == want[r], (trial, kind, r)


def test_larger_vocab_and_many_rows():
    gen = np.random.default_rng(12)
    p = random_rows(gen, 4, 1000, "plain")
    p[1] = (np.round(p[1] * 2**14) / 2**14).astype(F32)
    us = gen.random(4).astype(F32)
    for top in [F32(1.0), F32(0.9)]:
        assert np.array_equal(ts.sample_rows(p, top, us), ref.sample_rows(p, top, us))
    p = random_rows(gen, 70, 60, "ties")  # 70 rows: three walk programs, nine select programs
    us = gen.random(70).astype(F32)
    assert np.array_equal(ts.sample_rows(p, F32(0.9), us), ref.sample_rows(p, F32(0.9), us))


def test_shared_cases():
    TS.test_tiny_top_p_is_greedy(ts)
    TS.test_edges(ts)
    TS.test_fallback_with_subnormal_total(ts)
    TS.test_batch_independence(ts)
    TS.test_greedy(ts)
    TS.test_bad_inputs_rows_and_dtypes(ts)


def _bad_value_cases():
    (mark,) = [m for m in TS.test_bad_inputs_value_error.pytestmark if m.args[0] == "probs,top_p,u,match"]
    return mark.args[1]


@pytest.mark.parametrize("probs,top_p,u,match", _bad_value_cases())
def test_bad_inputs_value_error(probs, top_p, u, match):
    with pytest.raises(ValueError, match=match):
        ts.sample_from_probs(probs, top_p, u)


def test_decode_tokens_depend_only_on_seed_request_and_index():
    gen = np.random.default_rng(6)
    p = random_rows(gen, 6, 25, "plain")
    rids = np.array([3, 9, 4, 3, 12, 40], np.uint32)
    tix = np.array([0, 5, 2, 1, 7, 0], np.uint64)
    tokens = ts.sample_rows(p, F32(0.9), rng.sample_uniforms(2024, rids, tix))
    for r in range(6):
        u = rng.sample_uniform(2024, int(rids[r]), int(tix[r]))
        assert ref.sample_from_probs(p[r], F32(0.9), u) == tokens[r]


def test_greedy_equals_reference():
    gen = np.random.default_rng(8)
    x = np.round(gen.standard_normal((200, 33)), 1).astype(F32)
    x[gen.random(x.shape) < 0.1] = np.nan
    x[gen.random(x.shape) < 0.05] = -np.inf
    x[:3] = np.nan
    x[3, ::2] = F32(-0.0)
    x[3, 1::2] = F32(0.0)
    assert np.array_equal(ts.greedy(x), ref.greedy(x))
    assert ts.greedy(x[5]) == ref.greedy(x[5])
    assert ts.greedy(np.zeros((0, 3), F32)).shape == (0,)
