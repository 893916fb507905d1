"""The dispute game (after Verde), once for every kind of job: training, inference, eval.

A job's result is a list of leaves (the state after each training step, the chained commitment
after each generated token), committed as a Merkle root. Leaf k is computed from the leaf before
it (the "before": leaf k-1, or the job's start for k = 0) by a fixed sequence of `ops_per_leaf`
traced ops, a pure function of the spec. A party's trace of leaf k is chained from its before:
c_{-1} = before, c_i = H(c_{i-1} | H(record_i)); its trace root is the Merkle root over
c_0..c_{n-1}.

The arbiter (`play` here, JobMarket.vy on chain: the same rules) asks, checks and narrows:
1. commitments: each side's root and its last leaf with a proof bound to that index and the leaf
   count. Leaves are chained, so the last leaf is the result and commits its whole history:
   equal last leaves mean equal results and there is nothing to dispute (on chain the solver
   publishes its last leaf with its result and a challenge must name a different one).
   Then leaf bisection below it, keeping "lo-1 agreed, hi differs", until one leaf k: both
   agree on its before and differ on it.
2. trace commitments of leaf k: exactly `ops_per_leaf` digests (any other count loses).
3. op bisection over indices 0..n, where index n is virtual: each side's own committed leaf k,
   known to differ. It ends on one index i: the value at i-1 agreed (at -1: the before), at i
   not. So every commitment is bound at both ends: a trace that does not start from the agreed
   before differs at 0, one that does not reach the party's committed leaf differs at n.
4. the referee rules on that single transition (`rule`): with both records at i (checked against
   the agreed digest and each side's value) naming the same op and inputs, it recomputes that
   one op; otherwise it recomputes leaf k from the agreed before and compares the value at i.
   The honest side's value always equals the truth and the other side's never does, so the
   game has no draw when one side is honest.
A side that does not answer, or answers with a proof that does not verify, loses (on chain it
cannot answer at all and loses at the deadline).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bitswarm.errors import BitswarmError
from bitswarm.repro.hashing import merkle_root
from bitswarm.verify import merkle
from bitswarm.verify.trace import chain_digests, input_hashes

ZERO = "00" * 32
TACTICS = ("honest", "lie", "forge", "other_index", "silent")  # how a side may answer a query
TRACE_TACTICS = ("honest", "short", "long", "forge", "silent")  # how a side may commit a trace
PAD_OP = "pad"  # filler a side commits past the end of a shorter computation (skip, say)


class GameError(BitswarmError, ValueError):
    pass


@dataclass
class Trace:
    """One side's computation of one leaf: its op records, the before it started from and the
    leaf value it reached."""

    records: list[dict]
    before: str
    after: str

    def digests(self) -> list[str]:
        return chain_digests(self.records, self.before)


class Computation(ABC):
    """What one side computed, in the game's terms (training runs, inference and eval records)."""

    adversary = None  # the verify.adversary.Adversary it was computed with, if any

    @abstractmethod
    def leaves(self) -> list[str]:
        """The committed leaves."""

    @abstractmethod
    def trace(self, k: int) -> Trace:
        """This side's own computation of leaf k, from its own before."""

    @abstractmethod
    def inputs(self, k: int, i: int) -> tuple:
        """(op, args, kwargs) of op i of leaf k, handed to a referee."""


Tactic = Callable[[str, int], str]  # (query kind "leaf" | "trace" | "op", index) -> an action


def read_record(out, file: str, kind: str, version: int, error: type[Exception]) -> dict:
    """A job record (inference.json, eval.json) checked for its kind and version."""
    try:
        rec = json.loads((Path(out) / file).read_text())
    except FileNotFoundError:
        raise error(f"{out} holds no {kind} record ({file})") from None
    except ValueError as e:
        raise error(f"{out}/{file} is not valid JSON: {e}") from None
    if not isinstance(rec, dict) or rec.get("version") != version or rec.get("kind") != kind:
        raise error(f"{out}/{file} is not a version-{version} {kind} record; run `bitswarm {kind}` again")
    return rec


def honest(_kind: str, _index: int) -> str:
    return "honest"


def _other(h: str) -> str:
    return format(int(h, 16) ^ 1, "064x")


