"""Swarm adversaries (bitswarm.swarm.adversary): each cheat is caught, and honest peers are
left exactly where they would be without the cheater."""

from __future__ import annotations

import pytest

from bitswarm.swarm.adversary import NAMES, AdversaryError, SwarmAdversary, parse_assignments
from bitswarm.swarm.coordinator import LocalCoordinator
from bitswarm.swarm.runner import LocalSwarm

from .conftest import FAST


def test_assignments_are_validated():
    peers = ["peer-0", "peer-1"]
    assert parse_assignments(["peer-1:inflate", "peer-0:oversized"], peers) == {
        "peer-1": SwarmAdversary("inflate"), "peer-0": SwarmAdversary("oversized")}
    assert parse_assignments([], peers) == {}
    for spec, needle in [("peer-1:bitflip", "choose one of: inflate, oversized"),
                         ("peer-7:inflate", "no peer named 'peer-7' in this swarm (peers: peer-0, peer-1)"),
                         ("inflate", "PEER:NAME"), (":inflate", "PEER:NAME")]:
        with pytest.raises(AdversaryError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            parse_assignments([spec], peers)
    with pytest.raises(AdversaryError, match="given twice"):
        parse_assignments(["peer-0:inflate", "peer-0:oversized"], peers)
    assert NAMES == ("inflate", "oversized")


def _run(store, model, workdir, mix, names, adversaries=None, rounds=2) -> LocalSwarm:
    swarm = LocalSwarm(store, model, workdir, mix, FAST, adversaries=adversaries or {})
    for name in names:
        swarm.add_peer(name)
    for _ in range(rounds):
        swarm.run_round()
    return swarm


def test_an_oversized_group_is_cut_and_changes_nothing_for_honest_peers(warm_tiny, tiny_mix, tmp_path):
    store, model = warm_tiny
    attacked = _run(store, model, tmp_path / "attacked", tiny_mix, ["a", "b", "big"],
                    {"big": SwarmAdversary("oversized")})
    alone = _run(store, model, tmp_path / "alone", tiny_mix, ["a", "b"])
    s = attacked.summary()
    # Its four records a round say the same thing (16 copies of one group's completions), so
    # each honest receiver admits one and drops three as replays, then cuts the group in the
    # one it admitted. Once here, for round 0: it runs last, so its round-1 records come after.
    assert (s["dropped"]["oversized_group"], s["dropped"]["replayed"]) == (2, 2 * 3)
    assert s["adversaries"] == {"big": "oversized"}
    for name in ("a", "b"):
        peer = attacked.peers[name]
        assert peer.model == alone.peers[name].model, f"{name} trained on something the cheater sent"
        assert all(r["external_groups"] <= FAST.external for r in peer.history)


def test_an_inflated_claim_is_refused_and_honest_claims_are_not(warm_tiny, tiny_mix, tmp_path):
    store, model = warm_tiny
    coord = LocalCoordinator()
    swarm = LocalSwarm(store, model, tmp_path, tiny_mix, FAST, coordinator=coord,
                       adversaries={"liar": SwarmAdversary("inflate")})
    for name in ("honest", "liar"):
        swarm.add_peer(name)
    for _ in range(3):
        swarm.run_round()
    liar, honest = swarm.peers["liar"], swarm.peers["honest"]
    lies = [r for r in liar.history if r["updated"] and r["reward"] < 1.0]
    assert lies, "the liar never had a claim to inflate"
    assert all(r["claimed_reward"] == 1.0 and r["submitted"] is False for r in lies)
    assert swarm.summary()["claims_refuted"] == {"liar": len(lies)}
    assert {p for _, p in coord.submissions} <= {honest.public_key, liar.public_key}
    assert all(r["submitted"] for r in honest.history if r["updated"])
    assert sorted(r for r, p in coord.submissions if p == honest.public_key) == [
        r["round"] for r in honest.history if r["updated"]]
