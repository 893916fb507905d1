"""`bitswarm swarm run|join|warm-start` as a person runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.cli.main import app
from bitswarm.store import BlobStore

from .support import TINY_ROUND, answer_record, live_p2pd, model_in_home, runner
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
    (["--lr", "0"], "must be above 0 and at most 1"),  # before any work, not as an invalid spec mid-round
    (["--lr", "2"], "must be above 0 and at most 1"),
    (["--ledger"], "it needs --transport hivemind"),  # rounds on chain are for a swarm others can join
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


PASS = "join test phrase"


def _home(path, marker: str) -> dict:
    """The environment of a bitswarm process with its own home (identity made) and test marker."""
    env = {**os.environ, "BITSWARM_HOME": str(path), "BITSWARM_PASSPHRASE": PASS, "BITSWARM_TEST_RUN": marker}
    assert runner.invoke(app, ["identity", "new", "--json"], env=env).exit_code == 0
    return env


class Host:
    """`bitswarm swarm run --transport hivemind` as a process; its stderr is read as it comes."""

    def __init__(self, env: dict, *args: str):
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "bitswarm", "swarm", "run", "--transport", "hivemind",
                                      *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def wait_for(self, needle: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            assert self.proc.poll() is None, f"host exited {self.proc.returncode}: {''.join(self.lines)}"
            time.sleep(0.1)
        raise AssertionError(f"host never printed {needle!r}: {''.join(self.lines)}")

    def bootstrap(self) -> list[str]:
        line = self.wait_for("joins with: bitswarm swarm join")
        return re.findall(r"--bootstrap (\S+)", line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def marker(monkeypatch):
    """Tags every p2pd started by the test (through the processes' environment); none may outlive it."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv("BITSWARM_TEST_RUN", tag)
    yield tag
    deadline = time.monotonic() + 10
    while live_p2pd(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = live_p2pd(tag)
    for pid in left:  # never leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, "p2pd left running"


@pytest.mark.network
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_host_and_reaps_its_daemons(tmp_path, marker, sig):
    env = _home(tmp_path / "host", marker)
    model = json.loads(subprocess.run([sys.executable, "-m", "bitswarm", "model", "init", "tiny", "--json"], env=env,
                                      capture_output=True, text=True, check=True).stdout)["cid"]
    host = Host(env, "--peers", "2", "--rounds", "1000", "--round-seconds", "60", "--model", model, *TINY_ROUND)
    boot = host.bootstrap()
    assert all(m.startswith("/ip4/127.0.0.1/tcp/") for m in boot)
    host.wait_for("loopback only")
    assert len(live_p2pd(marker)) == 3  # two peers' DHTs and the model's blob exchange
    assert host.stop(sig) == 130
    assert "interrupted" in "".join(host.lines)


@pytest.mark.network
def test_swarm_run_over_hivemind_tells_how_to_join(tiny_in_home, bitswarm_home, marker):
    env = _home(bitswarm_home, marker)
    proc = subprocess.run(
        [sys.executable, "-m", "bitswarm", "swarm", "run", "--peers", "2", "--rounds", "1", "--model", tiny_in_home,
         "--transport", "hivemind", "--local", "1", "--group-size", "2", "--max-new-tokens", "4", "--tasks", "tiny",
         "--listen", "/ip4/0.0.0.0/tcp/0", "--json"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bitswarm swarm join --bootstrap /ip4/" in proc.stderr and "--model" not in proc.stderr
    assert "listening beyond this machine on /ip4/" in proc.stderr  # a non-loopback address, named
    assert [p["rounds"] for p in json.loads(proc.stdout)["peers"]] == [[0], [0]]


@pytest.mark.network
def test_a_second_process_joins_with_only_bootstrap_and_trains_on_the_hosts_rollouts(tmp_path, warm_tiny, marker):
    """Two homes, two processes: the host runs a scheduled swarm over hivemind; the joiner is given
    only the host's multiaddr and gets the model (fetched over libp2p), tasks, settings and round
    from the host's manifest. A join asking for other tasks or another model is refused first."""
    src, model = warm_tiny
    host_env, join_env = _home(tmp_path / "host", marker), _home(tmp_path / "joiner", marker)
    src.get(model, tmp_path / "model")
    assert BlobStore(tmp_path / "host" / "store").put(tmp_path / "model") == model
    # The host's tiny --lr keeps its policy (nearly) the warm-started one, whose groups are often informative
    # (right and wrong answers); a learning host can collapse to all-wrong groups within rounds.
    host = Host(host_env, "--peers", "1", "--rounds", "1000", "--round-seconds", "5", "--model", model, "--local", "2",
                "--external", "2", "--group-size", "16", "--max-new-tokens", "20", "--lr", "1e-6", "--tasks", "tiny")
    try:
        boot = [arg for m in host.bootstrap() for arg in ("--bootstrap", m)]
        host.wait_for("round   0")

        def join(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "bitswarm", "swarm", "join", *boot, "--listen",
                                   "/ip4/127.0.0.1/tcp/0", *args, "--json"],
                                  env=join_env, capture_output=True, text=True, timeout=300, check=False)

        refused = join("--tasks", "tiny_count", "--model", "sha256:" + "0" * 64)
        assert refused.returncode == 1, refused.stderr
        err = json.loads(refused.stdout)["error"]
        assert "tasks: yours tiny_count, the swarm's tiny_sum" in err
        assert f"model: yours sha256:{'0' * 64}, the swarm's {model}" in err
        assert not BlobStore(tmp_path / "joiner" / "store").has(model)  # refused before fetching anything

        # Three rounds: under load a round's records can miss the DHT (logged, the swarm goes on), and a round
        # whose host groups all score alike teaches nothing; 16 answers a group makes that rare.
        joined = join("--rounds", "3", "--lr", "0.003")  # the peer's own learning rate
        assert joined.returncode == 0, joined.stderr
        r = json.loads(joined.stdout)
        assert r["swarm"]["base_model"] == model and r["swarm"]["tasks"] == ["tiny_sum"]
        assert r["swarm"]["host"] == boot[1].rsplit("/p2p/", 1)[1]
        assert r["rounds"][0] >= 1 and len(r["rounds"]) == 3  # the swarm's round, not 0
        assert r["rollouts_shared"] == 3 * 2 * 16  # the host's I and group size
        assert r["external_groups_seen"] >= 1, joined.stderr + "".join(host.lines)
        assert r["external_groups_used"] >= 1, "the joiner never trained on the host's rollouts\n" + "".join(host.lines)
        assert r["model"] != model
        assert BlobStore(tmp_path / "joiner" / "store").has(model)  # fetched from the host
    finally:
        code = host.stop(signal.SIGTERM)
    assert code == 130, "".join(host.lines)