class Party:
    """One side of a dispute: answers every query from its computation, as its tactic says."""

    def __init__(self, name: str, computation: Computation, ops_per_leaf: int, tactic: Tactic = honest):
        self.name, self.comp, self.n, self.tactic = name, computation, ops_per_leaf, tactic
        self.log = computation.leaves()
        self.root = merkle_root(self.log) if self.log else ZERO
        self._committed: dict[int, list[str]] = {}  # leaf -> the digests of its (padded) trace
        self._sent: dict[int, list[str]] = {}  # leaf -> the digests it committed (short, long: others)

    # -- leaf bisection ------------------------------------------------------------------

    def answer_leaf(self, k: int):
        """(leaf, proof) for leaf k, or None when this side lets the deadline pass."""
        return self._answer(self.tactic("leaf", k), self.log, k)

    # -- the disputed leaf's trace ----------------------------------------------------------

    def _records(self, k: int) -> list[dict]:
        """This side's trace of leaf k, padded or cut to n ops: what it commits to."""
        recs = list(self.comp.trace(k).records[: self.n])
        return recs + [{"i": j, "op": PAD_OP, "in": [], "out": []} for j in range(len(recs), self.n)]

    def committed_digests(self, k: int) -> list[str]:
        """The digests this side commits for leaf k."""
        if k not in self._committed:
            self._committed[k] = chain_digests(self._records(k), self.comp.trace(k).before)
        return self._committed[k]

    def commit_trace(self, k: int):
        """(trace root, op count) for leaf k, or None."""
        action = self.tactic("trace", k)
        digests = self.committed_digests(k)
        if action == "silent":
            return None
        if action == "short":
            digests = digests[:-1]
        elif action == "long":
            digests = digests + [hashlib.sha256(digests[-1].encode()).hexdigest()]
        elif action == "forge":
            return os.urandom(32).hex(), self.n
        self._sent[k] = digests
        return merkle_root(digests), len(digests)

    def answer_op(self, k: int, i: int):
        """(digest, proof) of op i of leaf k, or None."""
        return self._answer(self.tactic("op", i), self._sent.get(k) or self.committed_digests(k), i)

    def op_material(self, k: int, i: int):
        """The record behind digest i, handed to a referee (None past the job's n ops)."""
        return self._records(k)[i] if i < self.n else None

    @staticmethod
    def _answer(action: str, leaves: list[str], k: int):
        if action == "silent" or not leaves:
            return None
        if action == "other_index" and len(leaves) > 1:
            j = k ^ 1 if (k ^ 1) < len(leaves) else 0
            return leaves[j], merkle.proof(leaves, j)
        if k >= len(leaves):
            return None
        leaf, proof = leaves[k], merkle.proof(leaves, k)
        if action == "lie":
            return _other(leaf), proof
        if action == "forge":
            return os.urandom(32).hex(), [[s, os.urandom(32).hex()] for s, _ in proof]
        return leaf, proof


def sides(comps: list[Computation], ops_per_leaf: int, tactics=(None, None)) -> list[Party]:
    """Side A (the solver) and side B (the challenger), each answering as `tactics` says or, by
    default, as the adversary it was computed with."""
    return [Party(name, c, ops_per_leaf, t or (c.adversary.tactic() if c.adversary else honest))
            for name, c, t in zip("AB", comps, tactics)]


class Referee(ABC):
    """Recomputes what the game pinned down, with its own kernels, from the agreed before."""

    @abstractmethod
    def honest_trace(self, k: int, before: str | None, parties: list[Party]) -> Trace:
        """The true computation of leaf k from the agreed before (None: the job's start), whose
        material (a checkpoint, a prefix) it may take from the parties, hash-checked."""

    @abstractmethod
    def recompute(self, op: str, args, kwargs) -> list:
        """One op's output hashes, computed by the referee."""

    @abstractmethod
    def start(self) -> str:
        """The before of leaf 0 (the initial state hash; zeros for a token chain)."""


def link(prev: str, record: dict) -> str:
    """The chained digest after `record`, from `prev` (trace.chain_digests, one link)."""
    return chain_digests([record], prev)[0]


def rule(referee: Referee, parties: dict[str, Party], k: int, i: int, n: int, before: str | None,
         prev: str | None, values: dict[str, str]) -> dict:
    """The verdict on the transition the game pinned: index i of leaf k, where `before` is the agreed
    leaf k-1 (None for leaf 0: the job's start), `prev` the agreed digest at i-1 (unused when
    i = 0: the chain starts from the before) and values[side] each side's value at i (at i = n:
    each side's committed leaf). Returns {"winner", "op", "referee", "referee_seconds"}."""
    if i < n:
        recs = {s: parties[s].op_material(k, i) for s in values}
        seed = prev if i > 0 else (before or referee.start())
        ok = all(r is not None and link(seed, r) == values[s] for s, r in recs.items())
        ra, rb = recs.values()
        if ok and ra["op"] == rb["op"] and ra["in"] == rb["in"] and ra["op"] != PAD_OP:
            for s in values:  # a party whose tensors are not the agreed ones is passed over
                op, args, kwargs = parties[s].comp.inputs(k, i)
                if op == ra["op"] and input_hashes(args, kwargs) == ra["in"]:
                    start = time.perf_counter()
                    truth = link(seed, {**ra, "out": referee.recompute(op, args, kwargs)})
                    winners = [s2 for s2, v in values.items() if v == truth]
                    if len(winners) == 1:
                        return {"winner": winners[0], "op": op, "referee": "op",
                                "referee_seconds": round(time.perf_counter() - start, 4)}
                    break
    start = time.perf_counter()
    honest_t = referee.honest_trace(k, before, list(parties.values()))
    if len(honest_t.records) != n:
        raise GameError(f"the referee's own computation has {len(honest_t.records)} ops, the job says {n}")
    digests = honest_t.digests()
    truth = digests[i] if i < n else honest_t.after
    op = honest_t.records[i]["op"] if i < n else "result"
    winners = [s for s, v in values.items() if v == truth]
    return {"winner": winners[0] if len(winners) == 1 else None, "op": op, "referee": "step",
            "referee_seconds": round(time.perf_counter() - start, 4)}


