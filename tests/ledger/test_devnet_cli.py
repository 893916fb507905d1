"""`bitswarm devnet`, `ledger status|fund`, `node register|unbond` as a person runs them, and the
devnet keeping everything through `kill -9`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from web3 import Web3

from bitswarm.ledger.client import CREDIT, JOB_STATUS, Ledger
from bitswarm.ledger.deployment import Deployment
from bitswarm.node import identity

from .chains import free_port

pytestmark = pytest.mark.network
PASS = "correct horse battery"


def _cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "BITSWARM_HOME": str(home), "BITSWARM_PASSPHRASE": PASS}
    proc = subprocess.run(
        [sys.executable, "-m", "bitswarm", *args], env=env, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"bitswarm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _json(home: Path, *args: str) -> dict:
    return json.loads(_cli(home, *args, "--json").stdout)


class DevnetProcess:
    def __init__(self, home: Path, port: int):
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self):
        env = {**os.environ, "BITSWARM_HOME": str(self.home)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bitswarm", "devnet", "--port", str(self.port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 5}))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"devnet exited: {self.proc.stderr.read()}")
            try:
                if w3.provider.make_request("bitswarm_deployment", []).get("result"):
                    return self
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.3)
        raise AssertionError("devnet did not come up within 180 s")

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def node_home(tmp_path):
    home = tmp_path / "node"
    port = free_port()
    home.mkdir()
    (home / "config.toml").write_text(f'rpc_url = "http://127.0.0.1:{port}"\n')
    identity.create(home, PASS)
    net = DevnetProcess(home, port)
    yield home, net
    net.stop()


def test_no_chain_running_is_one_clear_line(node_home):
    home, _ = node_home
    proc = _cli(home, "ledger", "status", "--json", check=False)
    assert proc.returncode == 1
    msg = json.loads(proc.stdout)["error"]
    assert "no EVM JSON-RPC endpoint answers" in msg and "bitswarm devnet" in msg


def test_register_stake_post_survive_kill_9(node_home):
    home, net = node_home
    net.start()
    status = _json(home, "ledger", "status")
    assert set(status) >= {"chain_id", "block", "contracts", "address", "balance", "stake"}
    assert set(status["contracts"]) == {"Token", "NodeRegistry", "JobMarket", "SwarmCoordinator"}
    assert status["balance"] == 0 and status["stake"] == 0

    bad = _cli(home, "node", "register", "--stake", "5", "--json", check=False)
    assert bad.returncode == 1 and "ledger fund" in json.loads(bad.stdout)["error"]
    assert _json(home, "ledger", "fund", "--credits", "500")["credits"] == 500 * CREDIT
    for args, needle in [(("--stake", "-1"), "non-negative"), (("--stake", "x"), "number of credits"),
                         (("--stake", "1", "--roles", "wizard"), "unknown role")]:
        proc = _cli(home, "node", "register", *args, "--json", check=False)
        assert proc.returncode == 1 and needle in json.loads(proc.stdout)["error"]

    reg = _json(home, "node", "register", "--stake", "100", "--roles", "solver,verifier")
    assert reg["registered"] and reg["stake"] == 100 * CREDIT and reg["roles"] == ["solver", "verifier"]
    assert reg["peer_id"] == identity.load(home).peer_id

    # post a job from the same account through the client
    dep = Deployment.from_json(status, "ledger status")
    lg = Ledger(net.url, dep, identity.unlock(home, PASS))
    job = lg.post_job("sha256:" + "ab" * 32, "train", 10, 50 * CREDIT, 10 * CREDIT, 600, ops_per_leaf=5)
    unbond = _json(home, "node", "unbond", "--amount", "30")
    assert unbond["unbonding"] == 30 * CREDIT
    head_before = lg.w3.eth.get_block("latest")

    net.kill9()
    net.start()

    status2 = _json(home, "ledger", "status")
    assert status2["contracts"] == status["contracts"]
    assert status2["stake"] == 70 * CREDIT
    assert status2["balance"] == (500 - 100 - 50) * CREDIT
    assert status2["node"]["unbonding"] == 30 * CREDIT
    lg2 = Ledger(net.url, dep, identity.unlock(home, PASS))
    assert lg2.job(job)["bounty"] == 50 * CREDIT
    assert JOB_STATUS[lg2.job(job)["status"]] == "open"
    head_after = lg2.w3.eth.get_block(head_before["number"])
    assert head_after["hash"] == head_before["hash"]

    early = _cli(home, "node", "unbond", "--withdraw", "--json", check=False)
    assert early.returncode == 1 and "unbond" in json.loads(early.stdout)["error"]
