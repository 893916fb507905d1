"""Batched decoding: requests decoding together get the bits of decoding each one alone."""

import numpy as np
import pytest

from bitswarm.repro.generate import generate
from bitswarm.repro.model import KVCache

from .conftest import bits

# lengths 1 to 20, deliberately far apart
LENGTHS = (1, 20, 3, 11, 2, 17, 7, 5, 13)
PROMPTS = [[(7 * i + 3 * j + 5) % 250 + 3 for j in range(n)] for i, n in enumerate(LENGTHS)]
SAMPLED = {"temperature": 0.9, "top_p": 0.9, "seed": 5}
GREEDY = {"temperature": 0.0}


def _alone(model, prompts, rids, new, **kw):
    return [generate(model, [p], new, request_ids=[r], batch_size=1, **kw)[0] for p, r in zip(prompts, rids)]


def _eos_stopping_some(runs: list[list[int]]) -> int:
    """A token that ends some of these runs early (at index >= 1) and not others."""
    for tok in sorted({t for run in runs for t in run[1:-1]}):
        hit = [tok in run[:-1] for run in runs]
        if 0 < sum(hit) < len(runs):
            return tok
    pytest.skip("no token ends only some runs")


@pytest.mark.parametrize("backend, n, new", [("numba", 9, 12), ("reference", 5, 4)])
@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_batched_tokens_equal_alone(tiny_llama, backend, n, new, sampling):
    model = tiny_llama(backend)
    prompts, rids = PROMPTS[:n], [40 + i for i in range(n)]
    free = _alone(model, prompts, rids, new, **sampling)
    eos = _eos_stopping_some(free)
    alone = _alone(model, prompts, rids, new, eos_ids=[eos], **sampling)
    assert min(map(len, alone)) < new and max(map(len, alone)) == new  # some rows left early
    seen: list[tuple[int, int]] = []
    batched = generate(model, prompts, new, request_ids=rids, eos_ids=[eos], batch_size=8,
                       on_token=lambda r, t: seen.append((r, t)), **sampling)
    assert batched == alone
    for r, out in zip(rids, batched):  # every token was reported, in order, per request
        assert [t for rr, t in seen if rr == r] == out


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_batched_step_logits_are_the_bits_of_decoding_alone(tiny_llama, tiny_cfg, backend):
    model = tiny_llama(backend)
    prompts = [PROMPTS[i] for i in (1, 0, 3, 2)]  # 20, 1, 11, 3 tokens
    rng = np.random.default_rng(3)
    steps = rng.integers(3, tiny_cfg.vocab_size, size=(len(prompts), 3))
    alone = []
    for p, toks in zip(prompts, steps):
        cache = KVCache()
        model.forward(np.asarray([p]), cache=cache)
        alone.append([model.forward(np.asarray([[t]]), cache=cache)[0] for t in toks])
    caches = []
    for p in prompts:
        caches.append(KVCache())
        model.forward(np.asarray([p]), cache=caches[-1])
    batch = KVCache.stack(caches)
    rows = list(range(len(prompts)))
    for j in range(steps.shape[1]):
        logits, _ = model.forward(steps[rows, j][:, None], cache=batch)
        for r, row in zip(rows, logits):
            assert bits(row) == bits(alone[r][j][0]), (r, j)
        if j == 0:  # the longest row leaves the batch: the others continue with the same bits
            rows = [1, 2, 3]
            batch.select(rows)
    assert list(batch.lengths) == [len(prompts[r]) + 3 for r in rows]


def test_padding_keeps_a_negative_zero_output(tiny_llama, tiny_cfg):
    """An output whose chain ends at -0 (a product that underflows) stays -0 past the padding."""
    model = tiny_llama("numba")
    dh, hq, hkv = tiny_cfg.head_dim, tiny_cfg.num_heads, tiny_cfg.num_kv_heads
    q = np.zeros((1, hq, 1, dh), np.float32)
    q[..., 0] = 1
    k = np.zeros((1, hkv, 2, dh), np.float32)
    k[:, :, 1, 0] = -80 * np.sqrt(np.float32(dh))  # p[1] = exp(-80) ~ 2e-35
    v = np.zeros((1, hkv, 2, dh), np.float32)
    v[:, :, 1] = -1e-20  # p[1] * v[1] underflows to -0
    o_alone, _ = model._attention(q, k, v, 1)
    assert np.all(np.signbit(o_alone)) and np.all(o_alone == 0)
    # the same row in a batch with a longer one: 4 padded slots after its 2 keys
    cache = KVCache()
    cache.lengths = np.array([1, 5], np.int64)
    kb, vb = cache._buffers(2, hkv, 6, dh)
    kb[0, :, :2], vb[0, :, :2] = k[0], v[0]
    kb[1], vb[1] = 0.5, 0.25
    o, _ = model._attention(np.concatenate([q, q]), kb, vb, cache.lengths)
    assert bits(o[0]) == bits(o_alone[0])


def test_batch_composition_does_not_matter(tiny_llama):
    model = tiny_llama("numba")
    rids = list(range(200, 200 + len(PROMPTS)))
    runs = {}
    for size in (1, 3, 8):
        out = generate(model, PROMPTS, 8, request_ids=rids, batch_size=size, **SAMPLED)
        runs[size] = dict(zip(rids, out))
    order = [4, 8, 0, 6, 2, 7, 1, 5, 3]
    out = generate(model, [PROMPTS[i] for i in order], 8, request_ids=[rids[i] for i in order], **SAMPLED)
    runs["shuffled"] = dict(zip([rids[i] for i in order], out))
    assert runs[1] == runs[3] == runs[8] == runs["shuffled"]


def test_equal_prompts_share_a_prefill_and_still_differ_by_request(tiny_llama):
    model = tiny_llama("numba")
    prompt = PROMPTS[3]
    together = generate(model, [prompt] * 4, 6, request_ids=[0, 1, 2, 3], **SAMPLED)
    assert together == _alone(model, [prompt] * 4, [0, 1, 2, 3], 6, **SAMPLED)
    assert len({tuple(t) for t in together}) > 1


def test_bad_batch_size(tiny_llama):
    with pytest.raises(ValueError, match="batch_size"):
        generate(tiny_llama("numba"), [PROMPTS[0]], 2, batch_size=0)
