"""The embedded devnet: web3 against its JSON-RPC, revert reasons, time, and a chain that survives restarts and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
import vyper
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from bitswarm.ledger.devnet import Devnet, DevnetError

COUNTER = """
x: public(uint256)

@external
def bump(n: uint256):
    self.x += n
    assert self.x < 10, "counter: too big"

@external
@view
def now() -> uint256:
    return block.timestamp
"""

# A devnet in a child process that tells its parent where it listens, then serves until a signal.
CHILD = """
import sys
from pathlib import Path
from bitswarm.ledger.devnet import Devnet

class Announced(Devnet):
    def start(self):
        super().start()
        sys.stdout.write(self.url + "\\n")
        sys.stdout.flush()

Announced(Path(sys.argv[1]), port=0).serve_forever()
"""


@pytest.fixture(scope="module")
def counter_code():
    out = vyper.compile_code(COUNTER, output_formats=["abi", "bytecode"])
    return out["abi"], out["bytecode"]


@pytest.fixture
def net(tmp_path):
    n = Devnet(tmp_path / "chain", port=0)
    n.start()
    yield n
    n.stop()


def rpc(url, method, params=()):
    return requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=10).json()


def send(w3, key, tx):
    """Sign locally and send raw, as bitswarm's client does; returns the receipt."""
    acct = Account.from_key(key)
    tx = {
        "nonce": w3.eth.get_transaction_count(acct.address),
        "gasPrice": w3.eth.gas_price,
        "chainId": w3.eth.chain_id,
        "gas": 500_000,
        **tx,
    }
    tx_hash = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.01)


def deploy_counter(w3, key, counter_code):
    abi, bytecode = counter_code
    receipt = send(w3, key, {"data": bytecode})
    assert receipt["status"] == 1
    return w3.eth.contract(address=receipt["contractAddress"], abi=abi)


def transact(w3, key, fn):
    sender = Account.from_key(key).address
    return send(w3, key, fn.build_transaction({"from": sender, "gas": 200_000, "gasPrice": w3.eth.gas_price}))


def chain_state(url, addresses, contract=None):
    w3 = Web3(Web3.HTTPProvider(url))
    latest = w3.eth.get_block("latest")
    return {
        "block": latest["number"],
        "hash": latest["hash"],
        "timestamp": latest["timestamp"],
        "balances": [w3.eth.get_balance(a) for a in addresses],
        "nonces": [w3.eth.get_transaction_count(a) for a in addresses],
        "x": contract and w3.eth.get_storage_at(contract, 0),
    }


def test_web3_client_transfers_and_reads_receipt(net):
    w3 = Web3(Web3.HTTPProvider(net.url))
    assert w3.eth.chain_id == net.chain_id
    assert len(net.dev_accounts) >= 10
    assert rpc(net.url, "bitswarm_devAccounts")["result"] == [a for a, _ in net.dev_accounts]
    for address, key in net.dev_accounts:
        assert Account.from_key(key).address == address
        assert w3.eth.get_balance(address) >= 10**24
    (sender, key), (recipient, _) = net.dev_accounts[:2]
    before = w3.eth.get_balance(recipient)
    receipt = send(w3, key, {"to": recipient, "value": 12345, "gas": 21_000})
    assert receipt["status"] == 1 and receipt["blockNumber"] == 1 and receipt["from"] == sender
    assert w3.eth.get_balance(recipient) == before + 12345
    assert w3.eth.get_transaction(receipt["transactionHash"])["value"] == 12345
    assert w3.eth.get_block(1, full_transactions=True)["transactions"][0]["hash"] == receipt["transactionHash"]


