"""How peers share signed rollout records each round: the Transport interface and the in-memory one.

There is no barrier: `publish` puts this peer's blobs up for a round and `gather` returns
whatever other peers have put up so far. Transports move opaque bytes; checking them is the
job of records.RecordFilter, which also dedups the repeats `gather` is allowed to return.
The libp2p transport is `hivemind_transport.HivemindTransport`.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol, Self, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm import peer_key
from bitswarm.errors import BitswarmError
from bitswarm.swarm.records import (
    public_key_hex,
)

log = logging.getLogger(__name__)


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

    def gather(self, round: int) -> list[bytes]:
        """Every blob now visible for `round` from other peers; may repeat earlier ones."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- in memory


class MemoryHub:
    """The shared board of an in-process swarm (one hub, many MemoryTransports). Thread-safe.

    Memory is bounded by round and by publisher: only rounds in [newest - round_window, newest]
    are kept (older ones are dropped as soon as a newer round is published), and one publisher's
    blobs in one round total at most max_bytes_per_peer_round. The hub trusts round numbers and
    keys, as a simulator should; adversarial peers are the filter's business.
    """

    def __init__(self, round_window: int = 4, max_bytes_per_peer_round: int = 1 << 20):
        self.round_window = round_window
        self.max_bytes_per_peer_round = max_bytes_per_peer_round
        self.refused: dict[str, int] = {}
        self._lock = threading.Lock()
        self._rounds: dict[int, dict[tuple[str, int], bytes]] = {}
        self._used: dict[tuple[int, str], int] = {}
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
                self._used = {k: v for k, v in self._used.items() if k[0] >= round - self.round_window}
            slot = self._rounds.setdefault(round, {})
            previous = slot.get((peer, seq), b"")
            used = self._used.get((round, peer), 0) + len(blob) - len(previous)
            if used > self.max_bytes_per_peer_round:
                return self._refuse("over_byte_cap")
            slot[(peer, seq)] = bytes(blob)
            self._used[(round, peer)] = used
            return True

    def _refuse(self, reason: str) -> bool:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return False

    def get(self, round: int, *, exclude_peer: str) -> list[bytes]:
        with self._lock:
            slot = self._rounds.get(round, {})
            return [blob for (peer, _), blob in sorted(slot.items()) if peer != exclude_peer]

    @property
    def bytes_held(self) -> int:
        with self._lock:
            return sum(self._used.values())

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

    def publish(self, round: int, blob: bytes) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")
        seq = self._seq[round] = self._seq.get(round, -1) + 1
        _forget_old(self._seq)
        if not self.hub.put(self.peer_key, round, seq, blob):
            log.warning("memory hub refused a %d-byte blob for round %d (%s)", len(blob), round, self.hub.refused)

    def gather(self, round: int) -> list[bytes]:
        if self._closed:
            raise RuntimeError("transport is closed")
        return self.hub.get(round, exclude_peer=self.peer_key)

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
