"""The dispute game of verify.dispute, played on the JobMarket contract.

The chain holds the commitments and runs the bisection: each round it asks one leaf (a step's
state hash, later one op's chained trace digest) and checks every answer's Merkle proof against
that party's committed root, so nothing a party says off chain matters. Off chain each party
answers from its own run directory (a verify.dispute.Party), and referees rule on the single
op the bisection pinned down with verify.dispute.rule, then vote.

Chain indices are 0-based leaves: leaf k is the state after training step k+1.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitswarm.ledger.client import DISPUTE_PHASE, Ledger
from bitswarm.ledger.errors import RevertError
from bitswarm.repro.hashing import merkle_root
from bitswarm.verify.dispute import Party, rule


def result_root(party: Party) -> str:
    """The root a solver commits (or a challenger challenges with): Merkle over its step hashes."""
    return merkle_root(party.log)


@dataclass
class ChainParty:
    """One side of a job's dispute: answers whatever the contract asks of it this round."""

    ledger: Ledger
    job_id: int
    party: Party
    role: str  # "solver" | "challenger"
    refused: int = 0  # answers the contract rejected (a cheat's proof, say)

    def act(self) -> str | None:
        """Answer the pending question if this side owes one; returns what it did, or None."""
        d = self.ledger.dispute(self.job_id)
        phase = DISPUTE_PHASE[d["phase"]]
        answered = d[f"{self.role}_answered"]
        try:
            if phase == "step" and not answered:
                got = self.party.state_at(d["index"] + 1)
                if got is None:
                    return None  # a silent party: the deadline will decide
                leaf, proof = got
                self.ledger.respond_step(self.job_id, leaf, [sib for _, sib in proof])
                return f"step {d['index']}"
            if phase == "trace" and d[f"{self.role}_trace_root"] == b"\x00" * 32:
                step = d["disputed_step"] + 1
                root = self.party.trace_root(step)
                if root is None:
                    return None
                self.ledger.commit_trace(self.job_id, root, len(self.party.trace(step)["records"]))
                return f"trace of step {step}"
            if phase == "op" and not answered:
                got = self.party.op_record(d["disputed_step"] + 1, d["index"])
                if got is None:
                    return None
                _, digest, proof = got
                self.ledger.respond_op(self.job_id, digest, [sib for _, sib in proof])
                return f"op {d['index']}"
        except RevertError:
            self.refused += 1
            return None
        return None


def referee_vote(ledger: Ledger, job_id: int, solver: Party, challenger: Party, referee_prepared, referee_run) -> dict:
    """Rule on the op the chain pinned down and vote; abstains when the rule names no winner."""
    d = ledger.dispute(job_id)
    if DISPUTE_PHASE[d["phase"]] != "vote":
        raise ValueError(f"job {job_id} is not waiting for referees (phase {DISPUTE_PHASE[d['phase']]})")
    verdict = rule(solver, challenger, referee_prepared, referee_run, d["disputed_step"] + 1, d["disputed_op"])
    if verdict["winner"] is not None:
        ledger.vote(job_id, verdict["winner"] == "A")
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
