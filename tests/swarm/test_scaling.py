"""The swarm at scale: a round's records are paged so no read's answer grows with the swarm, and
a peer fetches only the few publishers it samples, fairly over keys and the same on a replay."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.store import BlobStore
from bitswarm.swarm import hivemind_transport as ht
from bitswarm.swarm.peer import SAMPLE_FANOUT, PeerSettings, SwarmPeer
from bitswarm.swarm.records import (
    MAX_RECORD_BYTES,
    RecordFilter,
    Rollout,
    RolloutRecord,
    encode_announcement,
    encode_signed,
    public_key_hex,
)
from bitswarm.swarm.transport import MAX_PUBLISHES_PER_ROUND, MemoryHub, MemoryTransport

from .support import live_p2pd

DHT_MESSAGE_CAP = 4 * 1024**2  # hivemind's p2p message limit, which one DHT answer must fit in
SETTINGS = PeerSettings(local=2, external=2, group_size=4)


def key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"scaling/{i}".encode()).digest())


def big_records(priv: Ed25519PrivateKey, round_: int, n: int) -> list[bytes]:
    """n records of about 60 KiB each (near MAX_RECORD_BYTES): long completions."""
    out = []
    for seq in range(n):
        rollouts = [Rollout(dataset="d", seed=seq, index=i, completion=f"{i}" + "x" * 4000, claimed_reward=0.0,
                            group=i) for i in range(14)]
        out.append(encode_signed(RolloutRecord(round=round_, peer=public_key_hex(priv), seq=seq, rollouts=rollouts),
                                 priv))
    assert all(50_000 < len(b) <= MAX_RECORD_BYTES for b in out)
    return out


def test_a_round_far_over_the_dht_cap_is_read_in_bounded_answers():
    hub = MemoryHub(max_bytes_per_peer_round=MAX_PUBLISHES_PER_ROUND * MAX_RECORD_BYTES)
    for i in range(64):
        t = MemoryTransport(hub, key(i))
        for blob in big_records(key(i), 0, 4):
            t.publish(0, blob)
    reader = MemoryTransport(hub, key(999))
    blobs = reader.gather(0)
    f = RecordFilter()
    assert len(blobs) == 64 * 4 and all(f.accept(b, 0) for b in blobs)
    assert sum(map(len, blobs)) > 3 * DHT_MESSAGE_CAP  # the round as one answer would not fit
    assert hub.largest_answer <= MAX_PUBLISHES_PER_ROUND * MAX_RECORD_BYTES < DHT_MESSAGE_CAP // 4


def _informative(mix, round_: int, priv: Ed25519PrivateKey, groups: int, seq: int = 0) -> bytes:
    """A record of `groups` tasks, each with right and wrong answers (so every group is informative)."""
    rollouts = []
    for gi, ref in enumerate(mix.sample(0, round_, f"{public_key_hex(priv)}/{seq}", groups)):
        right = f"<answer>{mix.reference_answer(ref)}</answer>"
        rollouts += [Rollout(dataset=ref.dataset, seed=ref.seed, index=ref.index, completion=c,
                             claimed_reward=float(c == right), group=gi) for c in (right, "no", right, "nope")]
    return encode_signed(RolloutRecord(round=round_, peer=public_key_hex(priv), seq=seq, rollouts=rollouts), priv)


class CountingTransport(MemoryTransport):
    """Counts what a peer reads: publisher slots fetched and blob bytes received."""

    def __init__(self, hub, priv):
        super().__init__(hub, priv)
        self.slots = 0
        self.bytes = 0

    def fetch(self, round, publishers):
        got = super().fetch(round, publishers)
        self.slots += len(got)
        self.bytes += sum(len(b) for blobs in got.values() for b in blobs)
        return got


def _peer(tmp_path, mix, priv, hub, name="me") -> SwarmPeer:
    return SwarmPeer(name, BlobStore(tmp_path / "store"), tmp_path / name, "sha256:" + "0" * 64,
                     CountingTransport(hub, priv), mix, priv, SETTINGS)


@pytest.mark.parametrize("swarm", [4, 64])
def test_gather_reads_a_fixed_sample_however_big_the_swarm(tmp_path, tiny_mix, swarm):
    hub = MemoryHub()
    for i in range(swarm):
        MemoryTransport(hub, key(i)).publish(0, _informative(tiny_mix, 0, key(i), SETTINGS.local))
    peer = _peer(tmp_path, tiny_mix, key(999), hub)
    groups = peer._gather(0)
    budget = SAMPLE_FANOUT * SETTINGS.external
    assert peer.transport.slots == min(swarm, budget)  # not one read more at 64 than the sample
    assert len({g.source for g in groups}) == min(swarm, budget)
    picked = peer._pick_external(groups, 0)
    assert len(picked) == SETTINGS.external and len({g.source for g in picked}) == SETTINGS.external
    # Slots once fetched are not fetched again: next round samples among the rest.
    before = {g.source for g in groups}
    again = peer._gather(1)
    assert before.isdisjoint({g.source for g in again})


def test_the_sample_is_the_same_on_a_replay_and_differs_by_peer_and_round(tmp_path, tiny_mix):
    hub = MemoryHub()
    for r in range(2):
        for i in range(32):
            MemoryTransport(hub, key(i)).publish(r, _informative(tiny_mix, r, key(i), 1))

    def sample(priv, round_, where):
        return [k for k, _ in _peer(tmp_path / where, tiny_mix, priv, hub)._sample(round_)]

    first = sample(key(999), 1, "a")
    assert sample(key(999), 1, "b") == first  # a fresh peer with the same key: the same choice
    assert sample(key(998), 1, "c") != first
    assert sample(key(999), 0, "d") != first


def test_byzantine_keys_get_their_share_of_the_sample_and_no_more(tmp_path, tiny_mix):
    """8 of 32 publishers flood: the most records and groups the caps allow, every group
    informative. Over many rounds they get about a quarter of the external groups a peer uses."""
    hub = MemoryHub()
    honest, byzantine = [key(i) for i in range(24)], [key(100 + i) for i in range(8)]
    bad = {public_key_hex(k) for k in byzantine}
    peer = _peer(tmp_path, tiny_mix, key(999), hub)
    used = []
    for r in range(40):
        for k in honest:
            MemoryTransport(hub, k).publish(r, _informative(tiny_mix, r, k, SETTINGS.local))
        for k in byzantine:
            t = MemoryTransport(hub, k)
            for seq in range(MAX_PUBLISHES_PER_ROUND):
                t.publish(r, _informative(tiny_mix, r, k, 4, seq=seq))
        used += [g.source for g in peer._pick_external(peer._gather(r), r)]
    share = sum(s in bad for s in used) / len(used)
    assert len(used) == 40 * SETTINGS.external
    assert share <= 0.25 + 0.1, f"byzantine keys took {share:.0%} of the external groups (their share: 25%)"
    assert peer.filter.dropped.get("flooding", 0) > 0  # their surplus records were refused


# ---------------------------------------------------------------- hivemind on loopback


@pytest.fixture
def trio(monkeypatch):
    """Three DHT peers on loopback (b and c bootstrap from a); no daemon outlives the test."""
    marker = uuid.uuid4().hex
    monkeypatch.setenv("BITSWARM_TEST_RUN", marker)
    started = []
    try:
        a = ht.HivemindTransport(key(0), start_timeout_s=15)
        started.append(a)
        for i in (1, 2):
            started.append(ht.HivemindTransport(key(i), initial_peers=a.visible_maddrs(), start_timeout_s=15))
        yield started
    finally:
        for t in reversed(started):
            t.close()
        deadline = time.monotonic() + 5
        while live_p2pd(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live_p2pd(marker) == set(), "p2pd left running"


def _publish_as(t: ht.HivemindTransport, priv: Ed25519PrivateKey, round_: int, blobs: list[bytes]) -> None:
    """Put `blobs` up as another key would (the layout publish() uses), through t's DHT node:
    one process standing in for many publishers."""
    peer, expires = public_key_hex(priv), t._get_dht_time() + 120
    with t._lock:
        for n, blob in enumerate(blobs):
            assert t._store(ht.RECORDS_KEY.format(round=round_, peer=peer), f"{peer}:{n}", blob, expires)
        assert t._store(ht.INDEX_KEY.format(round=round_, page=ht.index_page(peer)), f"index:{peer}",
                        encode_announcement(round_, priv), expires)


@pytest.mark.network
def test_hivemind_round_far_over_the_cap_is_gathered(trio):
    a, b, c = trio
    publishers = [key(10 + i) for i in range(20)]
    expected = {}
    for priv in publishers:
        blobs = big_records(priv, 3, 4)
        _publish_as(c, priv, 3, blobs)
        expected[public_key_hex(priv)] = blobs
    total = sum(len(x) for blobs in expected.values() for x in blobs)
    assert total > DHT_MESSAGE_CAP  # one key holding the round would not fit in one answer
    a.publish(3, big_records(key(0), 3, 1)[0])  # and one through the transport itself
    expected[a.peer_key] = big_records(key(0), 3, 1)
    assert b.publishers(3) == sorted(expected)
    got = b.fetch(3, sorted(expected))
    assert got == expected
    f = RecordFilter()
    assert all(f.accept(x, 3, slot=(p, 3)) for p, blobs in got.items() for x in blobs)
    # Forged index entries are refused by every node: a listing under someone else's key, junk under one's own.
    expires = a._get_dht_time() + 60
    page = ht.INDEX_KEY.format(round=3, page=ht.index_page(b.peer_key))
    assert not a._dht.store(page, encode_announcement(3, key(0)), expires, subkey=f"index:{b.peer_key}")
    assert not a._dht.store(page, b"junk", expires, subkey=f"index:{a.peer_key}")
