"""Where a peer records its round: (round, rollout-batch CID, claimed reward, step-hash root).

`ChainCoordinator` submits to the SwarmCoordinator contract, where each claim locks stake
until its refutation window closes; `LocalCoordinator` keeps the submissions in memory, one
per peer per round as on chain, for swarms run without a chain, and refuses the claims its
`check` finds false (as a refutation would on chain).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bitswarm.errors import BitswarmError
from bitswarm.ledger.errors import LedgerError

log = logging.getLogger(__name__)


class SubmissionError(BitswarmError):
    """A round that was trained but whose claim the chain refused, with the chain's reason."""

    def __init__(self, round_: int, chain_round: int, reason: str):
        super().__init__(
            f"round {round_} was trained, but the chain refused its claim for chain round {chain_round}: {reason}. "
            f"The peer's state is saved, so a rerun goes on from round {round_ + 1}")
        self.round, self.chain_round, self.reason = round_, chain_round, reason


class Coordinator(Protocol):
    def submit(self, peer: str, round_: int, rollout_cid: str, reward: float, step_root: str) -> bool:
        """Record the peer's round; False when it was refused (already submitted, round closed)."""
        ...


@dataclass
class LocalCoordinator:
    # (rollout CID, claimed reward) -> does the claim hold? LocalSwarm re-scores the batch.
    check: Callable[[str, float], bool] | None = None
    submissions: dict[tuple[int, str], tuple[str, float, str]] = field(default_factory=dict)
    refused: int = 0
    refuted: dict[str, int] = field(default_factory=dict)  # peer -> claims found false
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def submit(self, peer: str, round_: int, rollout_cid: str, reward: float, step_root: str) -> bool:
        if self.check is not None and not self.check(rollout_cid, reward):
            with self._lock:
                self.refuted[peer] = self.refuted.get(peer, 0) + 1
            log.warning("round %d: the claim of peer %s… (reward %.6f) does not match its rollouts; refused",
                        round_, peer[:16], reward)
            return False
        with self._lock:
            if (round_, peer) in self.submissions:
                self.refused += 1
                return False
            self.submissions[(round_, peer)] = (rollout_cid, reward, step_root)
            return True


class ChainCoordinator:
    """Submits through ledger clients, one per peer key (each peer signs its own submission).

    The chain's round is the authority: swarm round r is chain round r + round_offset, and a
    peer whose round is not the chain's current one skips the submission (no barrier, so a
    slow peer may miss a round) and it is counted in `skipped`.

    Each submission locks the contract's swarm_stake until its refutation window (one round
    duration after its round ends) closes. Before submitting, a peer releases its own earlier
    submissions whose window has closed, so twice swarm_stake keeps it submitting every round
    while rounds run their full duration (more when the owner cuts rounds short). A refused
    submission (no free stake, say) is logged and kept in `errors` in words and in `refused`;
    a simulated swarm trains on, `swarm join` stops with a SubmissionError (its user asked for
    the chain record, and would otherwise see only a count of nothing submitted)."""

    def __init__(self, ledgers: dict, round_offset: int = 0):
        self.ledgers = ledgers
        self.round_offset = round_offset
        self.skipped = 0
        self.errors: list[str] = []
        self.refused: list[tuple[int, int, str]] = []  # (swarm round, chain round, reason) of each refusal
        self.late: list[int] = []  # swarm rounds not submitted because the chain's round had moved on
        self._pending: dict[str, list[int]] = {}  # peer -> chain rounds whose stake may still be locked

    def check_ready(self) -> None:
        """Raise LedgerError, saying what to do, if any peer's identity cannot back a submission:
        not a swarm node, too little free stake, or no ETH to pay the submission's gas."""
        for ledger in self.ledgers.values():
            problems = []
            # Checked first and told together: registering needs gas too, so an unfunded
            # identity told only to register would fail again at its next step.
            if ledger.eth_balance() == 0:
                problems.append(f"{ledger.address} has no ETH to pay gas for its submissions: fund it first "
                                "(`bitswarm ledger fund` on a devnet; on another chain, send it ETH)")
            try:
                ledger.swarm_check_stake()
            except LedgerError as exc:
                problems.append(str(exc))
            if problems:
                raise LedgerError("; and ".join(problems))

    def submit(self, peer: str, round_: int, rollout_cid: str, reward: float, step_root: str) -> bool:
        ledger = self.ledgers.get(peer)
        if ledger is None:
            self.skipped += 1
            return False
        try:
            chain_round = round_ + self.round_offset
            if ledger.swarm_round() != chain_round:
                self.skipped += 1
                self.late.append(round_)
                return False
            self._release_closed(peer, ledger)
            ledger.swarm_submit(chain_round, rollout_cid, reward, step_root)
            self._pending.setdefault(peer, []).append(chain_round)
            return True
        except LedgerError as exc:  # a refused submission does not stop a simulated swarm; `swarm join` stops
            self.skipped += 1
            self.errors.append(str(exc))
            self.refused.append((round_, chain_round, str(exc)))
            log.warning("round %d not recorded on chain: %s", chain_round, exc)
            return False

    def _release_closed(self, peer: str, ledger) -> None:
        pending = self._pending.get(peer, [])
        if not pending:
            return
        now, still = ledger.timestamp(), []
        for r in pending:
            if ledger.swarm_window_end(r) > now:
                still.append(r)
            elif ledger.swarm_submission(r)["status"] == "open":  # refuted or upheld ones are settled already
                ledger.swarm_release(r)
        self._pending[peer] = still


