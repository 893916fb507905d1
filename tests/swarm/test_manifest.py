"""The swarm manifest: its checks on arrival, the round schedule, and `swarm join` taking it (over memory)."""

from __future__ import annotations

import json

import pytest

from bitswarm import peer_key
from bitswarm.jobs.tasks import TaskMix
from bitswarm.swarm import manifest
from bitswarm.swarm.manifest import ManifestError, Schedule
from bitswarm.swarm.peer import PeerSettings
from bitswarm.swarm.records import public_key_hex

from .support import (  # noqa: F401 (memory_join: a fixture)
    HOST_BOOTSTRAP,
    HOST_KEY,
    TINY_ROUND,
    cli_json,
    host_manifest,
    invoke,
    memory_join,
    model_in_home,
)

MODEL = "sha256:" + "ab" * 32


def signed(key, **changes) -> bytes:
    man = manifest.build(key, MODEL, TaskMix(["tiny_sum"]), PeerSettings(), Schedule(1000.0, 60.0),
                         ["/ip4/127.0.0.1/tcp/5/p2p/" + peer_key.peer_id(key)])
    return manifest.encode_signed(man.model_copy(update=changes) if changes else man, key)


def test_a_manifest_round_trips_and_only_its_host_signs_it():
    key, other = peer_key.generate(), peer_key.generate()
    blob = signed(key)
    man = manifest.decode_verified(blob, host=public_key_hex(key))
    assert man.model == MODEL and man.task_mix().names == ("tiny_sum",) and man.peer_settings() == PeerSettings()
    with pytest.raises(ManifestError, match="not by the host"):
        manifest.decode_verified(blob, host=public_key_hex(other))
    env = json.loads(blob)
    env["manifest"]["model"] = "sha256:" + "cd" * 32  # the host's name on someone else's swarm
    forged = json.dumps(env, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(ManifestError, match="signature does not verify"):
        manifest.decode_verified(forged, host=public_key_hex(key))
    with pytest.raises(ManifestError, match="canonical"):
        manifest.decode_verified(json.dumps(json.loads(blob)).encode())
    with pytest.raises(ManifestError, match="over the"):
        manifest.decode_verified(b" " * (manifest.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ValueError, match="signing key"):
        manifest.encode_signed(manifest.decode_verified(blob), other)


@pytest.mark.parametrize("field, value", [
    ("model", "not-a-cid"), ("round_seconds", 0.0), ("start", -1.0),
    ("chain", {"chain_id": 1, "coordinator": "0x" + "11" * 20, "first_round": 0}),
    ("chain", {"chain_id": 1, "coordinator": "not an address", "first_round": 1}),
    ("chain", {"chain_id": 1, "coordinator": "0x" + "11" * 20, "first_round": 1, "rpc": "http://evil"}),
])
def test_a_manifest_outside_the_schema_is_refused(field, value):
    key = peer_key.generate()
    env = json.loads(signed(key))
    env["manifest"][field] = value
    with pytest.raises(ManifestError, match="schema"):
        manifest.decode_verified(json.dumps(env, sort_keys=True, separators=(",", ":")).encode())


def test_a_manifest_names_the_chain_that_counts_its_rounds():
    key = peer_key.generate()
    ref = manifest.ChainRef(chain_id=31337, coordinator="0x" + "ab" * 20, first_round=7)
    man = manifest.decode_verified(signed(key, chain=ref), host=public_key_hex(key))
    assert man.chain == ref
    assert manifest.decode_verified(signed(key)).chain is None  # a manifest without one: rounds by the clock


def test_unknown_tasks_in_a_manifest_are_said_in_words():
    key = peer_key.generate()
    man = manifest.decode_verified(signed(key)).model_copy(
        update={"tasks": manifest.Tasks(names=["chess"], weights=[1.0], size=10)})
    with pytest.raises(ManifestError, match="tasks are not usable here"):
        man.task_mix()


def test_every_peer_reads_the_same_round_from_the_schedule():
    s = Schedule(1000.0, 60.0)
    assert [s.current(t) for t in (900.0, 1000.0, 1059.9, 1060.0, 1000.0 + 60 * 41.5)] == [0, 0, 0, 1, 41]
    assert s.start_of(3) == 1180.0
    resumed = Schedule.resuming(7, 60.0, now=5000.0)
    assert resumed.current(5000.0) == 7 and resumed.current(5059.0) == 7 and resumed.current(5060.0) == 8


def test_mismatches_name_each_field_with_both_values():
    man = manifest.decode_verified(signed(peer_key.generate()))
    assert manifest.mismatches(man, MODEL, TaskMix(["tiny_sum"]), {"group_size": 4, "lr": 0.5}) == []
    got = manifest.mismatches(man, "sha256:" + "00" * 32, TaskMix(["tiny_count"]),
                              {"group_size": 3, "lr": 0.5, "external": 9})
    assert got == [f"model: yours sha256:{'00' * 32}, the swarm's {MODEL}",
                   "tasks: yours tiny_count, the swarm's tiny_sum",
                   "--group-size: yours 3, the swarm's 4"]  # lr and external are a peer's own


# -- `swarm join --bootstrap` with nothing else, over memory (the hivemind variant is in test_swarm_cli) --

@pytest.fixture
def joiner(bitswarm_home, memory_join, monkeypatch):  # noqa: F811
    monkeypatch.setenv("BITSWARM_PASSPHRASE", "join test phrase")
    assert invoke(["identity", "new", "--json"]).exit_code == 0
    return memory_join


def test_join_takes_model_tasks_settings_and_round_from_the_manifest(joiner):
    model = model_in_home()
    host_manifest(joiner, model, round_seconds=3600.0)
    r = cli_json(["swarm", "join", "--bootstrap", HOST_BOOTSTRAP, "--rounds", "1", "--json"])
    assert r["swarm"] == {"host": peer_key.peer_id(HOST_KEY), "base_model": model, "tasks": ["tiny_sum"],
                          "round_seconds": 3600.0, "chain": None}  # rounds by the clock, not on a chain
    assert r["rounds"] == [0] and r["external_groups_used"] == 1  # the host's record, one group (I = 1)
    assert r["rollouts_shared"] == 1 * 2  # the swarm's I and group size, not the CLI's defaults (4 x 4)


def test_join_starts_at_the_swarms_current_round(joiner):
    import time

    model = model_in_home()
    blob = host_manifest(joiner, model, round_seconds=60.0)
    man = manifest.decode_verified(blob)  # round 2 began a second ago
    joiner.manifests[peer_key.peer_id(HOST_KEY)] = manifest.encode_signed(
        man.model_copy(update={"start": time.time() - 121.0}), HOST_KEY)
    r = cli_json(["swarm", "join", "--bootstrap", HOST_BOOTSTRAP, "--rounds", "1", "--json"])
    assert r["rounds"] == [2] and r["state"]["from_round"] == 2
    assert r["external_groups_used"] == 1  # the host's round-1 and round-2 records


def test_join_with_another_model_or_tasks_is_refused_saying_what_differs(joiner):
    model = model_in_home()
    host_manifest(joiner, model)
    other = "sha256:" + "0" * 64
    err = cli_json(["swarm", "join", "--bootstrap", HOST_BOOTSTRAP, "--model", other, "--tasks", "tiny_count",
                    "--group-size", "3", "--lr", "0.5", "--json"], ok=False)["error"]
    assert f"model: yours {other}, the swarm's {model}" in err
    assert "tasks: yours tiny_count, the swarm's tiny_sum" in err
    assert "--group-size: yours 3, the swarm's 2" in err and "--lr" not in err
    assert "Leave those options out" in err
    # What the swarm does anyway is fine to say.
    ok = cli_json(["swarm", "join", "--bootstrap", HOST_BOOTSTRAP, "--model", model, *TINY_ROUND, "--rounds", "1",
                   "--json"])
    assert ok["rounds"] == [0]


def test_join_without_a_manifest_or_model_says_what_to_do(joiner, monkeypatch):
    import bitswarm.cli.swarm_cmd as cmd

    monkeypatch.setattr(cmd, "MANIFEST_WAIT_S", 0.0)
    err = cli_json(["swarm", "join", "--bootstrap", HOST_BOOTSTRAP, "--rounds", "1", "--json"], ok=False)["error"]
    assert f"no swarm manifest from {peer_key.peer_id(HOST_KEY)}" in err and "--model" in err



def test_a_model_the_host_does_not_serve_is_an_error_naming_it(joiner):
    missing = "sha256:" + "1" * 64
    host_manifest(joiner, missing)  # served from nowhere (no model_sources)
    err = cli_json(["swarm", "join", "--bootstrap", HOST_BOOTSTRAP, "--rounds", "1", "--json"], ok=False)["error"]
    assert f"the swarm's model {missing} is not in this store" in err
    assert f"`bitswarm store get {missing} --out DIR` on the host" in err
