"""SAPO rounds end to end: real tiny policies, real reasoning-gym tasks, real transports."""

from __future__ import annotations

import json
import os

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.jobs.train_job import load_run_spec, prepare
from bitswarm.swarm.coordinator import LocalCoordinator
from bitswarm.swarm.peer import PeerSettings
from bitswarm.swarm.records import MAX_RECORD_BYTES, Rollout, RolloutRecord, encode_signed, public_key_hex
from bitswarm.swarm.runner import LocalSwarm, run_swarm
from bitswarm.swarm.transport import MemoryTransport
from bitswarm.verify.replay import replay

from .conftest import FAST


def test_two_peer_hivemind_swarm_trains_on_each_others_rollouts(warm_tiny, tiny_mix, tmp_path):
    store, model = warm_tiny
    swarm = LocalSwarm(store, model, tmp_path, tiny_mix, FAST, transport="hivemind")
    try:
        for name in ("a", "b"):
            swarm.add_peer(name)
        for _ in range(3):
            swarm.run_round()
        summary = swarm.summary()
    finally:
        swarm.close()
    assert summary["rounds"] == 3
    for p in summary["peers"]:
        assert p["rounds"] == [0, 1, 2]
        assert p["external_groups_used"] > 0, f"{p['name']} never trained on the other's rollouts"
        assert p["model"] != model
    assert summary["rollouts_used_external"] > 0 and summary["dropped"] == {}
    # every update is a training run whose transcript replays bit for bit
    peer = swarm.peers["a"]
    run = next(r["run_dir"] for r in peer.history if r["updated"] and r["external_groups"])
    result = replay(run, prepare(store, load_run_spec(run)))
    assert result.ok and result.steps_checked >= 1


def test_sixteen_peers_in_memory(warm_tiny, tiny_mix, tmp_path):
    store, model = warm_tiny
    settings = FAST.__class__(**{**FAST.__dict__, "local": 1, "external": 2, "group_size": 4})
    coord = LocalCoordinator()
    swarm = LocalSwarm(store, model, tmp_path, tiny_mix, settings, coordinator=coord)
    for i in range(16):
        swarm.add_peer(f"p{i:02d}")
    swarm.run_round()
    swarm.run_round()
    s = swarm.summary()
    assert len(s["peers"]) == 16 and all(p["rounds"] == [0, 1] for p in s["peers"])
    assert s["rollouts_shared"] == 16 * 2 * 1 * 4
    assert s["rollouts_used_external"] > 0
    updated = sum(p["updates"] for p in s["peers"])
    assert len(coord.submissions) == updated  # one submission per update, never two per round
    assert s["dropped"] == {}


def test_peers_leave_and_join_mid_run(warm_tiny, tiny_mix, tmp_path):
    store, model = warm_tiny
    swarm = LocalSwarm(store, model, tmp_path, tiny_mix, FAST)
    for name in ("a", "b", "c"):
        swarm.add_peer(name)
    swarm.run_round()
    model_c = swarm.peers["c"].model
    swarm.remove_peer("c")
    swarm.add_peer("d")  # a newcomer joins at the swarm's round
    swarm.run_round()
    swarm.add_peer("c")  # c comes back: it resumes from its own saved policy
    assert swarm.peers["c"].model == model_c
    swarm.run_round()
    s = {p["name"]: p for p in swarm.summary()["peers"]}
    assert s["a"]["rounds"] == [0, 1, 2]
    assert s["c"]["rounds"] == [0, 2]
    assert s["d"]["rounds"] == [1, 2]


def test_a_restarted_swarm_resumes_from_saved_state(warm_tiny, tiny_mix, tmp_path):
    store, model = warm_tiny
    first = run_swarm(store, model, tmp_path, peers=2, rounds=1, mix=tiny_mix, settings=FAST)
    again = run_swarm(store, model, tmp_path, peers=2, rounds=2, mix=tiny_mix, settings=FAST)
    for p1, p2 in zip(first["peers"], again["peers"]):
        assert p2["rounds"] == [0, 1]
        assert p2["rewards"][0] == p1["rewards"][0]  # round 0 was not redone


def _record(key: Ed25519PrivateKey, round_: int, seq: int, rollouts: list[Rollout]) -> bytes:
    return encode_signed(RolloutRecord(round=round_, peer=public_key_hex(key), seq=seq, rollouts=rollouts), key)


