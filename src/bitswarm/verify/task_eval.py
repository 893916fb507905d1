"""Verifiable task evaluation: a model's completions of many prompts, every token committed in one
chain, disputed through verify.game with inference's token computation.

A task-eval record (task_eval.json, version 2; not the loss eval's eval.json) fixes the job:
the model CID, the items' prompt token ids, seed, temperature, top_p and max_new_tokens per item
(fixed length, no early stop, so every item has the same number of leaves). Item i samples with
request id i, so items draw from different random streams. It holds per item the generated
tokens and the hash of the logits row each was sampled from, and ONE commitment chain across all
items in item-major order: leaf L is token L % max_new_tokens of item L // max_new_tokens, and
c_L = sha256(c_{L-1} | u32 token | row hash) with c_{-1} = 32 zero bytes (inference.commit), so
the last leaf commits every output of every item. Leaf L's trace is inference's computation of
that token (the forward of the last position on the item's own prefix, plus the sampling), so
ops_per_token is inference's; the referee takes the item's prefix from a side whose chain over
all previous leaves reaches the agreed before.

This layer knows token ids only (verify imports neither jobs nor swarm): which tasks the prompts
come from and how completions are scored is jobs.eval_job's business.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bitswarm.repro.hashing import merkle_root, tensor_hash
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.game import ZERO, Computation, GameError, Party, Referee, Trace, play, read_record, sides
from bitswarm.verify.inference import commit, token_forward, traced_token
from bitswarm.verify.trace import recompute

FILE = "task_eval.json"
KIND = "task_eval"
VERSION = 2  # 2: tensor hashes are BLAKE3 (repro.hashing v2)
JOB_KEYS = ("model", "prompt_ids", "seed", "temperature", "top_p", "max_new_tokens")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class TaskEvalError(GameError):
    pass


def item_job(job: dict, i: int) -> dict:
    """Item i as an inference job (inference.token_forward's terms): its prompt, request id i."""
    return {"prompt_ids": job["prompt_ids"][i], "max_new_tokens": job["max_new_tokens"],
            "temperature": job["temperature"], "top_p": job["top_p"], "seed": job["seed"], "request_id": i}


def num_leaves(job: dict) -> int:
    return len(job["prompt_ids"]) * job["max_new_tokens"]


def ops_per_token(model, job: dict) -> int:
    """Ops traced for one token: the same for every token of every item (each prefix's KV cache
    is built untraced, and the RoPE rows up front)."""
    return len(traced_token(model, item_job(job, 0), [], 0, None)[0].records)


def run(model, job: dict, out: Path, adversary: Adversary | None = None) -> dict:
    """Generate max_new_tokens tokens for every item (no early stop) and write the record."""
    out = Path(out)
    if (out / FILE).exists():
        raise TaskEvalError(f"{out} already holds a task-eval record; choose a new output directory")
    n, limit = job["max_new_tokens"], model.cfg.max_position_embeddings
    if not job["prompt_ids"] or any(len(p) == 0 for p in job["prompt_ids"]):
        raise TaskEvalError("a task eval needs at least one item, and every item a non-empty prompt")
    for i, p in enumerate(job["prompt_ids"]):
        if len(p) + n > limit:
            raise TaskEvalError(f"item {i}: prompt ({len(p)} tokens) + max_new_tokens ({n}) exceeds the model's "
                                f"context of {limit} tokens")
    if adversary is not None:
        try:
            adversary.check(num_leaves(job), ops_per_token(model, job) if adversary.name == "bitflip" else None,
                            what="token")
        except ValueError as e:
            raise TaskEvalError(str(e)) from None
    tokens, rows, commits, prev = [], [], [], ZERO
    for i in range(len(job["prompt_ids"])):
        tokens.append([])
        rows.append([])
        for j in range(n):
            tok, row = token_forward(model, item_job(job, i), tokens[i], j, adversary, step=i * n + j + 1)
            tokens[i].append(tok)
            rows[i].append(tensor_hash(row))
            prev = commit(prev, tok, rows[i][-1])
            commits.append(prev)
    record = {"version": VERSION, "kind": KIND, **{k: job[k] for k in JOB_KEYS}, "tokens": tokens,
              "row_hashes": rows, "commitments": commits, "root": merkle_root(commits)}
    out.mkdir(parents=True, exist_ok=True)
    if adversary is not None:
        adversary.save(out)
    (out / FILE).write_text(json.dumps(record, indent=1))
    return {"tokens": tokens, "root": record["root"]}


def _check(rec: dict) -> str | None:
    """Why a record's shape cannot be played (records arrive from other nodes), or None."""
    def ints(xs, top):
        return isinstance(xs, list) and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < top for x in xs)

    def hexes(xs):
        return isinstance(xs, list) and all(isinstance(x, str) and _HEX64.fullmatch(x) for x in xs)

    prompts, n = rec.get("prompt_ids"), rec.get("max_new_tokens")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return "max_new_tokens must be a positive integer"
    if not isinstance(prompts, list) or not prompts or not all(ints(p, 2**32) and p for p in prompts):
        return "prompt_ids must be a non-empty list of non-empty token id lists"
    toks, rows = rec.get("tokens"), rec.get("row_hashes")
    for name, xs, ok in (("tokens", toks, lambda t: ints(t, 2**32)), ("row_hashes", rows, hexes)):
        if not isinstance(xs, list) or len(xs) != len(prompts) or not all(ok(x) and len(x) == n for x in xs):
            return f"{name} must hold {n} entries for each of the {len(prompts)} items"
    if not hexes(rec.get("commitments")) or len(rec["commitments"]) != len(prompts) * n:
        return f"commitments must be {len(prompts) * n} sha256 hex digests"
    return None