class ChainSchedule:
    """The swarm's rounds as the SwarmCoordinator counts them: swarm round r is chain round
    `first_round + r`, read from the contract, so every peer that can read the chain agrees on
    the round without trusting anyone's clock or word.

    The same interface as manifest.Schedule (current, wait_for; start and round_seconds describe
    it). A round ends when someone closes it on chain: anyone may once its duration has passed,
    so a waiting peer with `advance` (and ETH for gas) closes it itself, and the swarm goes on
    without its host; a read-only peer only waits. Closing twice loses nothing: the second
    attempt reverts ("round still running") and is ignored."""

    def __init__(self, ledger, first_round: int, *, advance: bool = False, poll_s: float = 0.5):
        if first_round < 1:
            raise ValueError(f"first_round is a chain round, 1 or more, not {first_round}")
        self.ledger, self.first_round, self.advance, self.poll_s = ledger, first_round, advance, poll_s
        self.round_seconds = float(ledger.call("SwarmCoordinator", "round_duration"))
        # When round 0 would have begun had every round run its full duration (for the manifest's description).
        started = float(ledger.call("SwarmCoordinator", "round_started_at"))
        self.start = max(0.0, started - (ledger.swarm_round() - first_round) * self.round_seconds)
        self.advance_errors: list[str] = []

    def current(self) -> int:
        return max(0, self.ledger.swarm_round() - self.first_round)

    def wait_for(self, round_: int, sleep: Callable[[float], None] | None = None) -> None:
        """Return once the chain has reached swarm round `round_` (at once if it has)."""
        sleep = sleep or time.sleep
        while self.current() < round_:
            if self.advance:
                self._close_if_due()
            sleep(self.poll_s)

    def _close_if_due(self) -> None:
        due = float(self.ledger.call("SwarmCoordinator", "round_started_at")) + self.round_seconds
        # The next block's timestamp is at least the wall clock on a live chain; a dev chain's may be ahead.
        if max(time.time(), float(self.ledger.timestamp())) < due:
            return
        try:
            self.ledger.swarm_advance_round()
        except LedgerError as exc:  # someone closed it first, or no gas: the round still ends when anyone closes it
            if len(self.advance_errors) < 8:
                self.advance_errors.append(str(exc))
                log.info("closing chain round %d: %s", self.ledger.swarm_round(), exc)
