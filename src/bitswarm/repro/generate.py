"""Deterministic generation: a request's tokens depend only on (seed, request id, token index),
its prompt and the model, never on the other requests in the batch or on the thread count.

Requests that join the batch at the same time are prefilled in one packed pass (`Llama.prefill`:
their prompts' tokens go through the row-local ops as one block, while attention and the KV
cache stay per prompt; equal prompts among them are prefilled once), so each request still gets
the bits of prefilling its prompt alone. Decoding then runs up to `batch_size` unfinished
requests together, one forward per step over their last tokens, each row at its own position in
a shared `KVCache` (see `model`): every op is row-local and the cache's padding is masked so
that it changes no bit, so a row's logits are exactly those of decoding that request alone. A
request that finishes leaves the batch and the next waiting one joins it. Token j of request r:
logits of the last position, divided by the temperature (one fp32 division), softmax (backend
op), then `sample_rows` with u = rng.sample_uniform(seed, r, j) and top_p; temperature 0 means
greedy (lowest id on ties). Sampling is row-local too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from bitswarm.repro.model import KVCache, Llama
from bitswarm.repro.rng import sample_uniform

F32 = np.float32


def next_token(model: Llama, logits_row: np.ndarray, temperature: float, top_p: float, seed: int,
               request_id: int, index: int) -> int:
    B = model.B
    row = logits_row.reshape(1, -1).astype(F32, copy=False)
    if temperature == 0:
        return int(B.greedy(row)[0])
    probs = B.softmax(row / F32(temperature))
    u = np.array([sample_uniform(seed, request_id, index)], F32)
    return int(B.sample_rows(probs, F32(top_p), u)[0])


def next_tokens(model: Llama, logits: np.ndarray, temperature: float, top_p: float, seed: int,
                request_ids: Sequence[int], indices: Sequence[int]) -> list[int]:
    """`next_token` for every row of logits (n, vocab) at once: the same bits row by row."""
    B = model.B
    rows = np.ascontiguousarray(logits, F32)
    if temperature == 0:
        return [int(t) for t in B.greedy(rows)]
    probs = B.softmax(rows / F32(temperature))
    u = np.array([sample_uniform(seed, r, j) for r, j in zip(request_ids, indices)], F32)
    return [int(t) for t in B.sample_rows(probs, F32(top_p), u)]


def generate(
    model: Llama,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    request_ids: Sequence[int] | None = None,
    eos_ids: Sequence[int] = (),
    on_token: Callable[[int, int], None] | None = None,
    batch_size: int = 8,
) -> list[list[int]]:
    """New token ids per prompt; stops at max_new_tokens or after an eos id.

    Up to `batch_size` requests decode together (1: one request after the other); the tokens
    never depend on it. `on_token(request_id, token)` fires for every token as it is chosen
    (with several requests in flight their tokens interleave)."""
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ids = list(request_ids) if request_ids is not None else list(range(len(prompts)))
    if len(ids) != len(prompts):
        raise ValueError("one request id per prompt")
    for prompt, rid in zip(prompts, ids):
        if len(prompt) == 0:
            raise ValueError(f"request {rid} has an empty prompt")
    eos = frozenset(int(e) for e in eos_ids)
    results: list[list[int]] = [[] for _ in prompts]

    def emit(n: int, tok: int) -> bool:
        """Record request n's next token; True when the request is finished."""
        results[n].append(tok)
        if on_token:
            on_token(ids[n], tok)
        return tok in eos or len(results[n]) == max_new_tokens

    def final_length(n: int) -> int:  # cache positions request n can reach
        return len(prompts[n]) + max_new_tokens - 1

    # prompt -> (logits row, cache) of the latest requests to join, for equal prompts joining
    # later; a cache stays unextended (joining a batch copies it) until decoding alone adopts it
    prefilled: dict[tuple[int, ...], tuple[np.ndarray, KVCache]] = {}

    def start(group: list[int]) -> list[tuple[int, KVCache]]:
        """Prefill these requests in one packed pass, each distinct prompt once (none that is in
        `prefilled`), and emit their first tokens; returns those that go on, with their caches."""
        nonlocal prefilled
        keys = [tuple(int(t) for t in prompts[n]) for n in group]
        new: dict[tuple[int, ...], int] = {}  # prompts to prefill -> their first request
        for n, key in zip(group, keys):
            if key not in prefilled:
                new.setdefault(key, n)
        if new:
            caches = [KVCache(capacity=min(final_length(n), 2 * len(key) + 64)) for key, n in new.items()]
            prefilled |= zip(new, zip(model.prefill(list(new), caches), caches))
        prefilled = {key: prefilled[key] for key in keys}  # kept: this group's (bounds the memory)
        toks = next_tokens(model, np.stack([prefilled[key][0] for key in keys]), temperature, top_p, seed,
                           [ids[n] for n in group], [0] * len(group))
        going = []
        for n, key, tok in zip(group, keys, toks):
            if not emit(n, tok):
                going.append((n, prefilled[key][1]))
        return going

    waiting = deque(range(len(prompts)))
    active: list[int] = []  # requests in the batch, in the order of the cache's rows
    cache: KVCache | None = None
    with model.decoding():  # weights prepared for decoding, for this call only (Llama.decoding)
        while waiting or active:
            joining: list[tuple[int, KVCache]] = []
            while waiting and len(active) + len(joining) < batch_size:  # again if some end at once
                free = batch_size - len(active) - len(joining)
                joining += start([waiting.popleft() for _ in range(min(free, len(waiting)))])
            if joining:
                if cache is None and len(joining) == 1:
                    [(n, cache)] = joining  # decoding alone: the prefill's own cache, not a copy,
                    active = [n]
                    prefilled.clear()       # which decoding extends from here on
                else:
                    rows = [n for n in active] + [n for n, _ in joining]
                    longest = max(len(prompts[n]) + len(results[n]) - 1 for n in rows)
                    capacity = min(max(final_length(n) for n in rows), max(2 * longest, longest + 64))
                    cache = KVCache.stack(([cache] if cache is not None else []) + [c for _, c in joining], capacity)
                    active = rows
            if not active:
                continue
            last = np.asarray([[results[n][-1]] for n in active], np.int64)
            logits, _ = model.forward(last, cache=cache)
            toks = next_tokens(model, logits, temperature, top_p, seed, [ids[n] for n in active],
                               [len(results[n]) for n in active])
            staying = [r for r, (n, tok) in enumerate(zip(active, toks)) if not emit(n, tok)]
            if len(staying) < len(active):
                active = [active[r] for r in staying]
                if active:
                    cache.select(staying)
                else:
                    cache = None
    return results
