"""A swarm on one machine: many peers in one process over the in-memory or hivemind transport.

Peers run their rounds one after another inside each round, with no barrier between them: a
peer uses whatever the others have published so far (this round's earlier peers, and the
previous round of the later ones). Peers can join and leave between rounds; a peer that comes
back resumes from its saved state. Peers named in `adversaries` cheat the way their
adversary says (swarm.adversary); the summary shows how each cheat was caught.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.store import BlobStore
from bitswarm.swarm import claims
from bitswarm.swarm.adversary import SwarmAdversary
from bitswarm.swarm.coordinator import Coordinator, LocalCoordinator
from bitswarm.swarm.peer import PeerSettings, SwarmPeer
from bitswarm.jobs.tasks import TaskMix
from bitswarm.swarm.transport import MemoryHub, MemoryTransport


def peer_key(swarm_seed: int, name: str) -> Ed25519PrivateKey:
    """A simulated peer's key, derived from the swarm seed and its name so a rejoin keeps it."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"bitswarm-sim/{swarm_seed}/{name}".encode()).digest())


@dataclass
class LocalSwarm:
    store: BlobStore
    model: str
    workdir: Path
    mix: TaskMix
    settings: PeerSettings = PeerSettings()
    transport: str = "memory"  # "memory" | "hivemind"
    swarm_seed: int = 0
    coordinator: Coordinator = field(default_factory=LocalCoordinator)
    peers: dict[str, SwarmPeer] = field(default_factory=dict)
    hub: MemoryHub = field(default_factory=MemoryHub)
    left: dict[str, SwarmPeer] = field(default_factory=dict)  # peers that left, kept for the summary
    adversaries: dict[str, SwarmAdversary] = field(default_factory=dict)
    round: int = 0
    seconds: float = 0.0

    def __post_init__(self):
        if isinstance(self.coordinator, LocalCoordinator) and self.coordinator.check is None:
            self.coordinator.check = self.check_claim

    def check_claim(self, rollout_cid: str, reward: float) -> bool:
        """What a refuter does on chain: re-score the claim's rollout batch from the store."""
        units = claims.reward_units(reward)
        return units is not None and claims.claim_holds(self.store, self.mix, rollout_cid, units)

    def add_peer(self, name: str) -> SwarmPeer:
        if name in self.peers:
            raise ValueError(f"peer {name} is already in the swarm")
        key = peer_key(self.swarm_seed, name)
        transport = self._transport(key)
        peer = SwarmPeer(name, self.store, Path(self.workdir) / name, self.model, transport, self.mix, key,
                         self.settings, self.coordinator, adversary=self.adversaries.get(name))
        peer.next_round = max(peer.next_round, self.round)  # a newcomer starts at the swarm's round
        self.peers[name] = peer
        self.left.pop(name, None)
        return peer

    def remove_peer(self, name: str) -> None:
        peer = self.peers.pop(name)
        peer.transport.close()
        self.left[name] = peer

    def _transport(self, key: Ed25519PrivateKey):
        if self.transport == "memory":
            return MemoryTransport(self.hub, key)
        from bitswarm.swarm.hivemind_transport import HivemindTransport

        first = next(iter(self.peers.values()), None)
        bootstrap = first.transport.visible_maddrs() if first is not None else []
        return HivemindTransport(key, initial_peers=bootstrap)

    def run_round(self, on_report: Callable[[dict], None] | None = None) -> list[dict]:
        start = time.perf_counter()
        reports = []
        for peer in list(self.peers.values()):
            peer.next_round = self.round
            report = peer.run_round()
            reports.append(report)
            if on_report:
                on_report(report)
        self.round += 1
        self.seconds += time.perf_counter() - start
        return reports

    def close(self) -> None:
        for peer in self.peers.values():
            peer.transport.close()

    def summary(self) -> dict:
        everyone = {**self.left, **self.peers}
        dropped: dict[str, int] = {}
        for p in everyone.values():
            for reason, n in p.filter.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
        for reason, n in self.hub.refused.items():
            dropped[f"hub_{reason}"] = dropped.get(f"hub_{reason}", 0) + n
        comm = sum(r["comm_seconds"] for p in everyone.values() for r in p.history)
        total = sum(r["seconds"] for p in everyone.values() for r in p.history)
        return {
            "peers": [
                {
                    "name": name, "key": p.public_key, "active": name in self.peers,
                    "rewards": [round(r["reward"], 4) for r in p.history],
                    "rounds": [r["round"] for r in p.history],
                    "updates": sum(1 for r in p.history if r["updated"]),
                    "external_groups_used": sum(r["external_groups"] for r in p.history),
                    "model": p.model,
                }
                for name, p in everyone.items()
            ],
            "rounds": self.round,
            "rollouts_shared": sum(p.rollouts_shared for p in everyone.values()),
            "rollouts_used_external": sum(p.rollouts_used_external for p in everyone.values()),
            "claims_overruled": sum(p.claims_overruled for p in everyone.values()),
            "claims_refuted": dict(sorted(
                (name, self.coordinator.refuted[p.public_key]) for name, p in everyone.items()
                if p.public_key in getattr(self.coordinator, "refuted", {}))),
            "adversaries": {name: adv.name for name, adv in sorted(self.adversaries.items())},
            "dropped": dict(sorted(dropped.items())),
            "comm_fraction": round(comm / total, 4) if total else 0.0,
            "seconds": round(self.seconds, 3),
        }


def peer_names(peers: int) -> list[str]:
    """The names `run_swarm` gives its peers when it is not told any."""
    return [f"peer-{i}" for i in range(peers)]


def run_swarm(
    store: BlobStore,
    model: str,
    workdir: Path,
    peers: int,
    rounds: int,
    mix: TaskMix,
    settings: PeerSettings = PeerSettings(),
    transport: str = "memory",
    swarm_seed: int = 0,
    names: Sequence[str] | None = None,
    on_report: Callable[[dict], None] | None = None,
    on_start: Callable[[LocalSwarm], None] | None = None,
    adversaries: dict[str, SwarmAdversary] | None = None,
) -> dict:
    swarm = LocalSwarm(store, model, Path(workdir), mix, settings, transport, swarm_seed,
                       adversaries=dict(adversaries or {}))
    try:
        for name in names or peer_names(peers):
            swarm.add_peer(name)
        # Rerunning over the same workdir continues where the peers' saved state left off.
        swarm.round = max(p.next_round for p in swarm.peers.values())
        if on_start:
            on_start(swarm)
        while swarm.round < rounds:
            swarm.run_round(on_report)
        return swarm.summary()
    finally:
        swarm.close()
