"""The devnet's first-start deployment survives `kill -9` at any point: a restart never deploys
the contracts a second time, and ends with one working deployment."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import pytest
import requests
from web3 import Web3

from bitswarm.ledger.client import Ledger
from bitswarm.ledger.deployment import Deployment, resolve
from bitswarm.ledger.devnet import Devnet, DevnetError
from bitswarm.ledger.faucet import setup_devnet

from .chains import FAST

pytestmark = pytest.mark.network

# A devnet in a child process whose first-start deployment is killed with SIGKILL: right after
# the Nth transaction is journaled (its answer never sent), or once the setup hook has returned
# but before deployment.json is written ("done").
CHILD = """
import json, os, signal, sys
from pathlib import Path
from bitswarm.ledger.deployment import DeployParams
from bitswarm.ledger.devnet import Devnet
from bitswarm.ledger.faucet import setup_devnet

data, at, params = Path(sys.argv[1]), sys.argv[2], DeployParams(**json.loads(sys.argv[3]))

class Killed(Devnet):
    txs = 0

    def _commit(self, entry):
        super()._commit(entry)
        if entry["op"] == "tx":
            Killed.txs += 1
            if str(Killed.txs) == at:
                os.kill(os.getpid(), signal.SIGKILL)

def setup(net):
    deployment = setup_devnet(net, params)
    if at == "done":
        os.kill(os.getpid(), signal.SIGKILL)
    return deployment

Killed(data, port=0, setup=setup).start()
raise SystemExit("the deployment finished without being killed")
"""


def _kill_during_setup(data, at: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), at, json.dumps(asdict(FAST))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, f"the child was not killed mid-deployment:\n{proc.stderr}"


def _creations(url: str) -> list[str]:
    """Addresses of every contract ever created on the chain, in order."""
    w3 = Web3(Web3.HTTPProvider(url))
    out = []
    for n in range(1, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(n, full_transactions=True)["transactions"]:
            if tx["to"] is None:
                out.append(w3.eth.get_transaction_receipt(tx["hash"])["contractAddress"])
    return out


@pytest.mark.parametrize("at", ["1", "3", "5", "done"])
def test_a_deployment_killed_midway_is_redone_once(tmp_path, at):
    data = tmp_path / "chain"
    _kill_during_setup(data, at)
    assert not (data / "deployment.json").exists()
    assert (data / "setup.pending").exists()  # the intent was recorded before the first transaction

    net = Devnet(data, port=0, setup=lambda n: setup_devnet(n, FAST))
    net.start()
    try:
        dep = resolve(Web3(Web3.HTTPProvider(net.url)), None, net.url)  # every address holds code
        assert sorted(_creations(net.url)) == sorted(dep.contracts.values())  # each contract exactly once
        lg = Ledger(net.url, dep)
        assert lg.call("NodeRegistry", "slashers", dep.contracts["SwarmCoordinator"])
        assert lg.swarm_round() == 1
        assert all(lg.token_balance(a) > 0 for a, _ in net.dev_accounts)  # the setup ran to its end
        assert not (data / "setup.pending").exists()
        assert json.loads((data / "deployment.json").read_text()) == net.deployment
    finally:
        net.stop()

    # And from then on it is an ordinary restart.
    again = Devnet(data, port=0, setup=lambda n: pytest.fail("deployed a second time"))
    again.start()
    try:
        assert Deployment.from_json(again.deployment, "devnet") == dep
    finally:
        again.stop()


def test_an_interrupted_deployment_is_not_served_without_its_setup(tmp_path):
    data = tmp_path / "chain"
    _kill_during_setup(data, "2")
    with pytest.raises(DevnetError, match="deployment was interrupted"):
        Devnet(data, port=0).start()


def test_only_the_deployer_transacts_while_the_setup_runs(tmp_path):
    seen = {}

    def setup(net: Devnet) -> dict:
        (_, _), (other, _) = net.dev_accounts[:2]
        tx = {"from": other, "to": other, "value": 1, "gas": 21_000}
        seen["send"] = requests.post(net.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction",
                                                    "params": [tx]}, timeout=10).json()
        seen["mine"] = requests.post(net.url, json={"jsonrpc": "2.0", "id": 2, "method": "evm_mine",
                                                    "params": []}, timeout=10).json()
        return setup_devnet(net, FAST)

    net = Devnet(tmp_path / "chain", port=0, setup=setup)
    net.start()
    try:
        for reply in seen.values():
            assert "deploying bitswarm" in reply["error"]["message"]
        other = net.dev_accounts[1][0]
        assert Web3(Web3.HTTPProvider(net.url)).eth.get_transaction_count(other) == 0
        # Afterwards everyone may.
        assert Web3(Web3.HTTPProvider(net.url)).eth.send_transaction({"from": other, "to": other, "value": 1})
    finally:
        net.stop()