def load(out: Path) -> dict:
    rec = read_record(out, FILE, KIND, VERSION, TaskEvalError)
    why = _check(rec)
    if why:
        raise TaskEvalError(f"{Path(out) / FILE}: {why}")
    return rec


class TaskEvalRecord(Computation):
    """A side's task-eval record, computed as its adversary (if any) computes."""

    def __init__(self, out: Path, model_factory):
        self.rec, self.adversary, self.model_factory = load(out), Adversary.load(out), model_factory
        self.job = {k: self.rec[k] for k in JOB_KEYS}
        self.n = self.job["max_new_tokens"]
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

    def _before(self, leaf: int) -> str:
        return self.rec["commitments"][leaf - 1] if leaf else ZERO

    def _traced(self, leaf: int, capture: int | None = None):
        i, j = divmod(leaf, self.n)
        return traced_token(self.model, item_job(self.job, i), self.rec["tokens"][i], j, self.adversary,
                            capture=capture, step=leaf + 1)

    def trace(self, leaf: int) -> Trace:
        if leaf not in self._traces:
            tracer, tok, row = self._traced(leaf)
            if self.adversary and self.adversary.name == "token":
                i, j = divmod(leaf, self.n)
                tok = self.rec["tokens"][i][j]  # what it reported
            before = self._before(leaf)
            self._traces[leaf] = Trace(tracer.records, before, commit(before, tok, row))
        return self._traces[leaf]

    def inputs(self, leaf: int, op: int) -> tuple:
        return self._traced(leaf, capture=op)[0].captured

    def prefix(self, leaf: int, before: str) -> list[int] | None:
        """The item's tokens before `leaf`, if this record's own chain over all previous leaves
        (every item's tokens and row hashes) reaches `before`."""
        prev = ZERO
        toks = [t for item in self.rec["tokens"] for t in item]
        rows = [r for item in self.rec["row_hashes"] for r in item]
        for t, r in zip(toks[:leaf], rows[:leaf]):
            prev = commit(prev, t, r)
        if prev != before:
            return None
        i, j = divmod(leaf, self.n)
        return list(self.rec["tokens"][i][:j])


class TaskEvalReferee(Referee):
    def __init__(self, model_factory, job: dict):
        self.job, self.model = job, model_factory()

    def start(self) -> str:
        return ZERO

    def recompute(self, op: str, args, kwargs) -> list:
        return recompute(self.model.B, op, args, kwargs)

    def honest_trace(self, leaf: int, before: str | None, parties: list[Party]) -> Trace:
        before = before or ZERO
        for p in parties:  # the agreed prefix, from a side whose record chains up to it
            prefix = p.comp.prefix(leaf, before)
            if prefix is not None:
                break
        else:
            raise TaskEvalError(f"no side handed over the {leaf} agreed tokens before leaf {leaf}")
        i, j = divmod(leaf, self.job["max_new_tokens"])
        tracer, tok, row = traced_token(self.model, item_job(self.job, i), prefix, j, None)
        return Trace(tracer.records, before, commit(before, tok, row))


def dispute(dir_a: Path, dir_b: Path, model_factory, tactics=(None, None)) -> dict:
    """The game over two task-eval records of one job: A answers as the solver, B as the
    challenger. The report names the divergent leaf as a token (over all items) and also as
    (item, token within the item)."""
    comps = {"A": TaskEvalRecord(dir_a, model_factory), "B": TaskEvalRecord(dir_b, model_factory)}
    job = comps["A"].job
    if comps["B"].job != job:
        raise TaskEvalError("the two records are of different task-eval jobs")
    referee = TaskEvalReferee(model_factory, job)
    n = ops_per_token(referee.model, job)
    report = play(*sides(list(comps.values()), n, tactics), referee, n).report("token", n)
    leaf = report["first_divergent_token"]
    report["first_divergent_item"] = None if leaf is None else leaf // job["max_new_tokens"]
    report["item_token"] = None if leaf is None else leaf % job["max_new_tokens"]
    return report
