"""The dispute game between two training transcripts, played locally (after Verde).

1. Commitments: each party's Merkle root over its step hashes. Equal roots: they agree.
   Both initial states are checked against the referee's own initial state (from the spec).
2. Step bisection: lo = 0 (agreed), hi = T. Each round both parties answer the state hash at
   mid with a Merkle proof against their committed root; a party whose answer is missing
   (deadline) or does not verify loses at once. Agreement moves lo, disagreement moves hi,
   until hi = lo + 1: both agree on state lo and disagree on state hi. ceil(log2 T) rounds.
3. Op bisection: each party commits to the per-op trace of step hi (its own computation from
   the agreed state) and answers chained trace digests (trace.chain_digests) with Merkle
   proofs; bisection finds the first op index whose records differ. ceil(log2 ops) rounds, plus one for the trace commitments.
4. Referee: if at that op both parties agree on the op and its inputs, the referee takes the
   inputs from a party (hash-checked against the agreed hashes), recomputes that single op and
   rules for the party whose output hashes match. If the inputs themselves differ (the fault
   is in untraced glue, the data, or a party that skipped work), the referee recomputes step hi
   honestly from the agreed state up to that op and rules for the party whose record matches
   — bounded by one step, and recorded as `referee: "step"` rather than `"op"`.
Trust: the referee needs only the spec, the agreed state (hash-checked) and its own kernels.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from bitswarm.repro.hashing import merkle_root
from bitswarm.repro.train import checkpoint_meta, checkpoints, read_step_log
from bitswarm.verify import merkle
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.trace import chain_digests, input_hashes, recompute, trace_step


class DisputeError(ValueError):
    pass


@dataclass
class Party:
    """One side, answering from its own run directory with its own (possibly cheating) behaviour."""

    name: str
    run: Path
    prepared: object
    adversary: Adversary | None = None
    queries: int = 0
    _traces: dict = field(default_factory=dict)

    def __post_init__(self):
        self.log = [r["state_hash"] for r in read_step_log(self.run)]
        self.root = merkle_root(self.log)

    def _silent(self) -> bool:
        self.queries += 1
        return bool(self.adversary and self.adversary.name == "silent" and self.queries > 1)

    def state_at(self, t: int):
        """(hash, proof) of state t >= 1, or None when this party misses the deadline."""
        if self._silent():
            return None
        h, p = self.log[t - 1], merkle.proof(self.log, t - 1)
        if self.adversary and self.adversary.name == "inconsistent":
            h = format(int(h, 16) ^ 1, "064x")  # claims a hash its commitment does not prove
        return h, p

    def trace(self, t: int) -> dict:
        if t not in self._traces:
            self._traces[t] = trace_step(self.run, self.prepared, t, self.adversary)
        return self._traces[t]

    def trace_root(self, t: int):
        if self._silent():
            return None
        return self.trace(t)["root"]

    def op_record(self, t: int, i: int):
        """(record, chain digest, proof) for op i of step t — (None, None, []) past the end of
        its trace — or None on a missed deadline."""
        if self._silent():
            return None
        recs = self.trace(t)["records"]
        if i >= len(recs):
            return None, None, []
        chain = chain_digests(recs)
        return recs[i], chain[i], merkle.proof(chain, i)

    def op_inputs(self, t: int, i: int):
        return trace_step(self.run, self.prepared, t, self.adversary, capture=i)["captured"]


def _blank_result() -> dict:
    return {"agree": False, "first_divergent_step": None, "op": None, "op_index": None,
            "rounds": 0, "winner": None, "referee": None, "referee_seconds": 0.0, "step_seconds": 0.0}


def _other(name: str) -> str:
    return "B" if name == "A" else "A"


def _ask_state(parties: dict, t: int):
    """Both parties' proven hashes of state t, or (None, the first party that failed, how)."""
    ans = {n: p.state_at(t) for n, p in parties.items()}
    for n, p in parties.items():
        if ans[n] is None:
            return None, n, "deadline"
        if not merkle.verify(ans[n][0], ans[n][1], p.root):
            return None, n, "proof"
    return {n: a[0] for n, a in ans.items()}, None, None


