"""The dispute game of verify.game, played on the JobMarket contract.

The chain holds the commitments and runs the arbiter: each round it asks one leaf (a step's
chained state commitment or a token's commitment, later one op's chained trace digest), checks
every answer's Merkle proof against that party's committed root, bound to the index asked and
the tree's size, and requires a trace of exactly the job's ops_per_leaf digests. Off chain each
side answers from its own data (a verify.game.Party), and referees rule on the one transition
the bisection pinned down with verify.game.rule — the same rule the local game uses — reading
the evidence (the agreed value before it, each side's value at it) from the contract, then vote
with their stake.

Chain indices are 0-based leaves: leaf k is the state after training step k+1 (token k).
"""

from __future__ import annotations

from dataclasses import dataclass

from bitswarm.ledger.client import DISPUTE_PHASE, Ledger
from bitswarm.ledger.errors import RevertError
from bitswarm.verify import attest, merkle
from bitswarm.verify.game import Party, Referee, rule
from bitswarm.verify.merkle import siblings

EMPTY = "00" * 32


def _hex(value) -> str:
    return value.hex() if isinstance(value, (bytes, bytearray)) else str(value).removeprefix("0x")


def last_leaf(party: Party) -> tuple[str, list[str]]:
    """A side's result: its last leaf (cumulative: it commits the whole history) and its proof."""
    n = len(party.log)
    return party.log[-1], siblings(merkle.proof(party.log, n - 1))


def commit_result(ledger: Ledger, job_id: int, solver: Party, result_cid: str):
    """The solver commits its root, the transcript's CID and its last leaf, proven."""
    return ledger.commit_result(job_id, solver.root, result_cid, *last_leaf(solver))


def challenge(ledger: Ledger, job_id: int, challenger: Party):
    """A verifier challenges with its own root and last leaf (the contract refuses equal results)."""
    return ledger.challenge(job_id, challenger.root, *last_leaf(challenger))


def attest_audit(ledger: Ledger, job_id: int, verifier: Party):
    """A verifier that re-executed the job and agrees with its result commits to its
    attestation of the drawn audit leaf, bound to its own address (during the challenge window)."""
    k = ledger.job(job_id)["audit_leaf"]
    return ledger.attest(job_id, attest.commitment(attest.attestation(verifier, k), ledger.address))


def reveal_audit(ledger: Ledger, job_id: int, party: Party):
    """The solver or an attester reveals its attestation of the audit leaf (after the window)."""
    return ledger.reveal(job_id, attest.attestation(party, ledger.job(job_id)["audit_leaf"]))


@dataclass
class ChainParty:
    """One side of a job's dispute: answers whatever the contract asks of it this round."""

    ledger: Ledger
    job_id: int
    party: Party
    role: str  # "solver" | "challenger"
    refused: int = 0  # answers the contract rejected (a cheat's proof, a wrong op count)

    def act(self) -> str | None:
        """Answer the pending question if this side owes one; returns what it did, or None."""
        d = self.ledger.dispute(self.job_id)
        phase = DISPUTE_PHASE[d["phase"]]
        answered = d[f"{self.role}_answered"]
        k = d["disputed_step"]
        try:
            if phase == "step" and not answered:
                got = self.party.answer_leaf(d["index"])
                if got is None:
                    return None  # a silent party: the deadline will decide
                self.ledger.respond_step(self.job_id, got[0], siblings(got[1]))
                return f"step {d['index']}"
            if phase == "trace" and _hex(d[f"{self.role}_trace_root"]) == EMPTY:
                got = self.party.commit_trace(k)
                if got is None:
                    return None
                self.ledger.commit_trace(self.job_id, got[0], got[1])
                return f"trace of leaf {k}"
            if phase == "op" and not answered:
                got = self.party.answer_op(k, d["index"])
                if got is None:
                    return None
                self.ledger.respond_op(self.job_id, got[0], siblings(got[1]))
                return f"op {d['index']}"
        except RevertError:
            self.refused += 1
            return None
        return None


def evidence(ledger: Ledger, job_id: int) -> dict:
    """What the contract pinned down, in verify.game.rule's terms."""
    d = ledger.dispute(job_id)
    if DISPUTE_PHASE[d["phase"]] != "vote":
        raise ValueError(f"job {job_id} is not waiting for referees (phase {DISPUTE_PHASE[d['phase']]})")
    k, i = d["disputed_step"], d["disputed_op"]
    before = None if k == 0 else _hex(d["before"])
    prev = _hex(d["agreed"]) if i > 0 else None
    return {"k": k, "i": i, "before": before, "prev": prev,
            "values": {"solver": _hex(d["solver_diff"]), "challenger": _hex(d["challenger_diff"])}}


def referee_vote(ledger: Ledger, job_id: int, solver: Party, challenger: Party, referee: Referee,
                 ops_per_leaf: int) -> dict:
    """Rule on the transition the chain pinned down and vote with this referee's stake; abstains
    only when neither side's value is the true one (then both cheated)."""
    e = evidence(ledger, job_id)
    verdict = rule(referee, {"solver": solver, "challenger": challenger}, e["k"], e["i"], ops_per_leaf,
                   e["before"], e["prev"], e["values"])
    if verdict["winner"] is not None:
        ledger.vote(job_id, verdict["winner"] == "solver")
    return verdict


def play_rounds(sides: list[ChainParty], max_rounds: int = 200) -> int:
    """Let both sides answer until neither owes anything (the vote phase, or a deadline pending)."""
    rounds = 0
    while rounds < max_rounds:
        acted = [s.act() for s in sides]
        if not any(acted):
            return rounds
        rounds += 1
    raise RuntimeError(f"dispute still asking after {max_rounds} rounds")
