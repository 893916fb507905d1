"""What the embedded devnet does on top of a bare chain: deploy bitswarm and hand out test funds.

Both go through the devnet's own JSON-RPC endpoint as signed transactions from dev account 0
(the deployer and token minter), so they land in the devnet's journal like any other
transaction and survive a restart.
"""

from __future__ import annotations

from eth_account import Account
from web3 import Web3

from bitswarm.ledger.client import CREDIT, Ledger
from bitswarm.ledger.deployment import DeployParams, Deployment, deploy
from bitswarm.ledger.errors import LedgerError

DEV_CREDITS = 1_000_000 * CREDIT  # minted to each dev account at first start
MAX_FUND_ETH = 1000 * 10**18
MAX_FUND_CREDITS = 1_000_000 * CREDIT


def setup_devnet(net, params: DeployParams = DeployParams()) -> dict:
    """A Devnet's first-start hook: deploy the contracts from dev account 0 and mint credits to
    every dev account; returns the deployment JSON."""
    account = Account.from_key(net.dev_accounts[0][1])
    w3 = Web3(Web3.HTTPProvider(net.url, request_kwargs={"timeout": 60}))
    deployment = deploy(w3, account, params)
    minter = Ledger(net.url, deployment, account)
    for addr, _ in net.dev_accounts:
        minter.mint(addr, DEV_CREDITS)
    return deployment.to_json()


def fund(url: str, deployer_key: str, deployment: dict, address: str, eth_wei: int, credits: int) -> dict:
    """Send ETH for gas and mint credits to `address`; bounded so a typo can't mint the world."""
    if not Web3.is_address(address):
        raise LedgerError(f"not an address: {address!r} (expected 0x followed by 40 hex digits)")
    if not 0 <= eth_wei <= MAX_FUND_ETH or not 0 <= credits <= MAX_FUND_CREDITS:
        raise LedgerError(
            f"the devnet faucet gives at most {MAX_FUND_ETH // 10**18} ETH and "
            f"{MAX_FUND_CREDITS // CREDIT} credits per request"
        )
    address = Web3.to_checksum_address(address)
    account = Account.from_key(deployer_key)
    minter = Ledger(url, Deployment.from_json(deployment, "devnet"), account)
    tx_hashes = []
    if eth_wei:
        tx_hashes.append(minter.send_eth(address, eth_wei).tx_hash)
    if credits:
        tx_hashes.append(minter.mint(address, credits).tx_hash)
    return {"address": address, "eth": eth_wei, "credits": credits, "transactions": tx_hashes}
