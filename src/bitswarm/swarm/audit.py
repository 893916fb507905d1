"""Watching the SwarmCoordinator: re-score every claim, refute the false ones, and vote as a
referee on open refutations, each with claims.claim_holds on the claim's rollout batch.

Trust assumptions, where they live: the batch must be readable from this node's store (a
batch nobody can read backs no claim, so it is refuted and voted down: a peer that withholds
its batch loses its stake), and honest referees must hold the majority of the stake that
votes (a vote weighs stake, so extra accounts buy nothing, but a liar whose friends outstake
the honest referees wins).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bitswarm.ledger.client import Ledger
from bitswarm.ledger.errors import RevertError
from bitswarm.store import BlobStore
from bitswarm.swarm.claims import claim_holds
from bitswarm.jobs.tasks import TaskMix

log = logging.getLogger(__name__)


@dataclass
class Auditor:
    ledger: Ledger  # the account that refutes and votes (and stakes doing so)
    store: BlobStore
    mix: TaskMix
    from_block: int = 0
    _checked: set[tuple[int, str]] = field(default_factory=set)

    def holds(self, round_: int, peer: str) -> bool:
        sub = self.ledger.swarm_submission(round_, peer)
        return claim_holds(self.store, self.mix, "sha256:" + bytes(sub["rollout_cid"]).hex(), sub["reward"])

    def refute_false_claims(self) -> list[tuple[int, str]]:
        """Refute every new claim (not this account's) whose batch does not earn its reward; the
        (round, peer) pairs refuted. Each refutation locks swarm_stake of this account."""
        refuted = []
        for ev in self.ledger.events("SwarmCoordinator", "SubmissionRecorded", self.from_block):
            key = (ev["args"]["round"], ev["args"]["peer"])
            if key in self._checked or key[1] == self.ledger.address:
                continue
            self._checked.add(key)
            if self.holds(*key) or self.ledger.swarm_submission(*key)["status"] != "open":
                continue
            try:
                self.ledger.swarm_refute(*key)
                refuted.append(key)
            except RevertError as exc:  # window closed, someone else was first, no free stake
                log.warning("could not refute the claim of %s for round %d: %s", key[1], key[0], exc.reason)
        return refuted

    def vote_on_refutations(self) -> list[tuple[int, str, bool]]:
        """As a referee, vote on every refutation still running that this account is no party
        to: refuted when the batch does not earn the claim. The (round, peer, refuted) votes cast."""
        cast = []
        me = self.ledger.address
        for ev in self.ledger.events("SwarmCoordinator", "RefutationOpened", self.from_block):
            round_, peer, refuter = ev["args"]["round"], ev["args"]["peer"], ev["args"]["refuter"]
            if me in (peer, refuter) or self.ledger.swarm_submission(round_, peer)["status"] != "refuting":
                continue
            if self.ledger.call("SwarmCoordinator", "get_vote", round_, peer, me)[0]:
                continue  # voted already
            refuted = not self.holds(round_, peer)
            try:
                self.ledger.swarm_vote(round_, peer, refuted)
                cast.append((round_, peer, refuted))
            except RevertError as exc:  # stake too low, or already locked by another vote
                log.warning("could not vote on the refutation of %s for round %d: %s", peer, round_, exc.reason)
        return cast
