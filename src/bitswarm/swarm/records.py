"""Signed rollout records: what a swarm peer publishes each round, and the filter that admits them.

Wire format (v1), one UTF-8 JSON object in canonical form (sorted keys, no spaces, non-ASCII
kept as UTF-8, floats as Python's shortest round-trip repr):

    {"record": <RolloutRecord>, "sig": "<128 hex chars>", "v": 1}

`sig` is an Ed25519 signature by the key whose raw public key is `record.peer`, over
DOMAIN + canonical(record). The domain prefix keeps these signatures from being valid for
anything else the same key signs (the key is also the peer's libp2p identity).

Only the exact bytes `encode_signed` produces are accepted: a record is re-encoded after
parsing and must match byte for byte. That makes one record have one encoding, so a content
hash identifies it and re-serialising a record (other whitespace, duplicate keys, `1` for
`1.0`) cannot get a replay past the filter.

Records name their author by the raw 32-byte Ed25519 public key (hex), not by libp2p peer id,
so this module needs nothing from the node layer; callers map keys to display names.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Annotated, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bitswarm.errors import BitswarmError

VERSION = 1
DOMAIN = b"bitswarm/rollout-record/v1\x00"
MAX_RECORD_BYTES = 64 * 1024
MAX_ROLLOUTS = 64

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
_U64 = Annotated[int, Field(ge=0, lt=2**64)]  # repro seeds are 64-bit
_U31 = Annotated[int, Field(ge=0, lt=2**31)]


class Rollout(BaseModel):
    model_config = _STRICT

    dataset: str = Field(max_length=64)
    seed: _U64
    index: _U31
    completion: str = Field(max_length=4096)
    claimed_reward: float = Field(allow_inf_nan=False)  # JSON has no NaN/Infinity
    group: _U31


class RolloutRecord(BaseModel):
    model_config = _STRICT

    round: Annotated[int, Field(ge=0, lt=2**63)]
    peer: str = Field(pattern=r"^[0-9a-f]{64}$")  # raw Ed25519 public key, lowercase hex
    seq: Annotated[int, Field(ge=0, lt=2**63)]
    rollouts: list[Rollout] = Field(max_length=MAX_ROLLOUTS)


class RecordRejected(BitswarmError, ValueError):
    """A blob that is not a valid signed record. `reason` is a short stable tag for counters."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def public_key_hex(priv: Ed25519PrivateKey) -> str:
    raw = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def canonical_json(obj: Any) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and would make encodings ambiguous.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _signed_message(record_json: dict[str, Any]) -> bytes:
    return DOMAIN + canonical_json(record_json)