def test_byzantine_peers_cause_no_crash_and_are_counted(warm_tiny, tiny_mix, tmp_path):
    store, model = warm_tiny
    swarm = LocalSwarm(store, model, tmp_path, tiny_mix, FAST)
    for name in ("honest-1", "honest-2"):
        swarm.add_peer(name)
    liar, flooder, replayer = (Ed25519PrivateKey.generate() for _ in range(3))
    ref = tiny_mix.sample(0, 0, "liar", 1)[0]
    wrong = f"<answer>{int(tiny_mix.reference_answer(ref)) + 1}</answer>"

    def attack(round_: int) -> None:
        hub = swarm.hub
        lt = MemoryTransport(hub, liar)
        # inflated claims: wrong answers claiming full reward (re-scored locally to 0)
        lt.publish(round_, _record(liar, round_, 0, [
            Rollout(dataset=ref.dataset, seed=ref.seed, index=ref.index, completion=wrong, claimed_reward=1.0, group=0)
            for _ in range(4)]))
        # garbage: bytes that are not a record, a record with no signature, an oversized blob
        lt.publish(round_, os.urandom(300))
        body = json.loads(_record(liar, round_, 1, []))
        body["sig"] = ""
        lt.publish(round_, json.dumps(body).encode())
        lt.publish(round_, b"x" * (MAX_RECORD_BYTES + 1))
        # a record for a round far away
        lt.publish(round_, _record(liar, round_ + 50, 2, []))
        # flooding: many distinct valid records from one key in one round
        ft = MemoryTransport(hub, flooder)
        for seq in range(40):
            ft.publish(round_, _record(flooder, round_, seq, [
                Rollout(dataset=ref.dataset, seed=ref.seed, index=ref.index, completion=f"spam {seq}",
                        claimed_reward=1.0, group=0)]))
        # replay: an honest peer's record, republished under another slot
        honest = hub.get(round_, exclude_peer=public_key_hex(replayer))
        if honest:
            MemoryTransport(hub, replayer).publish(round_, honest[0])

    for r in range(3):
        attack(r)
        reports = swarm.run_round()
        assert len(reports) == 2  # every honest peer finished its round
    s = swarm.summary()
    for reason in ("malformed", "unsigned", "oversized", "unknown_round", "flooding", "replayed"):
        assert s["dropped"].get(reason, 0) > 0, f"{reason} not counted: {s['dropped']}"
    for p in swarm.peers.values():
        assert p.filter.tracked_records <= p.filter.max_peers_tracked * p.filter.max_records_per_peer_round
        # the liar's inflated claims were re-scored: none of its groups was informative enough to use
        assert all(r["external_groups"] <= FAST.external for r in p.history)
    assert s["claims_overruled"] >= 4  # the liar's wrong answers claiming 1.0 were re-scored here


def test_a_peer_trains_on_the_token_ids_it_sampled_end_of_turn_included(warm_tiny, tiny_mix, tmp_path):
    """Its own rollouts go into the update's dataset as the ids generation produced, not as decoded
    text re-tokenized (decoding drops the end-of-turn token, so the policy would never learn to stop)."""
    from bitswarm.models.generate import load

    store, model = warm_tiny
    settings = PeerSettings(**{**FAST.__dict__, "local": 8, "external": 0})
    swarm = LocalSwarm(store, model, tmp_path, tiny_mix, settings)
    swarm.add_peer("solo")
    peer = swarm.peers["solo"]
    for _ in range(5):  # until some group's rewards differ, so that there is an update
        report = swarm.run_round()[0]
        if report["updated"]:
            break
    assert report["updated"], report
    _, tok = load(store, model, "repro")
    rows = [json.loads(line) for line in store.read_bytes(report["dataset"]).splitlines()]
    own = [r for r in rows if "completion_ids" in r]
    assert own and len(own) == report["local_groups"] * settings.group_size  # J = 0: no external groups
    eos = tok.eos_token_id
    stopped = [r for r in own if len(r["completion_ids"]) < settings.max_new_tokens]
    assert stopped, "the warm policy ends some answers before the token limit"
    assert all(r["completion_ids"][-1] == eos for r in stopped)  # the end of turn is trained on
    assert all(eos not in tok(tok.decode(r["completion_ids"], skip_special_tokens=True),
                              add_special_tokens=False)["input_ids"] for r in stopped)  # text would lose it
    refs = tiny_mix.sample(settings.task_seed, report["round"], peer.public_key, settings.local)
    rendered = [tok(peer._render(tok, ref), add_special_tokens=False)["input_ids"] for ref in refs]
    assert all(r["prompt_ids"] in rendered for r in own)  # the context generation saw, token for token
    swarm.close()


def test_a_peer_keeps_its_adamw_moments_across_rounds_and_restarts(warm_tiny, tiny_mix, tmp_path):
    """Each round's update starts from the previous update's AdamW state (a CID in its spec, so a
    replay derives the same start), and a restarted peer picks it up with its policy."""
    from bitswarm.repro.train import TrainState, latest_checkpoint

    store, model = warm_tiny
    swarm = LocalSwarm(store, model, tmp_path, tiny_mix, PeerSettings(**{**FAST.__dict__, "local": 4, "external": 0}))
    swarm.add_peer("solo")
    for _ in range(8):  # until two rounds have updated (a round whose groups all tie has nothing to learn)
        swarm.run_round()
        updated = [r for r in swarm.peers["solo"].history if r["updated"]]
        if len(updated) >= 2:
            break
    first, second = updated[:2]
    assert load_run_spec(first["run_dir"]).optimizer_state is None  # the peer's first step: zero moments
    assert load_run_spec(second["run_dir"]).optimizer_state == first["optimizer_state"]
    assert TrainState.load(latest_checkpoint(second["run_dir"])).beta1_pow == np.float32(0.9) * np.float32(0.9)
    assert replay(second["run_dir"], prepare(store, load_run_spec(second["run_dir"]))).ok

    swarm.remove_peer("solo")
    swarm.add_peer("solo")
    assert swarm.peers["solo"].optimizer_state == updated[-1]["optimizer_state"]
    assert swarm.peers["solo"].model == updated[-1]["model"]
    swarm.close()
