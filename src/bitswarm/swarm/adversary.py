"""Swarm adversaries for tests and demos: peers that cheat in one specific, selectable way.

Selected per peer as PEER:NAME (`bitswarm swarm run --adversary peer-1:inflate`):
  inflate    claim reward 1.0 for its round whatever its rollouts scored. Caught by re-scoring
             the rollout batch behind the claim: LocalCoordinator refuses the claim; on chain a
             refutation and the referees' vote slash the claim's stake.
  oversized  publish its first group with its completions repeated up to a whole record (64),
             so that GRPO would weigh that one group like sixteen honest ones. Caught by every
             receiving peer's RecordFilter: a group over group_size is cut ("oversized_group").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bitswarm.errors import BitswarmError
from bitswarm.swarm.records import MAX_ROLLOUTS, Rollout

NAMES = ("inflate", "oversized")


class AdversaryError(BitswarmError, ValueError):
    pass


@dataclass(frozen=True)
class SwarmAdversary:
    name: str

    def __post_init__(self):
        if self.name not in NAMES:
            raise AdversaryError(f"unknown swarm adversary {self.name!r}; choose one of: {', '.join(NAMES)}")

    def claim(self, reward: float) -> float:
        """The reward this peer submits for its round."""
        return 1.0 if self.name == "inflate" else reward

    def published(self, rollouts: list[Rollout]) -> list[Rollout]:
        """The rollouts this peer publishes in place of its honest ones."""
        if self.name != "oversized" or not rollouts:
            return rollouts
        first = [ro for ro in rollouts if ro.group == rollouts[0].group]
        return [first[i % len(first)] for i in range(MAX_ROLLOUTS)]


def parse_assignments(specs: Iterable[str], peers: Iterable[str]) -> dict[str, SwarmAdversary]:
    """PEER:NAME strings -> {peer: adversary}; AdversaryError naming what is wrong."""
    names = list(peers)
    out: dict[str, SwarmAdversary] = {}
    for spec in specs:
        peer, sep, name = spec.rpartition(":")
        if not sep or not peer:
            raise AdversaryError(f"--adversary takes PEER:NAME (e.g. {names[0] if names else 'peer-0'}:inflate), not {spec!r}")
        if peer not in names:
            shown = ", ".join(names[:8]) + (" …" if len(names) > 8 else "")
            raise AdversaryError(f"--adversary {spec!r}: no peer named {peer!r} in this swarm (peers: {shown})")
        if peer in out:
            raise AdversaryError(f"--adversary: peer {peer!r} is given twice; each peer cheats one way")
        out[peer] = SwarmAdversary(name)
    return out
