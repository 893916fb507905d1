"""Deterministic generation: a request's tokens depend only on (seed, request id, token index),
its prompt and the model, never on the other requests in the batch or on the thread count.

Each request runs its own prefill and KV-cached decode, so no padding or shared positions
can leak between requests. Token j of request r: logits of the last position, divided by the
temperature (one fp32 division), softmax (backend op), then `sample_rows` with
u = rng.sample_uniform(seed, r, j) and top_p; temperature 0 means greedy (lowest id on ties).
"""

from __future__ import annotations

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
) -> list[list[int]]:
    """New token ids per prompt; stops at max_new_tokens or after an eos id."""
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    ids = list(request_ids) if request_ids is not None else list(range(len(prompts)))
    if len(ids) != len(prompts):
        raise ValueError("one request id per prompt")
    results = []
    for prompt, rid in zip(prompts, ids):
        if len(prompt) == 0:
            raise ValueError(f"request {rid} has an empty prompt")
        cache = KVCache()
        logits, _ = model.forward(np.asarray([prompt], np.int64), cache=cache)
        out: list[int] = []
        for j in range(max_new_tokens):
            tok = next_token(model, logits[-1], temperature, top_p, seed, rid, j)
            out.append(tok)
            if on_token:
                on_token(rid, tok)
            if tok in eos_ids or j == max_new_tokens - 1:
                break
            logits, _ = model.forward(np.asarray([[tok]], np.int64), cache=cache)
        results.append(out)
    return results