def encode_signed(record: RolloutRecord, priv: Ed25519PrivateKey, *, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
    """The wire bytes of `record` signed by `priv`.

    Raises ValueError if `record.peer` is not `priv`'s public key (peers would reject it as a
    bad signature) or if the result is over `max_bytes` (peers would drop it as oversized; split
    the rollouts over several records instead).
    """
    if record.peer != public_key_hex(priv):
        raise ValueError("record.peer must be the signing key's public key hex")
    body = record.model_dump(mode="json")
    sig = priv.sign(_signed_message(body)).hex()
    blob = canonical_json({"record": body, "sig": sig, "v": VERSION})
    if len(blob) > max_bytes:
        raise ValueError(f"signed record is {len(blob)} bytes, over the {max_bytes}-byte limit peers accept")
    return blob


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_verified(blob: bytes, *, max_bytes: int) -> RolloutRecord:
    """Parse and verify one wire record, cheapest checks first; raise RecordRejected.

    Reasons: "oversized" (checked before any parsing), "malformed" (not the JSON envelope),
    "unsigned" (no or empty sig), "schema" (record does not fit RolloutRecord),
    "non_canonical" (valid but not the canonical encoding), "bad_signature" (sig is not a
    valid Ed25519 signature by record.peer, including a signature by some other key).
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise RecordRejected("malformed", f"expected bytes, got {type(blob).__name__}")
    if len(blob) > max_bytes:
        raise RecordRejected("oversized", f"{len(blob)} bytes > {max_bytes}")
    try:
        env = json.loads(bytes(blob).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RecordRejected("malformed", f"not UTF-8 JSON: {e}") from None
    if not isinstance(env, dict):
        raise RecordRejected("malformed", "envelope is not a JSON object")
    sig = env.get("sig")
    if sig is None or sig == "":
        raise RecordRejected("unsigned", "no signature")
    if set(env) != {"v", "record", "sig"}:
        raise RecordRejected("malformed", f"envelope keys {sorted(env)} != ['record', 'sig', 'v']")
    if env["v"] != VERSION or type(env["v"]) is not int:
        raise RecordRejected("malformed", f"unsupported version {env['v']!r}")
    if not isinstance(sig, str) or len(sig) != 128 or sig != sig.lower():
        raise RecordRejected("bad_signature", "sig is not 128 lowercase hex chars")
    try:
        sig_bytes = bytes.fromhex(sig)
    except ValueError:
        raise RecordRejected("bad_signature", "sig is not hex") from None
    try:
        record = RolloutRecord.model_validate(env["record"])
    except ValidationError as e:
        raise RecordRejected("schema", str(e.errors(include_url=False, include_input=False))[:500]) from None
    body = record.model_dump(mode="json")
    try:
        canonical = canonical_json({"record": body, "sig": sig, "v": VERSION})
    except (UnicodeEncodeError, ValueError) as e:  # lone surrogates in strings
        raise RecordRejected("malformed", f"cannot be encoded canonically: {e}") from None
    if canonical != blob:
        raise RecordRejected("non_canonical", "bytes differ from the canonical encoding of the same record")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(record.peer)).verify(sig_bytes, _signed_message(body))
    except (InvalidSignature, ValueError):
        raise RecordRejected("bad_signature", f"signature does not verify for peer {record.peer[:16]}…") from None
    return record


# ---------------------------------------------------------------- announcements
#
# A publisher lists itself in a round's index with a tiny signed announcement, so readers can
# list a round's publishers without downloading their records:
#
#     {"announce": {"peer": "<key hex>", "round": <int>}, "sig": "<128 hex chars>", "v": 1}
#
# signed over ANNOUNCE_DOMAIN + canonical(announce). DHT nodes check it on store; readers need
# not, because they trust only the records they then fetch (a false entry costs one empty fetch).

ANNOUNCE_DOMAIN = b"bitswarm/rollout-announcement/v1\x00"
MAX_ANNOUNCEMENT_BYTES = 512


def encode_announcement(round_: int, priv: Ed25519PrivateKey) -> bytes:
    """The signed bytes that list `priv`'s key as a publisher of round `round_`."""
    body = {"peer": public_key_hex(priv), "round": round_}
    sig = priv.sign(ANNOUNCE_DOMAIN + canonical_json(body)).hex()
    return canonical_json({"announce": body, "sig": sig, "v": VERSION})


def verify_announcement(blob: bytes, *, peer: str) -> int:
    """The round an announcement by `peer` names; RecordRejected unless it is exactly the bytes
    encode_announcement makes for that key."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) > MAX_ANNOUNCEMENT_BYTES:
        raise RecordRejected("oversized" if isinstance(blob, (bytes, bytearray)) else "malformed")
    try:
        env = json.loads(bytes(blob).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RecordRejected("malformed", "not UTF-8 JSON") from None
    body = env.get("announce") if isinstance(env, dict) else None
    if not isinstance(body, dict) or set(env) != {"announce", "sig", "v"} or set(body) != {"peer", "round"}:
        raise RecordRejected("malformed", "not an announcement")
    rnd, sig = body["round"], env["sig"]
    if body["peer"] != peer or type(rnd) is not int or not 0 <= rnd < 2**63 or not isinstance(sig, str):
        raise RecordRejected("schema", "announcement fields")
    if canonical_json(env) != bytes(blob):
        raise RecordRejected("non_canonical")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(peer)).verify(bytes.fromhex(sig),
                                                                       ANNOUNCE_DOMAIN + canonical_json(body))
    except (InvalidSignature, ValueError):
        raise RecordRejected("bad_signature", f"announcement not signed by {peer[:16]}…") from None
    return rnd


def content_hash(record: RolloutRecord) -> bytes:
    """Hash of what a record says, minus its seq: the same rollouts re-sent under a new seq match."""
    body = record.model_dump(mode="json")
    del body["seq"]
    return hashlib.sha256(canonical_json(body)).digest()


class _PeerRound:
    """What the filter remembers about one (peer, round): at most max_records_per_peer_round
    seqs and hashes, and the completions admitted per group (at most max_groups_per_peer_round
    groups when that is set)."""

    __slots__ = ("groups", "hashes", "seqs")

    def __init__(self) -> None:
        self.seqs: set[int] = set()
        self.hashes: set[bytes] = set()
        self.groups: dict[int, int] = {}


class RecordFilter:
    """Admits each verified record at most once, only for recent rounds, at most a few per peer.

    Bounds, and why each holds:

    * `max_bytes` - a blob is measured before it is parsed, so an oversized blob costs nothing
      but its length.
    * `round_window` - only rounds in [current_round - round_window, current_round] are
      admitted; no state is kept for future rounds, and state for rounds that fell out of the
      window is dropped whenever `accept` sees a newer current_round. The window never moves
      back: rounds once pruned stay refused, so a replay of an old record cannot be re-admitted
      after its state is gone.
    * `max_records_per_peer_round` - only admitted records are remembered, and a peer gets at
      most this many per round; everything else it sends is dropped as "flooding" without
      adding state. So one (peer, round) entry holds at most this many seqs and hashes.
    * `max_peers_tracked` - the number of (peer, round) entries is capped; at the cap the oldest
      entry is evicted. Keys are free, so this is what bounds a sybil flood. Total state is at
      most max_peers_tracked * max_records_per_peer_round (seq, hash) pairs. An evicted entry
      forgets its records, which could then be replayed within the window; size the cap above
      (expected peers) * (round_window + 1) so that only a flood of fresh keys evicts.

    * `max_group_size` - completions one (peer, round, group) may hold, over all its records:
      GRPO weighs a group by its size, so one oversized group would outweigh every honest one
      in an update. A group that would grow past it is cut out of the record ("oversized_group").
    * `max_groups_per_peer_round` - distinct groups one publisher may contribute per round;
      further groups are cut out ("too_many_groups"). Set to the swarm's I (local groups): an
      honest peer publishes exactly I groups per round, so no honest group is ever cut, and no
      key can take more of a receiver's J external slots than any other.
    Both are None (no cap) by default; SwarmPeer always sets them from its settings. The rest
    of a record that had groups cut is still admitted: its other groups are within bounds.

    Replay detection: a (peer, round, seq) seen before, a record whose content (everything
    but seq) was already admitted from the same peer in the same round, or a record fetched
    from a slot (publisher, round) that is not its own.
    """

    def __init__(
        self,
        max_bytes: int = MAX_RECORD_BYTES,
        round_window: int = 2,
        max_records_per_peer_round: int = 4,
        max_peers_tracked: int = 4096,
        *,
        max_group_size: int | None = None,
        max_groups_per_peer_round: int | None = None,
    ):
        caps = [c for c in (max_group_size, max_groups_per_peer_round) if c is not None]
        if min(max_bytes, max_records_per_peer_round, max_peers_tracked, *caps) < 1 or round_window < 0:
            raise ValueError("filter bounds must be positive (round_window >= 0)")
        self.max_group_size = max_group_size
        self.max_groups_per_peer_round = max_groups_per_peer_round
        self.max_bytes = max_bytes
        self.round_window = round_window
        self.max_records_per_peer_round = max_records_per_peer_round
        self.max_peers_tracked = max_peers_tracked
        self.dropped: dict[str, int] = {}
        self.accepted = 0
        # Insertion order is age order: the first entry is the one evicted at the cap.
        self._entries: OrderedDict[tuple[int, str], _PeerRound] = OrderedDict()
        self._peers_by_round: dict[int, set[str]] = {}
        self._low_round = 0  # lowest round still admitted; only ever rises

    @property
    def tracked_entries(self) -> int:
        """(peer, round) entries held; at most max_peers_tracked."""
        return len(self._entries)

    @property
    def tracked_records(self) -> int:
        """Remembered (seq, hash) pairs; at most max_peers_tracked * max_records_per_peer_round."""
        return sum(len(e.seqs) for e in self._entries.values())

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _prune(self, current_round: int) -> None:
        low = max(self._low_round, current_round - self.round_window)
        if low == self._low_round:
            return
        self._low_round = low
        for r in [r for r in self._peers_by_round if r < low]:
            for peer in self._peers_by_round.pop(r):
                del self._entries[(r, peer)]

    def _entry(self, round_: int, peer: str) -> _PeerRound:
        key = (round_, peer)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_peers_tracked:
                (old_round, old_peer), _ = self._entries.popitem(last=False)
                peers = self._peers_by_round[old_round]
                peers.discard(old_peer)
                if not peers:
                    del self._peers_by_round[old_round]
            entry = self._entries[key] = _PeerRound()
            self._peers_by_round.setdefault(round_, set()).add(peer)
        return entry

    def accept(self, blob: bytes, current_round: int, *, slot: tuple[str, int] | None = None) -> RolloutRecord | None:
        """The record if it is new, verified and in bounds; None (and a counted reason) if not.

        `slot` is the (publisher key, round) the blob was fetched from: a record by another key
        or of another round there is someone else's record (or an old one) put up again, and is
        dropped as "replayed" before it leaves any state, so it cannot shadow the real one.
        """
        self._prune(current_round)
        try:
            record = decode_verified(blob, max_bytes=self.max_bytes)
        except RecordRejected as e:
            self._drop(e.reason)
            return None
        if not (self._low_round <= record.round <= current_round):
            self._drop("unknown_round")
            return None
        if slot is not None and (record.peer, record.round) != slot:
            self._drop("replayed")
            return None
        # Look up without creating: a dropped record must not add state.
        entry = self._entries.get((record.round, record.peer))
        digest = content_hash(record)
        if entry is not None:
            if record.seq in entry.seqs or digest in entry.hashes:
                self._drop("replayed")
                return None
            if len(entry.seqs) >= self.max_records_per_peer_round:
                self._drop("flooding")
                return None
        sizes, kept, cut = self._admit_groups(record, entry.groups if entry is not None else {})
        entry = self._entry(record.round, record.peer)
        entry.seqs.add(record.seq)
        entry.hashes.add(digest)
        entry.groups = sizes
        self.accepted += 1
        if not cut:
            return record
        return record.model_copy(update={"rollouts": [ro for ro in record.rollouts if ro.group in kept]})

    def _admit_groups(self, record: RolloutRecord, admitted: dict[int, int]) -> tuple[dict[int, int], set[int], int]:
        """Which of the record's groups fit the caps (taken in order of first appearance): the
        (peer, round)'s group sizes with them added, the groups kept, and how many were cut."""
        sizes = dict(admitted)
        incoming: dict[int, int] = {}
        for ro in record.rollouts:
            incoming[ro.group] = incoming.get(ro.group, 0) + 1
        kept: set[int] = set()
        for group, n in incoming.items():
            if group not in sizes and self.max_groups_per_peer_round is not None \
                    and len(sizes) >= self.max_groups_per_peer_round:
                self._drop("too_many_groups")
            elif self.max_group_size is not None and sizes.get(group, 0) + n > self.max_group_size:
                self._drop("oversized_group")
            else:
                sizes[group] = sizes.get(group, 0) + n
                kept.add(group)
        return sizes, kept, len(incoming) - len(kept)