def test_contract_state_and_revert_reasons(net, counter_code):
    w3 = Web3(Web3.HTTPProvider(net.url))
    sender, key = net.dev_accounts[0]
    counter = deploy_counter(w3, key, counter_code)
    assert transact(w3, key, counter.functions.bump(3))["status"] == 1
    assert counter.functions.x().call() == 3

    with pytest.raises(ContractLogicError, match="counter: too big"):
        counter.functions.bump(20).call({"from": sender})
    with pytest.raises(ContractLogicError, match="counter: too big"):
        counter.functions.bump(20).estimate_gas({"from": sender})
    err = rpc(net.url, "eth_call", [{"to": counter.address, "data": counter.encode_abi("bump", [20])}, "latest"])["error"]
    assert err["code"] == 3 and err["message"] == "execution reverted: counter: too big"
    assert err["data"].startswith("0x08c379a0")

    # As on geth, reading and estimating cost nothing: an account without ETH can do both.
    poor = Account.create().address
    assert counter.functions.x().call({"from": poor}) == 3
    assert counter.functions.bump(1).estimate_gas({"from": poor}) > 21_000

    # A transaction that would revert is refused whole: no block, no nonce used, nothing journaled.
    head, lines = w3.eth.block_number, net.journal_path.read_text().count("\n")
    with pytest.raises(Web3RPCError, match="counter: too big"):
        transact(w3, key, counter.functions.bump(20))
    assert (w3.eth.block_number, net.journal_path.read_text().count("\n")) == (head, lines)
    assert transact(w3, key, counter.functions.bump(1))["status"] == 1  # the same nonce again
    assert counter.functions.x().call() == 4

    # Bad nonces are refused the same way.
    acct = Account.from_key(key)
    stale = acct.sign_transaction(
        {"to": sender, "value": 1, "gas": 21_000, "gasPrice": w3.eth.gas_price, "nonce": 0, "chainId": net.chain_id}
    )
    with pytest.raises(Web3RPCError, match="nonce"):
        w3.eth.send_raw_transaction(stale.raw_transaction)
    assert net.journal_path.read_text().count("\n") == lines + 1


def test_increase_time_moves_the_next_block(net, counter_code):
    w3 = Web3(Web3.HTTPProvider(net.url))
    counter = deploy_counter(w3, net.dev_accounts[0][1], counter_code)
    for _ in range(5):  # blocks faster than one a second: the chain runs ahead of the wall clock
        rpc(net.url, "evm_mine")
    before = w3.eth.get_block("latest")["timestamp"]
    wall = int(time.time())
    assert rpc(net.url, "evm_increaseTime", [60])["result"] == 60
    assert rpc(net.url, "evm_increaseTime", ["0xe10"])["result"] == 3660  # hex works too; they add up
    assert rpc(net.url, "evm_mine")["result"] == "0x0"
    mined = w3.eth.get_block("latest")
    assert mined["timestamp"] >= wall + 3660 and mined["timestamp"] >= before + 3660
    assert counter.functions.now().call() == mined["timestamp"]  # what contracts see as block.timestamp
    rpc(net.url, "evm_mine")
    assert w3.eth.get_block("latest")["timestamp"] > mined["timestamp"]  # never backwards


def test_restart_in_process_keeps_everything(tmp_path, counter_code):
    net = Devnet(tmp_path / "chain", port=0)
    net.start()
    w3 = Web3(Web3.HTTPProvider(net.url))
    (a0, k0), (a1, _), (a2, _) = net.dev_accounts[:3]
    counter = deploy_counter(w3, k0, counter_code)
    transact(w3, k0, counter.functions.bump(7))
    send(w3, k0, {"to": a1, "value": 10**18, "gas": 21_000})
    # eth_sendTransaction from a dev account: the devnet signs, and journals the signed bytes.
    tx_hash = w3.eth.send_transaction({"from": a2, "to": a0, "value": 5, "gas": 21_000})
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 1
    rpc(net.url, "evm_increaseTime", [1000])
    rpc(net.url, "evm_mine")
    before = chain_state(net.url, [a0, a1, a2], counter.address)
    net.stop()

    again = Devnet(tmp_path / "chain", port=0)
    again.start()
    try:
        assert chain_state(again.url, [a0, a1, a2], counter.address) == before
        w3 = Web3(Web3.HTTPProvider(again.url))
        assert w3.eth.contract(address=counter.address, abi=counter.abi).functions.x().call() == 7
        rpc(again.url, "evm_mine")  # the increaseTime offset came back too
        assert w3.eth.get_block("latest")["timestamp"] >= int(time.time()) + 1000 - 5
    finally:
        again.stop()


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    data = tmp_path / "chain"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE, text=True)
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), "the child devnet did not start"
        w3 = Web3(Web3.HTTPProvider(url))
        keys = [k for _, k in Devnet(data).dev_accounts]
        addresses = [a for a, _ in Devnet(data).dev_accounts][:4]
        for i in range(1, 4):
            send(w3, keys[0], {"to": addresses[i], "value": i * 10**17, "gas": 21_000})
        rpc(url, "evm_increaseTime", [50])
        send(w3, keys[1], {"to": addresses[0], "value": 1, "gas": 21_000})
        before = chain_state(url, addresses)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    assert before["block"] == 4

    net = Devnet(data, port=0)
    net.start()
    assert chain_state(net.url, addresses) == before
    net.stop()

    # A write cut short by a crash: the partial line was never acknowledged, so it is dropped.
    journal = net.journal_path.read_bytes()
    net.journal_path.write_bytes(journal + b'{"op":"tx","raw":"0xf86c80843b9aca0082')
    net.start()
    try:
        assert chain_state(net.url, addresses) == before
        assert net.journal_path.read_bytes() == journal
    finally:
        net.stop()

    # serve_forever stops cleanly on SIGTERM.
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().startswith("http://")
    child.send_signal(signal.SIGTERM)
    assert child.wait(15) == 0
    child.stdout.close()