def play(a: Party, b: Party, referee_prepared, referee_run: Path) -> dict:
    result = _blank_result()
    parties = {"A": a, "B": b}
    if len(a.log) != len(b.log):
        raise DisputeError(f"the transcripts cover {len(a.log)} and {len(b.log)} steps; both must finish the spec")
    T = len(a.log)
    result["rounds"] += 1  # commitments
    if a.root == b.root:
        result["agree"] = True
        return result

    # step bisection: the final state first (it must be in dispute), then halves
    lo, hi = 0, T
    result["rounds"] += 1
    _, loser, why = _ask_state(parties, T)
    if loser:
        return {**result, "winner": _other(loser), "referee": why}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        result["rounds"] += 1
        ans, loser, why = _ask_state(parties, mid)
        if loser:
            return {**result, "winner": _other(loser), "referee": why}
        if ans["A"] == ans["B"]:
            lo = mid
        else:
            hi = mid
    result["first_divergent_step"] = hi

    # op bisection inside step hi
    result["rounds"] += 1
    roots = {n: p.trace_root(hi) for n, p in parties.items()}
    for n in parties:
        if roots[n] is None:
            return {**result, "winner": _other(n), "referee": "deadline"}
    n_ops = max(len(a.trace(hi)["records"]), len(b.trace(hi)["records"]))
    result["step_seconds"] = round(max(a.trace(hi)["seconds"], b.trace(hi)["seconds"]), 4)
    olo, ohi = -1, n_ops
    recs = {}
    while ohi - olo > 1:
        mid = (olo + ohi) // 2
        result["rounds"] += 1
        for n, p in parties.items():
            ans_op = p.op_record(hi, mid)
            if ans_op is None:
                return {**result, "winner": _other(n), "referee": "deadline"}
            rec, chain, proof = ans_op
            if rec is not None and not merkle.verify(chain, proof, roots[n]):
                return {**result, "winner": _other(n), "referee": "proof"}
            recs[n] = chain
        if recs["A"] == recs["B"]:
            olo = mid
        else:
            ohi = mid
    result["op_index"] = ohi
    return {**result, **rule(a, b, referee_prepared, referee_run, hi, ohi)}


def rule(a: Party, b: Party, referee_prepared, referee_run: Path, step: int, i: int) -> dict:
    """The referee's verdict on op i of step `step` (1-based), once bisection has pinned it down.

    Returns {"winner": "A" | "B" | None, "op", "referee": "op" | "step", "referee_seconds"}; the
    clock starts once the parties have handed over what the referee asked for.
    """
    rec_a, rec_b = a.op_record(step, i)[0], b.op_record(step, i)[0]
    if rec_a is not None and rec_b is not None and rec_a["op"] == rec_b["op"] and rec_a["in"] == rec_b["in"]:
        for provider in (a, b):  # a party whose tensors are not the agreed ones is passed over
            op, args, kwargs = provider.op_inputs(step, i)
            start = time.perf_counter()
            if input_hashes(args, kwargs) == rec_a["in"]:
                break
        else:
            raise DisputeError("neither party produced the agreed inputs of the disputed op")
        truth = recompute(referee_prepared.model.B, op, args, kwargs)
        verdict = {"op": op, "referee": "op"}
        got = {"A": rec_a["out"], "B": rec_b["out"]}
    else:
        start = time.perf_counter()
        honest = trace_step(referee_run, referee_prepared, step)
        if honest["state_hash_before"] != (a.log[step - 2] if step >= 2 else honest["state_hash_before"]):
            raise DisputeError("the referee could not rebuild the agreed state")
        truth = honest["records"][i] if i < len(honest["records"]) else None
        verdict = {"op": (truth or rec_a or rec_b or {}).get("op"), "referee": "step"}
        got = {"A": rec_a, "B": rec_b}
    verdict["referee_seconds"] = round(time.perf_counter() - start, 4)
    winners = [n for n in ("A", "B") if got[n] == truth]
    verdict["winner"] = winners[0] if len(winners) == 1 else None
    return verdict


def dispute(run_a: Path, run_b: Path, prepared_factory) -> dict:
    """Play the game between two run directories of the same spec; `prepared_factory()` builds
    a fresh jobs.train_job.Prepared (each party and the referee compute independently)."""
    a = Party("A", Path(run_a), prepared_factory(), Adversary.load(run_a))
    b = Party("B", Path(run_b), prepared_factory(), Adversary.load(run_b))
    ref = prepared_factory()
    for p in (a, b):
        if checkpoint_meta(checkpoints(p.run)[0])["state_hash"] != ref.state.hash():
            return {**_blank_result(), "first_divergent_step": 0, "rounds": 1, "winner": _other(p.name),
                    "referee": "initial state"}
    # The referee rebuilds the agreed state of the disputed step from A's checkpoints at or
    # before it (their hash is checked against the agreed one; both sides' agree up to there).
    result = play(a, b, ref, Path(run_a))
    step = result["first_divergent_step"]
    ops = max(len(a.trace(step)["records"]), len(b.trace(step)["records"])) if step else 1
    result["round_bound"] = math.ceil(math.log2(max(len(a.log), 2))) + math.ceil(math.log2(ops + 1)) + 3
    return result
