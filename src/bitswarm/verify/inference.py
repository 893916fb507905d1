"""Verifiable inference: per-token commitments, and the dispute game over generated tokens.

An inference record (inference.json, version 1) fixes the model CID, prompt token ids, seed,
request id, temperature, top_p and max_new_tokens, and holds the generated token ids and one
commitment per token: c_j = sha256(c_{j-1} | u32 token_j | tensor hash of the logits row that
token j was sampled from), c_{-1} = 32 zero bytes, with a Merkle root over c_0..c_{n-1}. The
chain makes "differs at j" monotone, so bisection over tokens finds the first token where
two parties part; then both trace the computation of that token (one forward pass on the
agreed prefix, plus the sampling ops) and the op bisection and referee of the training game
run on those traces. Generation here is KV-cached and batch-invariant (repro.generate).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import numpy as np

from bitswarm.repro.generate import next_token
from bitswarm.repro.hashing import merkle_root, tensor_hash
from bitswarm.repro.model import KVCache
from bitswarm.verify import merkle
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.trace import TracingBackend, chain_digests, input_hashes, recompute

FILE = "inference.json"
VERSION = 1


class InferenceError(ValueError):
    pass


def _commit(prev: bytes, token: int, logits_row: np.ndarray) -> bytes:
    return hashlib.sha256(prev + struct.pack("<I", token) + bytes.fromhex(tensor_hash(logits_row))).digest()


def _token_forward(model, job: dict, prefix: list[int], j: int, adversary: Adversary | None, outer=None):
    """(token j, its logits row) from prompt + prefix[:j] (cache rebuilt untraced), the forward of the
    last input position and the sampling traced through `outer`."""
    ids = list(job["prompt_ids"]) + list(prefix[:j])
    cache = KVCache()
    if len(ids) > 1:
        model.forward(np.asarray([ids[:-1]], np.int64), cache=cache)
    plain = model.B
    inner = adversary.wrap_backend(plain, j + 1) if adversary and adversary.name == "bitflip" else plain
    model.B = outer(inner) if outer else inner
    try:
        logits, _ = model.forward(np.asarray([ids[-1:]], np.int64), cache=cache)
        row = logits[-1]
        tok = next_token(model, row, job["temperature"], job["top_p"], job["seed"], job["request_id"], j)
    finally:
        model.B = plain
    if adversary and adversary.name == "token" and j + 1 == adversary.step:
        tok = (tok + 1) % model.cfg.vocab_size
    return tok, row


def _traced_token(model, job: dict, prefix: list[int], j: int, adversary, capture: int | None = None) -> TracingBackend:
    """The tracer that recorded token j's computation (the adversary's fault innermost)."""
    tracers = []
    _token_forward(model, job, prefix, j, adversary,
                   outer=lambda inner: tracers.append(TracingBackend(inner, capture)) or tracers[-1])
    return tracers[-1]


def run(model, job: dict, out: Path, adversary: Adversary | None = None) -> dict:
    """Generate job["max_new_tokens"] tokens (no early stop) and write the inference record."""
    out = Path(out)
    if (out / FILE).exists():
        raise InferenceError(f"{out} already holds an inference record; choose a new --out")
    tokens, commits, prev = [], [], bytes(32)
    for j in range(job["max_new_tokens"]):
        tok, row = _token_forward(model, job, tokens, j, adversary)
        tokens.append(tok)
        prev = _commit(prev, tok, row)
        commits.append(prev.hex())
    record = {"version": VERSION, "kind": "infer", **job, "tokens": tokens, "commitments": commits,
              "root": merkle_root(commits)}
    out.mkdir(parents=True, exist_ok=True)
    if adversary is not None:
        adversary.save(out)
    (out / FILE).write_text(json.dumps(record, indent=1))
    return {"tokens": tokens, "root": record["root"]}


def load(out: Path) -> dict:
    try:
        rec = json.loads((Path(out) / FILE).read_text())
    except FileNotFoundError:
        raise InferenceError(f"{out} holds no inference record ({FILE})") from None
    if rec.get("version") != VERSION or rec.get("kind") != "infer":
        raise InferenceError(f"{out}/{FILE} is not a version-{VERSION} inference record")
    return rec


JOB_KEYS = ("model", "prompt_ids", "seed", "request_id", "temperature", "top_p", "max_new_tokens")


def dispute(dir_a: Path, dir_b: Path, model_factory) -> dict:
    """Bisection over tokens, then over the ops of that token's computation, then the referee."""
    recs = {"A": load(dir_a), "B": load(dir_b)}
    advs = {"A": Adversary.load(dir_a), "B": Adversary.load(dir_b)}
    job = {k: recs["A"][k] for k in JOB_KEYS}
    if any(recs["B"][k] != job[k] for k in JOB_KEYS):
        raise InferenceError("the two records are of different inference jobs")
    result = {"agree": False, "first_divergent_token": None, "op": None, "op_index": None, "rounds": 1,
              "winner": None, "referee": None, "referee_seconds": 0.0, "token_seconds": 0.0}
    if recs["A"]["root"] == recs["B"]["root"]:
        return {**result, "agree": True}
    n = len(recs["A"]["commitments"])
    # token bisection on the chained commitments, with proofs
    lo, hi = -1, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        result["rounds"] += 1
        got = {}
        for side, rec in recs.items():
            c = rec["commitments"][mid]
            if not merkle.verify(c, merkle.proof(rec["commitments"], mid), rec["root"]):
                return {**result, "winner": "B" if side == "A" else "A", "referee": "proof"}
            got[side] = c
        lo, hi = (mid, hi) if got["A"] == got["B"] else (lo, mid)
    j = hi
    result["first_divergent_token"] = j
    agreed_prefix = recs["A"]["tokens"][:j]
    # each party traces its own computation of token j on the agreed prefix
    traces = {}
    for side in recs:
        t0 = time.perf_counter()
        traces[side] = _traced_token(model_factory(), job, agreed_prefix, j, advs[side]).records
        result["token_seconds"] = max(result["token_seconds"], round(time.perf_counter() - t0, 4))
    chains = {s: chain_digests(t) for s, t in traces.items()}
    result["rounds"] += 1 + max(1, int(np.ceil(np.log2(max(len(c) for c in chains.values()) + 1))))
    i = next((k for k, (x, y) in enumerate(zip(chains["A"], chains["B"])) if x != y), min(len(chains["A"]), len(chains["B"])))
    result["op_index"] = i
    ra = traces["A"][i] if i < len(traces["A"]) else None
    rb = traces["B"][i] if i < len(traces["B"]) else None
    # referee (its clock starts once the parties have handed over what it asked for)
    ref_model = model_factory()
    if ra is not None and rb is not None and ra["op"] == rb["op"] and ra["in"] == rb["in"]:
        for side in recs:  # a party whose tensors are not the agreed ones is passed over
            op, args, kwargs = _traced_token(model_factory(), job, agreed_prefix, j, advs[side], capture=i).captured
            start = time.perf_counter()
            if input_hashes(args, kwargs) == ra["in"]:
                break
        else:
            raise InferenceError("neither party produced the agreed inputs of the disputed op")
        truth = recompute(ref_model.B, op, args, kwargs)
        got = {"A": ra["out"], "B": rb["out"]}
        result["op"], result["referee"] = op, "op"
    elif ra == rb:  # identical traces, different token: the fault is in what was reported
        start = time.perf_counter()
        truth, _ = _token_forward(ref_model, job, agreed_prefix, j, None)
        got = {s: recs[s]["tokens"][j] for s in recs}
        result["op"], result["referee"] = "report", "token"
    else:
        start = time.perf_counter()
        honest = _traced_token(ref_model, job, agreed_prefix, j, None).records
        truth = honest[i] if i < len(honest) else None
        got = {"A": ra, "B": rb}
        result["op"], result["referee"] = (truth or ra or rb or {}).get("op"), "token"
    result["referee_seconds"] = round(time.perf_counter() - start, 4)
    winners = [s for s in recs if got[s] == truth]
    return {**result, "winner": winners[0] if len(winners) == 1 else None}
