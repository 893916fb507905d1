"""Packed prefill: prompts prefilled together get the bits of prefilling each one alone."""

from contextlib import nullcontext

import numpy as np
import pytest

from bitswarm.repro.generate import generate
from bitswarm.repro.model import KVCache

from .conftest import bits

LENGTHS = (5, 1, 19, 2, 12, 7, 1, 16, 3, 9, 4)  # far apart, single tokens among them
PROMPTS = [[(11 * i + 5 * j + 2) % 240 + 4 for j in range(n)] for i, n in enumerate(LENGTHS)]
# packed together: lengths 5, 1, 19, 5 (the first prompt again, its own cache), 2, 12
PACKED = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[0], PROMPTS[3], PROMPTS[4]]
SAMPLED = {"temperature": 0.9, "top_p": 0.9, "seed": 7}
GREEDY = {"temperature": 0.0}
CAPACITY = 48  # same buffer size alone and packed, so whole buffers (padding too) compare


def _alone(model, prompt):
    cache = KVCache(capacity=CAPACITY)
    logits, _ = model.forward(np.asarray([prompt]), cache=cache)
    return logits[-1], cache


def _packed(model, prompts):
    caches = [KVCache(capacity=CAPACITY) for _ in prompts]
    return model.prefill(prompts, caches), caches


def _assert_same_cache(got: KVCache, want: KVCache, what):
    assert list(got.lengths) == list(want.lengths), what
    assert len(got.k) == len(want.k), what
    for layer, (k, v, k0, v0) in enumerate(zip(got.k, got.v, want.k, want.v)):
        assert k.shape == k0.shape and bits(k) == bits(k0), (what, layer)
        assert v.shape == v0.shape and bits(v) == bits(v0), (what, layer)


@pytest.mark.parametrize("backend, decoding", [("numba", False), ("numba", True), ("reference", False)])
def test_packed_prefill_is_the_bits_of_prefilling_alone(tiny_llama, backend, decoding):
    model = tiny_llama(backend)
    with model.decoding() if decoding else nullcontext():  # packed weights: same bits for any rows
        alone = [_alone(model, p) for p in PACKED]
        logits, caches = _packed(model, PACKED)
    assert logits.shape == (len(PACKED), model.cfg.vocab_size)
    for i, ((row, cache), got, got_cache) in enumerate(zip(alone, logits, caches)):
        assert bits(got) == bits(row), i
        _assert_same_cache(got_cache, cache, i)


