"""Where the contracts live on a chain, how they get there, and how a node finds them.

A node looks for the addresses in `<home>/deployments/<chain_id>.json` (written by
`bitswarm ledger deploy` against any chain), then asks the endpoint itself
(`bitswarm_deployment`, which the embedded devnet answers). Either way every address is checked
to hold code, so a chain that was reset under a stale file gives a clear error instead of calls
into empty accounts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from bitswarm.home import Home
from bitswarm.ledger.compile import CONTRACT_NAMES, compile_contract
from bitswarm.ledger.errors import DeploymentError
from bitswarm.store.atomic import atomic_write_text


@dataclass(frozen=True)
class DeployParams:
    """Contract parameters fixed at deployment (seconds and token units)."""

    unbond_delay: int = 7 * 24 * 3600
    commit_timeout: int = 24 * 3600
    round_timeout: int = 3600
    vote_timeout: int = 3600
    referee_min_stake: int = 100 * 10**18
    swarm_round_duration: int = 600
    # Every job's solver stake, and so every challenge, locks at least this much: a cheater
    # always has stake to lose.
    min_stake: int = 10 * 10**18
    # What a swarm node locks to take part in the SwarmCoordinator's rounds.
    swarm_stake: int = 10 * 10**18


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    contracts: dict[str, str]
    deployer: str = ""
    block: int = 0
    params: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, origin: str) -> Deployment:
        try:
            contracts = dict(data["contracts"])
            chain_id = int(data["chain_id"])
            for name in CONTRACT_NAMES:
                if not Web3.is_address(contracts.get(name, "")):
                    raise ValueError(f"missing or invalid address for {name}")
            return cls(
                chain_id=chain_id,
                contracts={n: Web3.to_checksum_address(contracts[n]) for n in CONTRACT_NAMES},
                deployer=str(data.get("deployer", "")),
                block=int(data.get("block", 0)),
                params={k: int(v) for k, v in dict(data.get("params", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentError(f"deployment from {origin} is not valid: {exc}") from None


def deployment_file(home: Path, chain_id: int) -> Path:
    return Home(Path(home)).deployments / f"{chain_id}.json"


def save(home: Path, deployment: Deployment) -> Path:
    path = deployment_file(home, deployment.chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(deployment.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def resolve(w3: Web3, home: Path | None, rpc_url: str) -> Deployment:
    """The deployment for the chain behind `w3`: the home's file first, then the endpoint's own."""
    chain_id = w3.eth.chain_id
    found: Deployment | None = None
    origin = ""
    if home is not None:
        path = deployment_file(home, chain_id)
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise DeploymentError(f"{path} is unreadable: {exc}; delete it or run `bitswarm ledger deploy`") from None
            found, origin = Deployment.from_json(data, str(path)), str(path)
    if found is None:
        answer = w3.provider.make_request("bitswarm_deployment", [])
        data = answer.get("result") if isinstance(answer, dict) else None
        if data:
            found, origin = Deployment.from_json(data, f"{rpc_url} (bitswarm_deployment)"), rpc_url
    if found is None:
        where = f"{deployment_file(home, chain_id)} or " if home is not None else ""
        raise DeploymentError(
            f"no bitswarm contracts known for chain {chain_id} at {rpc_url}: looked in {where}the endpoint's "
            "bitswarm_deployment. Start the embedded devnet (`bitswarm devnet`), or deploy to this chain "
            "with `bitswarm ledger deploy`."
        )
    if found.chain_id != chain_id:
        raise DeploymentError(f"deployment from {origin} is for chain {found.chain_id}, but {rpc_url} is chain {chain_id}")
    for name, addr in found.contracts.items():
        if w3.eth.get_code(addr) in (b"", b"\x00"):
            raise DeploymentError(
                f"{name} at {addr} (from {origin}) has no code on chain {chain_id}: the chain was reset or "
                "the file is stale. Redeploy with `bitswarm ledger deploy`."
            )
    return found


def _deploy_one(w3: Web3, account: LocalAccount, name: str, args: list, nonce: int) -> str:
    compiled = compile_contract(name)
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    ctor = factory.constructor(*args)
    gas = ctor.estimate_gas({"from": account.address})
    tx = ctor.build_transaction(
        {"from": account.address, "nonce": nonce, "gas": int(gas * 1.2) + 20_000,
         "gasPrice": w3.eth.gas_price, "chainId": w3.eth.chain_id}
    )
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.05)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise DeploymentError(f"deploying {name} failed (tx {tx_hash.hex()})")
    return receipt["contractAddress"]


def deploy(w3: Web3, account: LocalAccount, params: DeployParams = DeployParams()) -> Deployment:
    """Deploy the four contracts from `account`, which becomes token minter and registry owner."""
    nonce = w3.eth.get_transaction_count(account.address, "pending")
    token = _deploy_one(w3, account, "Token", ["bitswarm credits", "BSC", account.address], nonce)
    registry = _deploy_one(w3, account, "NodeRegistry", [token, params.unbond_delay], nonce + 1)
    market = _deploy_one(
        w3, account, "JobMarket",
        [token, registry, params.commit_timeout, params.round_timeout, params.vote_timeout,
         params.referee_min_stake, params.min_stake],
        nonce + 2,
    )
    swarm = _deploy_one(
        w3, account, "SwarmCoordinator",
        [registry, params.swarm_round_duration, params.swarm_stake, params.vote_timeout, params.referee_min_stake],
        nonce + 3,
    )
    deployment = Deployment(
        chain_id=w3.eth.chain_id,
        contracts={"Token": token, "NodeRegistry": registry, "JobMarket": market, "SwarmCoordinator": swarm},
        deployer=account.address,
        block=w3.eth.block_number,
        params=asdict(params),
    )
    # Imported here: the client needs a deployment, and this module builds one.
    from bitswarm.ledger.client import Ledger

    # The registry takes its slashers once; after this call the owner has no say over stake.
    owner = Ledger(w3.provider.endpoint_uri, deployment, account)
    owner.transact("NodeRegistry", "set_slashers", market, swarm)
    return deployment
