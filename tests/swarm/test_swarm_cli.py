"""`bitswarm swarm run|join|warm-start` as a person runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.cli.main import app

from .support import answer_record, model_in_home, runner
from .support import cli_json as _json


@pytest.fixture
def tiny_in_home(bitswarm_home) -> str:
    return model_in_home()


def test_swarm_run_prints_the_summary(tiny_in_home):
    s = _json(["swarm", "run", "--peers", "2", "--rounds", "1", "--model", tiny_in_home, "--local", "1",
               "--external", "1", "--group-size", "2", "--max-new-tokens", "4", "--tasks", "tiny", "--json"])
    assert {"peers", "rollouts_shared", "rollouts_used_external", "dropped"} <= set(s)
    assert [p["rounds"] for p in s["peers"]] == [[0], [0]]
    assert s["rollouts_shared"] == 2 * 1 * 2


def test_swarm_run_with_an_adversary_shows_it_caught(tiny_in_home):
    s = _json(["swarm", "run", "--peers", "2", "--rounds", "2", "--model", tiny_in_home, "--local", "1",
               "--external", "1", "--group-size", "2", "--max-new-tokens", "4", "--tasks", "tiny",
               "--adversary", "peer-1:oversized", "--json"])
    assert s["adversaries"] == {"peer-1": "oversized"}
    assert s["dropped"]["oversized_group"] == 1  # peer-0 cut peer-1's round-0 group (its copies: replays)


@pytest.mark.parametrize("args, needle", [
    (["--tasks", "chess"], "allowed"),
    (["--transport", "carrier-pigeon"], "memory, hivemind"),
    (["--backend", "gpu"], "repro or native"),
    (["--local", "0"], "--local"),
    (["--adversary", "peer-1:bitflip"], "choose one of: inflate, oversized"),
    (["--adversary", "peer-9:inflate"], "no peer named 'peer-9'"),
    (["--adversary", "inflate"], "PEER:NAME"),
])
def test_swarm_run_refuses_bad_options(tiny_in_home, args, needle):
    res = runner.invoke(app, ["swarm", "run", "--model", tiny_in_home, "--rounds", "1", *args, "--json"])
    assert res.exit_code != 0
    assert needle in res.output


def test_swarm_run_with_a_model_not_in_the_store():
    res = runner.invoke(app, ["swarm", "run", "--model", "sha256:" + "0" * 64, "--json"])
    assert res.exit_code == 1 and "not in the store" in json.loads(res.stdout)["error"]


@pytest.mark.network
def test_swarm_join_trains_on_the_swarms_rollouts(tiny_in_home, bitswarm_home):
    """A peer already in the swarm publishes informative groups (one right, one wrong answer);
    `swarm join` from a second node bootstraps from it over libp2p and trains on them. Both
    run with I = 3: a receiver takes at most I groups from one publisher per round."""
    from bitswarm.swarm.hivemind_transport import HivemindTransport

    assert runner.invoke(app, ["identity", "new", "--json"], env={"BITSWARM_PASSPHRASE": "join test phrase"}).exit_code == 0
    key = Ed25519PrivateKey.generate()
    with HivemindTransport(key) as host:
        host.publish(0, answer_record(key, 0, groups=3))
        env = {**os.environ, "BITSWARM_HOME": str(bitswarm_home)}
        proc = subprocess.run(
            [sys.executable, "-m", "bitswarm", "swarm", "join", *sum((["--bootstrap", m] for m in host.visible_maddrs()), []),
             "--model", tiny_in_home, "--rounds", "1", "--local", "3", "--external", "3", "--group-size", "2",
             "--max-new-tokens", "4", "--tasks", "tiny", "--listen", "/ip4/127.0.0.1/tcp/0", "--json"],
            env=env, capture_output=True, text=True, timeout=300,
        )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rounds"] == [0]
    assert result["external_groups_used"] == 3
    assert result["peer_id"].startswith("12D3KooW")


@pytest.mark.network
def test_swarm_join_with_an_unreachable_bootstrap_is_a_diagnosis(tiny_in_home):
    res = runner.invoke(app, ["identity", "new", "--json"], env={"BITSWARM_PASSPHRASE": "join test phrase"})
    assert res.exit_code == 0
    res = runner.invoke(app, ["swarm", "join", "--bootstrap", "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
                              "--model", tiny_in_home, "--rounds", "1", "--listen", "/ip4/127.0.0.1/tcp/0", "--json"])
    assert res.exit_code == 1
    msg = json.loads(res.stdout)["error"]
    assert "/ip4/127.0.0.1/tcp/9" in msg


def test_warm_start_makes_a_new_model(tiny_in_home):
    r = _json(["swarm", "warm-start", "--model", tiny_in_home, "--tasks", "tiny", "--steps", "2", "--json"])
    assert r["cid"].startswith("sha256:") and r["cid"] != tiny_in_home and r["base"] == tiny_in_home


@pytest.mark.network
def test_swarm_run_over_hivemind_tells_how_to_join(tiny_in_home, bitswarm_home):
    env = {**os.environ, "BITSWARM_HOME": str(bitswarm_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "bitswarm", "swarm", "run", "--peers", "2", "--rounds", "1", "--model", tiny_in_home,
         "--transport", "hivemind", "--local", "1", "--group-size", "2", "--max-new-tokens", "4", "--tasks", "tiny",
         "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bitswarm swarm join --bootstrap /ip4/127.0.0.1/tcp/" in proc.stderr
    assert [p["rounds"] for p in json.loads(proc.stdout)["peers"]] == [[0], [0]]
