"""The client's own promises, against the real devnet: revert reasons, nonces, dropped
connections, events from a block, deployment lookup."""

from __future__ import annotations

import threading
import time

import pytest
from eth_account import Account

from bitswarm.ledger.client import CREDIT, Ledger, cid_bytes
from bitswarm.ledger.deployment import Deployment, resolve, save
from bitswarm.ledger.errors import ConnectionFailed, DeploymentError, LedgerError, RevertError

from .chains import free_port, start_devnet

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    c = start_devnet(tmp_path_factory.mktemp("client-devnet"))
    yield c
    c.stop()


def test_a_refused_transaction_carries_the_contract_reason(chain):
    lg = chain.ledger(7)
    with pytest.raises(RevertError) as e:
        lg.stake(10 * CREDIT)  # not registered
    assert e.value.reason == "registry: not registered"
    assert "NodeRegistry.stake" in str(e.value)
    with pytest.raises(RevertError, match="token: not minter"):
        lg.mint(lg.address, 1)


def test_two_clients_of_one_account_keep_their_nonces_straight(chain):
    a, b = chain.ledger(8), chain.ledger(8)
    to = chain.ledger(9).address
    before = chain.ledger(9).token_balance()
    for lg in (a, b, a, b, a):  # each client's cached nonce goes stale in turn
        lg.transfer(to, 1)
    assert chain.ledger(9).token_balance() == before + 5


def test_events_and_follow_from_a_block(chain):
    lg = chain.ledger(6)
    start = lg.block_number() + 1
    lg.register("12D3KooWfollow", 1)
    lg.stake(5 * CREDIT)
    got = lg.events("NodeRegistry", "Staked", from_block=start, node=lg.address)
    assert [e["args"]["amount"] for e in got] == [5 * CREDIT]
    names = []
    for ev in lg.follow(["NodeRegistry"], from_block=start, poll_s=0.05):
        names.append(ev["event"])
        if ev["event"] == "Staked":
            break
    assert names[0] == "NodeRegistered" and names[-1] == "Staked"


def test_a_dropped_connection_is_retried(tmp_path):
    from bitswarm.ledger.devnet import Devnet
    from bitswarm.ledger.faucet import setup_devnet

    port = free_port()

    def make():
        return Devnet(tmp_path / "d", port=port, setup=setup_devnet)

    net = make()
    net.start()
    dep = Deployment.from_json(net.deployment, "devnet")
    lg = Ledger(net.url, dep, Account.from_key(net.dev_accounts[1][1]), retries=6)
    balance = lg.token_balance()
    net.stop()
    holder = {}
    timer = threading.Timer(0.8, lambda: (holder.setdefault("net", make()), holder["net"].start()))
    timer.start()
    try:
        t = time.monotonic()
        assert lg.token_balance() == balance  # the chain came back while the client retried
        assert time.monotonic() - t >= 0.5
    finally:
        timer.join()
        holder["net"].stop()
    with pytest.raises(ConnectionFailed, match="bitswarm devnet"):
        Ledger(net.url, dep, retries=1).token_balance(lg.address)


def test_deployment_lookup(chain, tmp_path):
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(chain.url))
    assert resolve(w3, None, chain.url).contracts == chain.deployment.contracts  # from the devnet itself
    stale = Deployment(chain.deployment.chain_id, {n: "0x" + "11" * 20 for n in chain.deployment.contracts})
    save(tmp_path, stale)
    with pytest.raises(DeploymentError, match="has no code"):
        resolve(w3, tmp_path, chain.url)
    with pytest.raises(DeploymentError, match="not valid"):
        Deployment.from_json({"chain_id": 5, "contracts": {}}, "test")


def test_cid_bytes_refuses_what_is_not_a_cid():
    assert cid_bytes("sha256:" + "ab" * 32) == bytes.fromhex("ab" * 32)
    for bad in ("sha256:abc", "not hex", "0x" + "ab" * 31):
        with pytest.raises(LedgerError):
            cid_bytes(bad)


def test_a_verify_fee_not_below_the_bounty_is_refused_before_any_transaction(chain):
    lg = chain.ledger(5)
    nonce = lg.w3.eth.get_transaction_count(lg.address)
    for fee in (10, 11, -1):
        with pytest.raises(LedgerError, match="verify_fee must be at least 0 and below the bounty"):
            lg.post_job("sha256:" + "ab" * 32, "train", 4, 10, 10 * CREDIT, 60, ops_per_leaf=5, verify_fee=fee)
    assert lg.w3.eth.get_transaction_count(lg.address) == nonce
