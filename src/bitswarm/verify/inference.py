"""Verifiable inference: per-token commitments, and their dispute through verify.game.

An inference record (inference.json, version 3: tensor hashes are BLAKE3, hashing v2) fixes the model CID, prompt token ids, seed,
request id, temperature, top_p and max_new_tokens, and holds the generated token ids, the hash
of the logits row each was sampled from, and one commitment per token: c_j = sha256(c_{j-1} |
u32 token_j | tensor hash of that logits row), c_{-1} = 32 zero bytes, with a Merkle root over
c_0..c_{n-1}. The commitments are the game's leaves: leaf j's before is c_{j-1}, its trace the
computation of token j (one forward pass of the last position on the agreed prefix, plus the
sampling ops), so the same game, arbiter and referee as training decide an inference dispute.
Generation here is KV-cached and batch-invariant (repro.generate); the prefix's KV cache is
rebuilt untraced, so a fault there shows as different inputs of a traced op and the referee
recomputes the token.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from bitswarm.repro.generate import next_token
from bitswarm.repro.hashing import merkle_root, tensor_hash
from bitswarm.repro.model import KVCache
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.game import ZERO, Computation, GameError, Party, Referee, Trace, play, read_record, sides
from bitswarm.verify.trace import TracingBackend, recompute

FILE = "inference.json"
VERSION = 3


class InferenceError(GameError):
    pass


def commit(prev: str, token: int, row_hash: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + struct.pack("<I", token) + bytes.fromhex(row_hash)).hexdigest()


def token_forward(model, job: dict, prefix: list[int], j: int, adversary: Adversary | None, outer=None,
                  step: int | None = None):
    """(token j, its logits row) from prompt + prefix[:j] (cache rebuilt untraced), the forward of the
    last input position and the sampling traced through `outer`. `step` is the 1-based leaf the
    adversary counts (default j + 1; a multi-item record's leaves run across its items)."""
    step = j + 1 if step is None else step
    ids = list(job["prompt_ids"]) + list(prefix[:j])
    # RoPE rows for the whole job up front: never built inside the traced part.
    model._rope(0, len(job["prompt_ids"]) + job["max_new_tokens"])
    cache = KVCache()
    if len(ids) > 1:
        model.forward(np.asarray([ids[:-1]], np.int64), cache=cache)
    plain = model.B
    inner = adversary.wrap_backend(plain, step) if adversary and adversary.name == "bitflip" else plain
    model.B = outer(inner) if outer else inner
    try:
        logits, _ = model.forward(np.asarray([ids[-1:]], np.int64), cache=cache)
        row = logits[-1]
        tok = next_token(model, row, job["temperature"], job["top_p"], job["seed"], job["request_id"], j)
    finally:
        model.B = plain
    if adversary and adversary.name == "token" and step == adversary.step:
        tok = (tok + 1) % model.cfg.vocab_size
    return tok, row


def traced_token(model, job: dict, prefix: list[int], j: int, adversary, capture: int | None = None,
                 step: int | None = None):
    """(tracer, token, logits row hash) of token j's computation (the adversary's fault innermost)."""
    tracers = []
    tok, row = token_forward(model, job, prefix, j, adversary, step=step,
                             outer=lambda inner: tracers.append(TracingBackend(inner, capture)) or tracers[-1])
    return tracers[-1], tok, tensor_hash(row)


def run(model, job: dict, out: Path, adversary: Adversary | None = None) -> dict:
    """Generate job["max_new_tokens"] tokens (no early stop) and write the inference record."""
    out = Path(out)
    if (out / FILE).exists():
        raise InferenceError(f"{out} already holds an inference record; choose a new --out")
    if adversary is not None:
        try:
            adversary.check(job["max_new_tokens"], ops_per_token(model, job) if adversary.name == "bitflip" else None,
                            what="token")
        except ValueError as e:
            raise InferenceError(str(e)) from None
    tokens, rows, commits, prev = [], [], [], ZERO
    for j in range(job["max_new_tokens"]):
        tok, row = token_forward(model, job, tokens, j, adversary)
        tokens.append(tok)
        rows.append(tensor_hash(row))
        prev = commit(prev, tok, rows[-1])
        commits.append(prev)
    record = {"version": VERSION, "kind": "infer", **job, "tokens": tokens, "row_hashes": rows,
              "commitments": commits, "root": merkle_root(commits)}
    out.mkdir(parents=True, exist_ok=True)
    if adversary is not None:
        adversary.save(out)
    (out / FILE).write_text(json.dumps(record, indent=1))
    return {"tokens": tokens, "root": record["root"]}


def text_of(tok, tokens: list[int]) -> str:
    """What a person reads of a record's tokens: up to the first end-of-turn. The record commits
    to all max_new_tokens tokens (a job's size is fixed before it runs); what a model says after
    its turn ended ("\nsystem ...") is not its answer."""
    eos = tok.eos_token_id
    end = tokens.index(eos) if eos in tokens else len(tokens)
    return tok.decode(tokens[:end], skip_special_tokens=True)


def load(out: Path) -> dict:
    return read_record(out, FILE, "infer", VERSION, InferenceError)


JOB_KEYS = ("model", "prompt_ids", "seed", "request_id", "temperature", "top_p", "max_new_tokens")


def ops_per_token(model, job: dict) -> int:
    """Ops traced for one token: a pure function of the model and the job (the same for every
    token: the KV cache of the prefix is built untraced)."""
    return len(traced_token(model, job, [], 0, None)[0].records)


class InferRecord(Computation):
    """A side's inference record, computed as its adversary (if any) computes."""

    def __init__(self, out: Path, model_factory):
        self.rec, self.adversary, self.model_factory = load(out), Adversary.load(out), model_factory
        self.job = {k: self.rec[k] for k in JOB_KEYS}
        self._traces: dict[int, Trace] = {}
        self._model = None

    @property
    def model(self):
        """This side's model, loaded once: generation never changes its weights."""
        if self._model is None:
            self._model = self.model_factory()
        return self._model

    def leaves(self) -> list[str]:
        return list(self.rec["commitments"])

    def _before(self, j: int) -> str:
        return self.rec["commitments"][j - 1] if j else ZERO

    def trace(self, j: int) -> Trace:
        if j not in self._traces:
            tracer, tok, row = traced_token(self.model, self.job, self.rec["tokens"], j, self.adversary)
            if self.adversary and self.adversary.name == "token":
                tok = self.rec["tokens"][j]  # what it reported
            self._traces[j] = Trace(tracer.records, self._before(j), commit(self._before(j), tok, row))
        return self._traces[j]

    def inputs(self, j: int, i: int) -> tuple:
        return traced_token(self.model, self.job, self.rec["tokens"], j, self.adversary, capture=i)[0].captured

    def prefix(self, j: int, before: str) -> list[int] | None:
        """tokens[:j] if this record's own chain over them (tokens and row hashes) reaches `before`."""
        prev = ZERO
        toks, rows = self.rec.get("tokens", []), self.rec.get("row_hashes", [])
        if len(toks) < j or len(rows) < j:
            return None
        for t, r in zip(toks[:j], rows[:j]):
            prev = commit(prev, int(t), r)
        return list(toks[:j]) if prev == before else None


class InferReferee(Referee):
    def __init__(self, model_factory, job: dict):
        self.job, self.model = job, model_factory()

    def start(self) -> str:
        return ZERO

    def recompute(self, op: str, args, kwargs) -> list:
        return recompute(self.model.B, op, args, kwargs)

    def honest_trace(self, j: int, before: str | None, parties: list[Party]) -> Trace:
        before = before or ZERO
        for p in parties:  # the agreed prefix, from a side whose record chains up to it
            prefix = p.comp.prefix(j, before)
            if prefix is not None:
                break
        else:
            raise InferenceError(f"no side handed over the {j} agreed tokens before token {j}")
        tracer, tok, row = traced_token(self.model, self.job, prefix, j, None)
        return Trace(tracer.records, before, commit(before, tok, row))


def dispute(dir_a: Path, dir_b: Path, model_factory, tactics=(None, None)) -> dict:
    """The game over two inference records of one job: A answers as the solver, B as the challenger."""
    comps = {"A": InferRecord(dir_a, model_factory), "B": InferRecord(dir_b, model_factory)}
    job = comps["A"].job
    if comps["B"].job != job:
        raise InferenceError("the two records are of different inference jobs")
    referee = InferReferee(model_factory, job)
    n = ops_per_token(referee.model, job)
    return play(*sides(list(comps.values()), n, tactics), referee, n).report("token", n)
