"""A swarm on one machine: many peers in one process over the in-memory or hivemind transport.

Peers run their rounds one after another inside each round, with no barrier between them: a
peer uses whatever the others have published so far (this round's earlier peers, and the
previous round of the later ones). Peers can join and leave between rounds; a peer that comes
back resumes from its saved state. Peers named in `adversaries` cheat the way their
adversary says (swarm.adversary); the summary shows how each cheat was caught.

Over hivemind the swarm can be joined from other machines: its rounds then follow a
`manifest.Schedule` (a round starts no earlier than its slot, and a swarm that fell behind skips
to the current slot), so a joiner computes the round from its clock; the first peer listens on
`listen` (the address joiners bootstrap from) and the others on the same host, any port.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.store import BlobStore
from bitswarm.swarm import claims
from bitswarm.swarm.adversary import SwarmAdversary
from bitswarm.swarm.coordinator import Coordinator, LocalCoordinator
from bitswarm.swarm.manifest import Schedule
from bitswarm.swarm.peer import PeerSettings, SwarmPeer
from bitswarm.jobs.tasks import TaskMix
from bitswarm.swarm.transport import MemoryHub, MemoryTransport


def peer_key(swarm_seed: int, name: str) -> Ed25519PrivateKey:
    """A simulated peer's key, derived from the swarm seed and its name so a rejoin keeps it.
    Anyone can derive it: for peers in memory only (over libp2p see node_peer_keys)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"bitswarm-sim/{swarm_seed}/{name}".encode()).digest())


def node_peer_keys(node_key: Ed25519PrivateKey, first: str) -> Callable[[str], Ed25519PrivateKey]:
    """Keys for a node's simulated peers on libp2p: peer `first` is the node's own key (its
    libp2p identity, the peer id joiners bootstrap from); every other peer's key is derived from
    the node's private key and the peer's name, so only this node can sign as its peers."""
    from cryptography.hazmat.primitives import serialization

    seed = node_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                  serialization.NoEncryption())

    def key(name: str) -> Ed25519PrivateKey:
        if name == first:
            return node_key
        return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bitswarm-node-peer/" + seed + name.encode()).digest())

    return key


def any_port(maddr: str) -> str:
    """The same host as `maddr`, any free TCP port (for the peers after the first)."""
    parts = maddr.split("/")
    if "tcp" in parts and parts.index("tcp") + 1 < len(parts):
        parts[parts.index("tcp") + 1] = "0"
    return "/".join(parts)


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
    keys: Callable[[str], Ed25519PrivateKey] | None = None  # name -> key; default: peer_key(swarm_seed, name)
    listen: str = "/ip4/127.0.0.1/tcp/0"  # hivemind: the first peer's listen address
    schedule: Any = None  # hivemind joinable from elsewhere: when each round starts (a Schedule or ChainSchedule)
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
        key = self.keys(name) if self.keys is not None else peer_key(self.swarm_seed, name)
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
        if first is None:
            return HivemindTransport(key, host_maddrs=[self.listen])
        return HivemindTransport(key, initial_peers=first.transport.visible_maddrs(), host_maddrs=[any_port(self.listen)])

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
                    "submitted": sum(1 for r in p.history if r.get("submitted")),  # claims the coordinator took
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
    keys: Callable[[str], Ed25519PrivateKey] | None = None,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    round_seconds: float | None = None,
    before_round: Callable[[LocalSwarm], None] | None = None,
    schedule: Callable[[int], Any] | None = None,
    coordinator: Coordinator | None = None,
) -> dict:
    """Run the swarm up to round `rounds`. With `round_seconds`, rounds keep to a schedule that
    starts now at the round the peers resume from; `schedule(round)` gives another one starting
    there (a coordinator.ChainSchedule: rounds from the chain); `before_round` runs before each
    round (a host re-publishes its manifest there)."""
    swarm = LocalSwarm(store, model, Path(workdir), mix, settings, transport, swarm_seed,
                       adversaries=dict(adversaries or {}), keys=keys, listen=listen,
                       **({"coordinator": coordinator} if coordinator is not None else {}))
    try:
        for name in names or peer_names(peers):
            swarm.add_peer(name)
        # Rerunning over the same workdir continues where the peers' saved state left off.
        swarm.round = max(p.next_round for p in swarm.peers.values())
        if schedule is not None:
            swarm.schedule = schedule(swarm.round)
        elif round_seconds:
            swarm.schedule = Schedule.resuming(swarm.round, round_seconds)
        if on_start:
            on_start(swarm)
        while swarm.round < rounds:
            if swarm.schedule is not None:
                swarm.round = max(swarm.round, swarm.schedule.current())  # fell behind: skip to the slot
                if swarm.round >= rounds:
                    break
                swarm.schedule.wait_for(swarm.round)
            if before_round:
                before_round(swarm)
            swarm.run_round(on_report)
        return swarm.summary()
    finally:
        swarm.close()