def test_journal_that_does_not_replay_is_refused(tmp_path):
    net = Devnet(tmp_path / "chain", port=0)
    net.start()
    w3 = Web3(Web3.HTTPProvider(net.url))
    send(w3, net.dev_accounts[0][1], {"to": net.dev_accounts[1][0], "value": 1, "gas": 21_000})
    net.stop()
    lines = net.journal_path.read_text().splitlines()

    entry = json.loads(lines[1])
    entry["ts"] += 1  # another timestamp -> another block hash
    net.journal_path.write_text("\n".join([lines[0], json.dumps(entry)]) + "\n")
    with pytest.raises(DevnetError, match="does not replay"):
        net.start()

    net.journal_path.write_text("\n".join([lines[0], "{garbage", lines[1]]) + "\n")
    with pytest.raises(DevnetError, match="unreadable at line 2"):
        net.start()


def test_setup_hook_runs_once(tmp_path, counter_code):
    calls = []

    def setup(n: Devnet) -> dict:
        calls.append(n.url)
        counter = deploy_counter(Web3(Web3.HTTPProvider(n.url)), n.dev_accounts[0][1], counter_code)
        return {"contracts": {"Counter": counter.address}, "start_block": 1}

    for _ in range(3):
        net = Devnet(tmp_path / "chain", port=0, setup=setup)
        net.start()
        try:
            address = net.deployment["contracts"]["Counter"]
            assert rpc(net.url, "bitswarm_deployment")["result"] == net.deployment
            assert json.loads((tmp_path / "chain" / "deployment.json").read_text()) == net.deployment
            assert Web3(Web3.HTTPProvider(net.url)).eth.get_code(address) != b""
        finally:
            net.stop()
    assert len(calls) == 1

    bare = Devnet(tmp_path / "bare", port=0)
    bare.start()
    assert rpc(bare.url, "bitswarm_deployment")["result"] is None
    bare.stop()


def test_batch_errors_and_port_in_use(net, tmp_path):
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_noSuchThing", "params": []},
        {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []},  # a notification: no reply
        {"jsonrpc": "2.0", "id": 4, "method": "eth_getBalance", "params": ["not an address", "latest"]},
        {"jsonrpc": "2.0", "id": 5, "method": "net_version", "params": []},
    ]
    replies = {r["id"]: r for r in requests.post(net.url, json=batch, timeout=10).json()}
    assert set(replies) == {1, 2, 3, 4, 5}
    assert replies[1]["result"] == "0x0"
    assert int(replies[2]["result"], 16) == net.chain_id
    assert replies[3]["error"]["code"] == -32601 and "eth_noSuchThing" in replies[3]["error"]["message"]
    assert replies[4]["error"]["code"] == -32602
    assert replies[5]["result"] == str(net.chain_id)

    parse = requests.post(net.url, data=b"{not json", timeout=10).json()
    assert parse["error"]["code"] == -32700 and parse["id"] is None
    assert requests.post(net.url, json=[], timeout=10).json()["error"]["code"] == -32600
    assert rpc(net.url, "evm_revert", ["0x1"])["error"]["code"] == -32601  # would bypass the journal
    assert "no bitswarm deployment" in rpc(net.url, "bitswarm_fund", [net.dev_accounts[1][0], 1, 1])["error"]["message"]

    port = int(net.url.rsplit(":", 1)[1])
    with pytest.raises(DevnetError) as exc:
        Devnet(tmp_path / "other", port=port).start()
    assert str(exc.value) == f"port {port} on 127.0.0.1 is in use; pass --port or stop the other process"
    with pytest.raises(DevnetError, match="in use by another running devnet"):
        Devnet(net.data_dir, port=0).start()