def test_packed_past_the_panel_rows_is_the_bits_of_alone(tiny_llama):
    """More packed rows than a packed weight serves from its panels (numba's gemv.PANEL_M): the
    linears take the other kernel there, each prompt alone the panels; the bits are the same."""
    from bitswarm.repro.kernels.cpu.gemv import PANEL_M

    model = tiny_llama("numba")
    prompts = [[(3 * i + 7 * j) % 200 + 5 for j in range(PANEL_M // 2 + 20)] for i in range(2)]
    with model.decoding():
        alone = [model.forward(np.asarray([p]), cache=KVCache())[0][-1] for p in prompts]
        logits = model.prefill(prompts, [KVCache(), KVCache()])
    assert [bits(r) for r in logits] == [bits(r) for r in alone]


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_a_prompt_never_sees_the_others(tiny_llama, backend):
    """Changing one packed prompt (its tokens, then its length) leaves every other prompt's
    logits and cache bit for bit: attention does not cross prompts."""
    model = tiny_llama(backend)
    base, base_caches = _packed(model, PACKED)
    for changed in ([t + 1 for t in PACKED[2]], PACKED[2][:4]):
        prompts = PACKED[:2] + [changed] + PACKED[3:]
        logits, caches = _packed(model, prompts)
        assert bits(logits[2]) != bits(base[2])
        for i in (0, 1, 3, 4, 5):
            assert bits(logits[i]) == bits(base[i]), i
            _assert_same_cache(caches[i], base_caches[i], i)


def _first_tokens_ending_some(runs: list[list[int]]) -> list[int]:
    """A first token that some runs start with and others do not: as an eos it ends those
    requests at their prefill, so later requests join in groups of uneven size."""
    for tok in sorted({run[0] for run in runs}):
        if 0 < sum(run[0] == tok for run in runs) < len(runs):
            return [tok]
    return []


@pytest.mark.parametrize("backend, n, new", [("numba", 11, 6), ("reference", 9, 3)])
@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_generate_with_packed_prefill_equals_one_by_one(tiny_llama, backend, n, new, sampling):
    model = tiny_llama(backend)
    prompts = PROMPTS[:n] + [PROMPTS[2], PROMPTS[2]]  # equal prompts share one prefill
    rids = [70 + i for i in range(len(prompts))]
    one = generate(model, prompts, new, request_ids=rids, batch_size=1, **sampling)
    assert generate(model, prompts, new, request_ids=rids, batch_size=8, **sampling) == one
    eos = _first_tokens_ending_some(one) + [one[0][new // 2]]  # some end at once, some midway
    one = generate(model, prompts, new, request_ids=rids, eos_ids=eos, batch_size=1, **sampling)
    assert min(map(len, one)) < new  # requests left early, and the next ones joined
    for size in (3, 8):
        batched = generate(model, prompts, new, request_ids=rids, eos_ids=eos, batch_size=size, **sampling)
        assert batched == one, size


def test_generate_prefills_joiners_together_and_equal_prompts_once(tiny_llama):
    model = tiny_llama("numba")
    calls: list[int] = []
    prefill = model.prefill
    model.prefill = lambda prompts, caches: calls.append(len(prompts)) or prefill(prompts, caches)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[3], PROMPTS[0]]
    out = generate(model, prompts, 4, batch_size=4, eos_ids=(), **SAMPLED)
    # 4 join at the start (3 distinct prompts); the other 2 together once those finish, the
    # first prompt's prefill reused (joining the batch copied its cache)
    assert calls == [3, 1]
    calls.clear()
    alone = generate(model, prompts, 4, batch_size=1, eos_ids=(), **SAMPLED)
    # one at a time, each decodes in its own prefill's cache: nothing to reuse
    assert calls == [1] * len(prompts) and alone == out


def test_equal_prompts_joining_later_reuse_an_unextended_prefill(tiny_llama):
    """More copies of a prompt than the batch holds (a GRPO group), joining as others finish:
    one prefill serves them (its cache is copied into the batch, never extended)."""
    model = tiny_llama("numba")
    prompts, rids = [PROMPTS[4]] * 10, list(range(300, 310))
    free = generate(model, prompts, 6, request_ids=rids, batch_size=1, **SAMPLED)
    eos = sorted({run[3] for run in free})[:2]  # some requests end early: the others join one by one
    alone = generate(model, prompts, 6, request_ids=rids, batch_size=1, eos_ids=eos, **SAMPLED)
    calls: list[int] = []
    prefill = model.prefill
    model.prefill = lambda prompts, caches: calls.append(len(prompts)) or prefill(prompts, caches)
    assert generate(model, prompts, 6, request_ids=rids, batch_size=4, eos_ids=eos, **SAMPLED) == alone
    assert len({len(run) for run in alone}) > 1 and calls == [1]


def test_prefill_refuses_what_it_cannot_fill(tiny_llama):
    model = tiny_llama("numba")
    with pytest.raises(ValueError, match="one cache per prompt"):
        model.prefill([PROMPTS[0]], [])
    shared = KVCache()
    with pytest.raises(ValueError, match="empty caches"):
        model.prefill([PROMPTS[0], PROMPTS[1]], [shared, shared])
    used = KVCache()
    model.forward(np.asarray([PROMPTS[0]]), cache=used)
    with pytest.raises(ValueError, match="empty caches"):
        model.prefill([PROMPTS[1]], [used])
    with pytest.raises(ValueError, match="empty prompt"):
        model.prefill([[]], [KVCache()])
