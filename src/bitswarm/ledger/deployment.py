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
from web3.exceptions import ContractLogicError, Web3RPCError

from bitswarm.home import Home
from bitswarm.ledger.compile import CONTRACT_NAMES, compile_contract
from bitswarm.ledger.errors import DeploymentError, InsufficientFunds
from bitswarm.ledger.units import format_units
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


# The owner's one set_slashers call after the four deployments: two stores and checks, far below this.
SET_SLASHERS_GAS = 150_000


def _gas_limit(estimate: int) -> int:
    """The gas a deployment transaction may use: the estimate with headroom for the chain's rounding."""
    return int(estimate * 1.2) + 20_000


def _constructor_args(params: DeployParams, owner: str, token: str | None, registry: str | None) -> dict[str, list]:
    """Each contract's constructor arguments, in deployment order; token and registry are addresses
    (None until deployed: only the contracts after them use them)."""
    return {
        "Token": ["bitswarm credits", "BSC", owner],
        "NodeRegistry": [token, params.unbond_delay],
        "JobMarket": [token, registry, params.commit_timeout, params.round_timeout, params.vote_timeout,
                      params.referee_min_stake, params.min_stake],
        "SwarmCoordinator": [registry, params.swarm_round_duration, params.swarm_stake, params.vote_timeout,
                             params.referee_min_stake],
    }


def _constructor(w3: Web3, name: str, args: list):
    compiled = compile_contract(name)
    return w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode).constructor(*args)


def deploy_cost(w3: Web3, owner: str, params: DeployParams = DeployParams()) -> tuple[int, int]:
    """(gas, wei): the most deploy() spends at the current gas price, from the gas limits it sets."""
    # The constructors only store the addresses they get, so the owner's stands in for the
    # contracts not deployed yet, and the estimates equal the real ones.
    calls = _constructor_args(params, owner, owner, owner)
    gas = sum(_gas_limit(_constructor(w3, name, args).estimate_gas({"from": owner})) for name, args in calls.items())
    gas += SET_SLASHERS_GAS
    return gas, gas * w3.eth.gas_price


def check_funds(w3: Web3, owner: str, params: DeployParams = DeployParams()) -> None:
    """Raise InsufficientFunds, saying how much and how to get it, unless `owner` can pay the whole
    deployment: checked before the first transaction, so no half-deployed set is left behind."""
    gas, cost = deploy_cost(w3, owner, params)
    balance = w3.eth.get_balance(owner)
    if balance < cost:
        raise InsufficientFunds(
            f"{owner} holds {format_units(balance)} ETH on chain {w3.eth.chain_id}, but deploying bitswarm's "
            f"four contracts needs about {format_units(cost)} ETH of gas ({gas} gas at the chain's current price). "
            f"Send ETH to {owner} from an account that has some (on the embedded devnet: "
            f"`bitswarm ledger fund {owner}`), then deploy again."
        )


def _deploy_one(w3: Web3, account: LocalAccount, name: str, args: list, nonce: int) -> str:
    ctor = _constructor(w3, name, args)
    try:
        tx = ctor.build_transaction(
            {"from": account.address, "nonce": nonce, "gas": _gas_limit(ctor.estimate_gas({"from": account.address})),
             "gasPrice": w3.eth.gas_price, "chainId": w3.eth.chain_id}
        )
        tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    except (ContractLogicError, Web3RPCError) as exc:
        # Checked funds can still run short if the gas price jumps; the chain's own words then.
        raise DeploymentError(
            f"deploying {name} from {account.address} failed: {getattr(exc, 'message', None) or exc}"
        ) from exc
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.05)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise DeploymentError(f"deploying {name} failed (tx {tx_hash.hex()})")
    return receipt["contractAddress"]


def deploy(w3: Web3, account: LocalAccount, params: DeployParams = DeployParams()) -> Deployment:
    """Deploy the four contracts from `account`, which becomes token minter and registry owner."""
    check_funds(w3, account.address, params)
    nonce = w3.eth.get_transaction_count(account.address, "pending")
    contracts: dict[str, str] = {}
    for i, name in enumerate(CONTRACT_NAMES):  # the order _constructor_args lists them in
        args = _constructor_args(params, account.address, contracts.get("Token"), contracts.get("NodeRegistry"))[name]
        contracts[name] = _deploy_one(w3, account, name, args, nonce + i)
    deployment = Deployment(
        chain_id=w3.eth.chain_id,
        contracts=contracts,
        deployer=account.address,
        block=w3.eth.block_number,
        params=asdict(params),
    )
    # Imported here: the client needs a deployment, and this module builds one.
    from bitswarm.ledger.client import Ledger

    # The registry takes its slashers once; after this call the owner has no say over stake.
    owner = Ledger(w3.provider.endpoint_uri, deployment, account)
    owner.transact("NodeRegistry", "set_slashers", contracts["JobMarket"], contracts["SwarmCoordinator"])
    return deployment