@dataclass
class Outcome:
    agree: bool = False
    leaf: int | None = None
    op_index: int | None = None
    rounds: int = 0
    winner: str | None = None
    referee: str | None = None
    op: str | None = None
    referee_seconds: float = 0.0
    trace_seconds: float = 0.0
    round_bound: int = 0

    def report(self, unit: str, ops_per_leaf: int, first: int = 0) -> dict:
        """The outcome as a job kind reports it: the leaf named as its unit (step, token, batch),
        counted from `first`."""
        r = dict(self.__dict__)
        leaf = r.pop("leaf")
        r[f"first_divergent_{unit}"] = None if leaf is None else leaf + first
        r[f"{unit}_seconds"] = r.pop("trace_seconds")
        r[f"ops_per_{unit}"] = ops_per_leaf
        return r


def round_bound(n_leaves: int, ops_per_leaf: int) -> int:
    """Commitments with the last leaf, the leaf bisection, trace commitments, the op bisection."""
    return 2 + math.ceil(math.log2(max(n_leaves, 1))) + math.ceil(math.log2(ops_per_leaf + 1))


def play(solver: Party, challenger: Party, referee: Referee, ops_per_leaf: int) -> Outcome:
    """Play the game between two sides of one job (named by their Party.name) to its verdict."""
    sides = {solver.name: solver, challenger.name: challenger}
    s_name, c_name = solver.name, challenger.name
    T = len(solver.log)
    out = Outcome(rounds=1, round_bound=round_bound(T, ops_per_leaf))
    if len(challenger.log) != T or T == 0:
        raise GameError(f"the results cover {T} and {len(challenger.log)} leaves; both must finish the job")
    if solver.root == challenger.root:
        out.agree = True
        return out

    def lose(failed: list) -> Outcome:
        # Both failing: on chain both let the deadline pass, and the challenger loses.
        side, why = failed[-1] if len(failed) == 2 else failed[0]
        out.winner, out.referee = (c_name if side == s_name else s_name), why
        return out

    def ask(kind: str, index: int, n_leaves: int, roots: dict, answer) -> tuple[dict, list]:
        got, failed = {}, []
        for name, p in sides.items():
            a = answer(p)
            if a is None:
                failed.append((name, "deadline"))
            elif not merkle.verify(a[0], a[1], roots[name], index, n_leaves):
                failed.append((name, "proof"))
            else:
                got[name] = a[0]
        return got, failed

    def bisect(kind: str, hi: int, n_leaves: int, roots: dict, answer, agreed, diffs):
        """Narrow [0, hi] keeping "agreed at lo-1, different at hi" (hi differs on entry)."""
        lo = 0
        while lo < hi:
            index = (lo + hi) // 2
            out.rounds += 1
            got, failed = ask(kind, index, n_leaves, roots, lambda p: answer(p, index))
            if failed:
                return None, failed
            if got[s_name] == got[c_name]:
                lo, agreed = index + 1, got[s_name]
            else:
                hi, diffs = index, got
        return (hi, agreed, diffs), None

    # 1. commitments: each side's root and its last leaf, proven. The leaves are chained, so the
    # last leaf is the result and commits its whole history: equal last leaves, equal results
    # (and on chain a challenge naming the solver's own last leaf is refused).
    roots = {n: p.root for n, p in sides.items()}
    finals, failed = ask("leaf", T - 1, T, roots, lambda p: p.answer_leaf(T - 1))
    if failed:
        return lose(failed)
    if finals[s_name] == finals[c_name]:
        out.agree = True
        return out
    # 2. leaf bisection below the last leaf, which is known to differ
    found, failed = bisect("leaf", T - 1, T, roots, lambda p, k: p.answer_leaf(k), None, finals)
    if failed:
        return lose(failed)
    k, before, afters = found
    out.leaf = k
    # 3. trace commitments, exactly ops_per_leaf digests each
    out.rounds += 1
    t0 = time.perf_counter()
    traces = {n: p.commit_trace(k) for n, p in sides.items()}
    out.trace_seconds = round(time.perf_counter() - t0, 4)
    failed = [(n, "deadline" if t is None else "trace length") for n, t in traces.items()
              if t is None or t[1] != ops_per_leaf]
    if failed:
        return lose(failed)
    # 4. op bisection over 0..n, n being each side's committed leaf k
    troots = {n: t[0] for n, t in traces.items()}
    found, failed = bisect("op", ops_per_leaf, ops_per_leaf, troots, lambda p, i: p.answer_op(k, i), before, afters)
    if failed:
        return lose(failed)
    i, prev, values = found
    out.op_index = i
    # 5. the referee
    verdict = rule(referee, sides, k, i, ops_per_leaf, before, prev, values)
    out.winner, out.op, out.referee, out.referee_seconds = (verdict["winner"], verdict["op"], verdict["referee"],
                                                            verdict["referee_seconds"])
    return out
