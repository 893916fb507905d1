"""Where a peer records its round: (round, rollout-batch CID, reward, step-hash root).

`ChainCoordinator` submits to the SwarmCoordinator contract; `LocalCoordinator` keeps the
submissions in memory, one per peer per round as on chain, for swarms run without a chain.
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


class ChainCoordinator:
    """Submits through ledger clients, one per peer key (each peer signs its own submission).

    The chain's round is the authority: swarm round r is chain round r + round_offset, and a
    peer whose round is not the chain's current one skips the submission (no barrier, so a
    slow peer may miss a round) and it is counted in `skipped`."""

    def __init__(self, ledgers: dict, round_offset: int = 0):
        self.ledgers = ledgers
        self.round_offset = round_offset
        self.skipped = 0
        self.errors: list[str] = []

    def submit(self, peer: str, round_: int, rollout_cid: str, reward: float, step_root: str) -> bool:
        ledger = self.ledgers.get(peer)
        if ledger is None:
            self.skipped += 1
            return False
        try:
            chain_round = round_ + self.round_offset
            if ledger.swarm_round() != chain_round:
                self.skipped += 1
                return False
            ledger.swarm_submit(chain_round, rollout_cid, reward, step_root)
            return True
        except LedgerError as exc:  # a refused submission must not stop training
            self.skipped += 1
            self.errors.append(str(exc))
            return False
