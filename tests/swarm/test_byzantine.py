"""Byzantine publishers against a peer's gather: oversized groups and too many groups from one
key are cut and counted, and what honest peers publish passes untouched."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.store import BlobStore
from bitswarm.swarm.peer import SwarmPeer
from bitswarm.swarm.records import Rollout, RolloutRecord, encode_signed, public_key_hex
from bitswarm.swarm.transport import MemoryHub, MemoryTransport

from .conftest import FAST


def _informative(mix, ref, n: int, group: int) -> list[Rollout]:
    """n completions of task `ref`, alternately right and wrong: a group with signal."""
    right = f"<answer>{mix.reference_answer(ref)}</answer>"
    return [Rollout(dataset=ref.dataset, seed=ref.seed, index=ref.index, completion=right if i % 2 else f"no {i}",
                    claimed_reward=float(i % 2), group=group) for i in range(n)]


def _publish(hub: MemoryHub, key: Ed25519PrivateKey, round_: int, rollouts: list[Rollout], per_record: int = 64) -> None:
    t = MemoryTransport(hub, key)
    for seq, start in enumerate(range(0, len(rollouts), per_record)):
        rec = RolloutRecord(round=round_, peer=public_key_hex(key), seq=seq, rollouts=rollouts[start:start + per_record])
        t.publish(round_, encode_signed(rec, key))


def test_oversized_and_surplus_groups_are_cut_and_counted(tmp_path, tiny_mix):
    hub = MemoryHub()
    me = Ed25519PrivateKey.generate()
    peer = SwarmPeer("me", BlobStore(tmp_path / "store"), tmp_path / "me", "sha256:" + "0" * 64,
                     MemoryTransport(hub, me), tiny_mix, me, FAST)
    refs = tiny_mix.sample(0, 0, "someone", 40)
    honest, big, many = (Ed25519PrivateKey.generate() for _ in range(3))

    # An honest peer: I groups of group_size, exactly what SwarmPeer._publish sends.
    honest_rollouts = [ro for gi in range(FAST.local) for ro in _informative(tiny_mix, refs[gi], FAST.group_size, gi)]
    _publish(hub, honest, 0, honest_rollouts, per_record=16)
    # One group of 150 completions over three records: GRPO would weigh it like 37 honest groups.
    _publish(hub, big, 0, _informative(tiny_mix, refs[10], 150, 0))
    # Sixteen well-formed groups from one key, where an honest peer publishes I = 2.
    _publish(hub, many, 0, [ro for gi in range(16) for ro in _informative(tiny_mix, refs[20 + gi], FAST.group_size, gi)])

    groups = peer._gather(0)
    by_source: dict[str, list] = {}
    for g in groups:
        by_source.setdefault(g.source, []).append(g)
    assert all(len(g.completions) <= FAST.group_size for g in groups)
    assert public_key_hex(big) not in by_source  # every record of it held a group over the cap
    assert len(by_source[public_key_hex(many)]) == FAST.local
    assert peer.filter.dropped["oversized_group"] == 3
    assert peer.filter.dropped["too_many_groups"] == 16 - FAST.local
    # The honest peer's groups arrive whole and unchanged.
    honest_groups = by_source[public_key_hex(honest)]
    assert [(g.ref.index, g.completions) for g in honest_groups] == [
        (refs[gi].index, [ro.completion for ro in honest_rollouts if ro.group == gi]) for gi in range(FAST.local)]

    # Completions added to an admitted group later, in another record, cannot grow it either.
    _publish(hub, honest, 1, _informative(tiny_mix, refs[0], FAST.group_size, 0))
    t = MemoryTransport(hub, honest)
    t._seq[1] = 0
    t.publish(1, encode_signed(RolloutRecord(round=1, peer=public_key_hex(honest), seq=1,
                                             rollouts=_informative(tiny_mix, refs[0], 2, 0)[::-1]), honest))
    groups = [g for g in peer._gather(1) if g.source == public_key_hex(honest)]
    assert [len(g.completions) for g in groups] == [FAST.group_size]
    assert peer.filter.dropped["oversized_group"] == 4
