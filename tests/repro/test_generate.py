"""Generation: a request's tokens depend only on (seed, request id, token index) and its prompt."""

import numba
import numpy as np
import pytest

from bitswarm.repro.generate import generate

PROMPTS = [[1, 10 + i, 20 + 2 * i, 7] for i in range(8)]


def _run(model, prompts, rids, **kw):
    kw = {"temperature": 0.9, "top_p": 0.95, "seed": 11, **kw}
    return generate(model, prompts, 12, request_ids=rids, **kw)


def test_alone_equals_inside_a_batch_of_8(tiny_llama):
    model = tiny_llama("numba")
    batch = _run(model, PROMPTS, list(range(100, 108)))
    for i in (0, 5, 7):
        assert _run(model, [PROMPTS[i]], [100 + i]) == [batch[i]]


def test_thread_count_does_not_matter(tiny_llama):
    model = tiny_llama("numba")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(model, PROMPTS[:3], [1, 2, 3])
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _run(model, PROMPTS[:3], [1, 2, 3])
    finally:
        numba.set_num_threads(before)
    assert one == two


def test_numba_tokens_equal_reference_tokens(tiny_llama):
    assert _run(tiny_llama("numba"), PROMPTS[:2], [4, 9]) == _run(tiny_llama("reference"), PROMPTS[:2], [4, 9])


def test_seed_and_request_id_select_the_stream(tiny_llama):
    model = tiny_llama("numba")
    base = _run(model, [PROMPTS[0]], [1])
    assert _run(model, [PROMPTS[0]], [1]) == base
    assert _run(model, [PROMPTS[0]], [2]) != base
    assert _run(model, [PROMPTS[0]], [1], seed=12) != base


def test_greedy_is_argmax_of_the_logits(tiny_llama):
    model = tiny_llama("numba")
    [out] = generate(model, [PROMPTS[0]], 1, temperature=0.0)
    logits, _ = model.forward(np.asarray([PROMPTS[0]]))
    assert out == [int(np.argmax(logits[-1]))]


def test_bad_arguments(tiny_llama):
    model = tiny_llama("numba")
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [PROMPTS[0]], 2, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [PROMPTS[0]], 2, temperature=-1)
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, [[]], 2)
