"""Churn and byzantine peers together, over real libp2p DHTs (a p2pd daemon per peer, on loopback).

Ten peers; every round 30% of the honest ones leave and as many join (some come back with their
saved state, some are new); 20% are byzantine (one inflates its claimed reward, one pads its
groups past the cap), and a key from outside attacks every round with garbage, forged
signatures, flooding and a replayed honest record. Nothing may crash, what peers remember must
stay bounded, and the honest peers must still learn from each other.
"""

from __future__ import annotations

import json
import os
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.swarm.adversary import SwarmAdversary
from bitswarm.swarm.peer import PeerSettings
from bitswarm.swarm.records import RecordRejected, Rollout, RolloutRecord, encode_signed, public_key_hex
from bitswarm.swarm.runner import LocalSwarm
from bitswarm.swarm.transport import TransportError

pytestmark = [pytest.mark.network, pytest.mark.slow]  # ~40 s: sixteen p2pd daemons on two cores

ROUNDS, PEERS, CHURN = 4, 10, 3


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _attack(attacker, key, round_: int, tiny_mix, honest_blob: bytes | None) -> None:
    ref = tiny_mix.sample(0, round_, "attacker", 1)[0]
    wrong = f"<answer>{int(tiny_mix.reference_answer(ref)) + 1}</answer>"

    def record(seq: int, rollouts) -> bytes:
        return encode_signed(RolloutRecord(round=round_, peer=public_key_hex(key), seq=seq, rollouts=rollouts), key)

    def publish(blob: bytes) -> None:
        try:
            attacker.publish(round_, blob)
        except (RecordRejected, TransportError, ValueError):  # our own client refuses it (garbage, a forged
            pass  # signature, past the 8-per-round cap, another key's record); the DHT's validators too

    publish(os.urandom(300))  # not a record
    body = json.loads(record(0, []))
    body["sig"] = "00" * 64
    publish(json.dumps(body).encode())  # a forged signature
    for seq in range(1, 30):  # flooding: valid records claiming full reward for wrong answers
        publish(record(seq, [Rollout(dataset=ref.dataset, seed=ref.seed, index=ref.index, completion=wrong,
                                     claimed_reward=1.0, group=0)] * 4))
    if honest_blob is not None:
        publish(honest_blob)  # someone else's record, replayed from our slot


@pytest.fixture(scope="module")
def counting(tmp_path_factory):
    """The tiny model warm-started on counting letters, where it sometimes succeeds (on tiny_sum it
    never does: no group would be informative and nobody would learn)."""
    from bitswarm.jobs.tasks import TaskMix
    from bitswarm.models.importer import init_model
    from bitswarm.store import BlobStore
    from bitswarm.swarm.warmstart import warm_start

    root = tmp_path_factory.mktemp("counting")
    store, mix = BlobStore(root / "store"), TaskMix(["tiny_count"])
    return store, warm_start(store, init_model(store, "tiny", 0), mix, root / "run", steps=25, lr=1e-2), mix


def test_churn_and_byzantine_peers_together_over_hivemind(counting, tmp_path):
    store, model, tiny_mix = counting
    settings = PeerSettings(local=2, external=2, group_size=4, max_new_tokens=24, lr=1e-3, micro_batch=8)
    adversaries = {"p8": SwarmAdversary("inflate"), "p9": SwarmAdversary("oversized")}
    swarm = LocalSwarm(store, model, tmp_path, tiny_mix, settings, transport="hivemind", adversaries=adversaries)
    rng = random.Random(0)
    key = Ed25519PrivateKey.generate()
    try:
        for i in range(PEERS):
            swarm.add_peer(f"p{i}")
        attacker = swarm._transport(key)
        memory, newcomers, last_blob = [], 0, None
        for r in range(ROUNDS):
            if r:
                honest = [n for n in swarm.peers if n not in adversaries]
                for name in rng.sample(honest, CHURN):
                    swarm.remove_peer(name)
                back = rng.sample(sorted(n for n in swarm.left if n not in swarm.peers), 1)
                for name in back + [f"new{newcomers + k}" for k in range(CHURN - 1)]:
                    swarm.add_peer(name)
                newcomers += CHURN - 1
            _attack(attacker, key, r, tiny_mix, last_blob)
            reports = swarm.run_round()
            assert len(reports) == PEERS  # every peer present finished its round
            first = next(p for n, p in swarm.peers.items() if n not in adversaries)
            published = first.transport.fetch(r, [first.public_key]).get(first.public_key) or []
            last_blob = published[0] if published else None
            memory.append(_rss_mib())
        attacker.close()
        s = swarm.summary()
        honest = [p for p in s["peers"] if p["name"] not in adversaries]
        assert sum(p["updates"] for p in honest) > 0 and sum(p["external_groups_used"] for p in honest) > 0
        assert s["claims_overruled"] > 0  # the inflater's and the attacker's claims were re-scored
        for p in {**swarm.left, **swarm.peers}.values():
            assert p.filter.tracked_records <= p.filter.max_peers_tracked * p.filter.max_records_per_peer_round
            assert all(rep["external_groups"] <= settings.external for rep in p.history)
        assert memory[-1] - memory[0] < 400, memory  # MiB: no growth per round beyond the churned peers' daemons
    finally:
        swarm.close()
        for p in swarm.left.values():
            p.transport.close()
