"""Where a peer records its round: (round, rollout-batch CID, reward, step-hash root).

`ChainCoordinator` submits to the SwarmCoordinator contract; `LocalCoordinator` keeps the same
rules (one submission per peer per round, participation counts, a best reward per round) in
memory for swarms run without a chain.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from bitswarm.ledger.errors import LedgerError


class Coordinator(Protocol):
    def submit(self, peer: str, round_: int, rollout_cid: str, reward: float, step_root: str) -> bool:
        """Record the peer's round; False when it was refused (already submitted, round closed)."""
        ...


@dataclass
class LocalCoordinator:
    submissions: dict[tuple[int, str], tuple[str, float, str]] = field(default_factory=dict)
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def submit(self, peer: str, round_: int, rollout_cid: str, reward: float, step_root: str) -> bool:
        with self._lock:
            if (round_, peer) in self.submissions:
                self.refused += 1
                return False
            self.submissions[(round_, peer)] = (rollout_cid, reward, step_root)
            return True

    def participation(self, peer: str) -> int:
        return sum(1 for (_, p) in self.submissions if p == peer)

    def winner(self, round_: int) -> str | None:
        entries = [(r, p) for (rd, p), (_, r, _) in self.submissions.items() if rd == round_]
        return max(entries, key=lambda e: e[0])[1] if entries else None


class ChainCoordinator:
    """Submits through a ledger client; the chain's own round must match (no barrier: a peer
    whose local round is not the chain's current one skips the submission and counts it)."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.skipped = 0

    def submit(self, peer: str, round_: int, rollout_cid: str, reward: float, step_root: str) -> bool:
        try:
            if self.ledger.swarm_round() != round_:
                self.skipped += 1
                return False
            self.ledger.swarm_submit(round_, rollout_cid, reward, step_root)
            return True
        except LedgerError:
            self.skipped += 1
            return False
