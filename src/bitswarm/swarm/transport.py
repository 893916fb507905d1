"""How peers share signed rollout records each round: the Transport interface and the in-memory one.

There is no barrier: `publish` puts this peer's blobs up for a round, `publishers` lists who
has put something up for a round so far, and `fetch` reads the blobs of the publishers a peer
chose. A peer reads only the few publishers it samples (peer.SwarmPeer._sample), so what one
round costs it does not grow with the swarm; `gather` (everyone's blobs) is for tools and tests.
Each answer holds one publisher's blobs for one round, at most MAX_PUBLISHES_PER_ROUND of them,
so no answer grows with the swarm either. Transports move opaque bytes; checking them is the
job of records.RecordFilter. The libp2p transport is `hivemind_transport.HivemindTransport`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm import peer_key
from bitswarm.errors import BitswarmError
from bitswarm.swarm.records import (
    public_key_hex,
)

log = logging.getLogger(__name__)

# Blobs one publisher may put up per round. Peers admit only a few records per peer and round
# (RecordFilter), so this only bounds one answer: at most this many records of at most
# MAX_RECORD_BYTES (512 KiB), far under hivemind's 4 MiB message limit however big the swarm.
MAX_PUBLISHES_PER_ROUND = 8


class TransportError(BitswarmError, RuntimeError):
    """A transport failure with what went wrong (`problem`) and what to check (`diagnosis`).

    `kind` is a stable tag: "p2pd_missing", "daemon_start", "bad_maddr",
    "bootstrap_unreachable", "identity", "dht_dead", "publish_limit".
    """

    def __init__(self, kind: str, problem: str, diagnosis: str):
        super().__init__(f"{problem}\nDiagnosis: {diagnosis}")
        self.kind = kind
        self.problem = problem
        self.diagnosis = diagnosis


@runtime_checkable
class Transport(Protocol):
    peer_key: str  # own raw Ed25519 public key, hex: how records name their author

    def publish(self, round: int, blob: bytes) -> None: ...

    def publishers(self, round: int) -> list[str]:
        """Keys (hex) that have listed themselves as publishers of `round`, other than ours, sorted.
        A claim only: the records `fetch` returns are what gets checked."""
        ...

    def fetch(self, round: int, publishers: Sequence[str]) -> dict[str, list[bytes]]:
        """The blobs each of `publishers` has put up for `round` (unchecked; [] for none)."""
        ...

    def gather(self, round: int) -> list[bytes]:
        """Every blob now visible for `round` from other peers: O(swarm), for tools and tests."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- in memory


class MemoryHub:
    """The shared board of an in-process swarm (one hub, many MemoryTransports). Thread-safe.

    Laid out like the DHT: round -> publisher -> its blobs, read one publisher at a time.
    Memory is bounded by round and by publisher: only rounds in [newest - round_window, newest]
    are kept (older ones are dropped as soon as a newer round is published), and one publisher's
    blobs in one round number at most MAX_PUBLISHES_PER_ROUND and total at most
    max_bytes_per_peer_round. `largest_answer` is the most bytes one read has returned. The hub
    trusts round numbers and keys, as a simulator should; adversarial peers are the filter's business.
    """

    def __init__(self, round_window: int = 4, max_bytes_per_peer_round: int = 1 << 20):
        self.round_window = round_window
        self.max_bytes_per_peer_round = max_bytes_per_peer_round
        self.refused: dict[str, int] = {}
        self.largest_answer = 0
        self._lock = threading.Lock()
        self._rounds: dict[int, dict[str, dict[int, bytes]]] = {}
        self._newest = -1
        self.manifests: dict[str, bytes] = {}  # host peer id -> its signed manifest (swarm.manifest)

    def put(self, peer: str, round: int, seq: int, blob: bytes) -> bool:
        """Store a blob under (peer, seq) for `round`; False (and counted) if refused."""
        with self._lock:
            if round < self._newest - self.round_window:
                return self._refuse("expired_round")
            if round > self._newest:
                self._newest = round
                for old in [r for r in self._rounds if r < round - self.round_window]:
                    del self._rounds[old]
            slot = self._rounds.setdefault(round, {}).get(peer, {})
            if seq not in slot and len(slot) >= MAX_PUBLISHES_PER_ROUND:
                return self._refuse("over_publish_cap")
            used = sum(len(b) for b in slot.values()) + len(blob) - len(slot.get(seq, b""))
            if used > self.max_bytes_per_peer_round:
                return self._refuse("over_byte_cap")
            slot[seq] = bytes(blob)
            self._rounds[round][peer] = slot
            return True

    def _refuse(self, reason: str) -> bool:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return False

    def get(self, round: int, *, exclude_peer: str) -> list[bytes]:
        """Every blob of `round` but `exclude_peer`'s, in (publisher, seq) order: the whole round."""
        with self._lock:
            slots = self._rounds.get(round, {})
            return [slots[p][n] for p in sorted(slots) if p != exclude_peer for n in sorted(slots[p])]

    def publishers(self, round: int, *, exclude_peer: str) -> list[str]:
        with self._lock:
            return sorted(p for p in self._rounds.get(round, {}) if p != exclude_peer)

    def blobs_of(self, round: int, peer: str) -> list[bytes]:
        """One publisher's blobs for one round, in seq order: what one DHT read returns."""
        with self._lock:
            slot = self._rounds.get(round, {}).get(peer, {})
            answer = [slot[n] for n in sorted(slot)]
            self.largest_answer = max(self.largest_answer, sum(len(b) for b in answer))
            return answer

    @property
    def bytes_held(self) -> int:
        with self._lock:
            return sum(len(b) for slots in self._rounds.values() for slot in slots.values() for b in slot.values())

    @property
    def rounds_held(self) -> list[int]:
        with self._lock:
            return sorted(self._rounds)


class MemoryTransport:
    """One simulated peer on a MemoryHub. Blobs are not checked here, so a test can publish junk."""

    def __init__(self, hub: MemoryHub, priv: Ed25519PrivateKey):
        self.hub = hub
        self.peer_key = public_key_hex(priv)
        self.peer_id = peer_key.peer_id(priv)
        self._seq: dict[int, int] = {}
        self._closed = False

    def publish_manifest(self, blob: bytes) -> bool:
        self.hub.manifests[self.peer_id] = bytes(blob)
        return True

    def manifest(self, peer_id: str) -> bytes | None:
        return self.hub.manifests.get(peer_id)

    def _open(self) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")

    def publish(self, round: int, blob: bytes) -> None:
        self._open()
        seq = self._seq[round] = self._seq.get(round, -1) + 1
        _forget_old(self._seq)
        if not self.hub.put(self.peer_key, round, seq, blob):
            log.warning("memory hub refused a %d-byte blob for round %d (%s)", len(blob), round, self.hub.refused)

    def publishers(self, round: int) -> list[str]:
        self._open()
        return self.hub.publishers(round, exclude_peer=self.peer_key)

    def fetch(self, round: int, publishers: Sequence[str]) -> dict[str, list[bytes]]:
        self._open()
        return {p: self.hub.blobs_of(round, p) for p in publishers}

    def gather(self, round: int) -> list[bytes]:
        return [b for blobs in self.fetch(round, self.publishers(round)).values() for b in blobs]

    def close(self) -> None:
        self._closed = True  # what it published stays up until the hub expires the round

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _forget_old(counters: dict[int, int], keep: int = 16) -> None:
    """Publish counters for rounds long past are dead weight; keep the newest few."""
    while len(counters) > keep:
        del counters[min(counters)]
