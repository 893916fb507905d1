"""`bitswarm devnet`, `bitswarm ledger …` and `bitswarm node register|unbond`: the node on chain."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bitswarm.cli.identity_cmd import _passphrase
from bitswarm.cli.output import JSON_HELP, UserError, emit_json, err, out, reporting, when
from bitswarm.cli.state import State, state
from bitswarm.ledger.codes import ROLE_NAMES
from bitswarm.ledger.units import CREDIT, format_units
from bitswarm.node import identity

if TYPE_CHECKING:
    from bitswarm.ledger.client import Ledger

# web3 and the contract client (half a second to import) load inside the commands that talk to
# the chain, so that --help, config and identity commands start fast.

ledger_app = typer.Typer(help="The EVM chain: contracts, balances, deployment.", no_args_is_help=True)
node_app = typer.Typer(help="This node: registration, stake, unbonding, and the running node's status.",
                       no_args_is_help=True)


def credits_to_units(text: str, what: str) -> int:
    """'12.5' credits -> token units (18 decimals), refusing what a person would not mean."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UserError(f"{what} must be a number of credits, like 100 or 2.5 (got {text!r})") from None
    if not value.is_finite() or value < 0:
        raise UserError(f"{what} must be a non-negative number of credits (got {text!r})")
    with localcontext() as exact:
        exact.prec = 100  # the default 28 digits would round big amounts silently; a uint256 has 78
        units = value * CREDIT
    if units != units.to_integral_value():
        raise UserError(f"{what} has more than 18 decimal places (got {text!r})")
    if units >= 2**256:
        raise UserError(f"{what} is more than the chain can hold (got {text!r})")
    return int(units)


def _chain_now(lg: Ledger) -> float:
    """Now, as the contracts will see it: the latest block's time, or the wall clock if the chain
    has been idle (its next block takes the wall clock's time)."""
    return max(time.time(), lg.timestamp())


def _web3(st: State, timeout: float = 10):
    """A web3 client for the configured chain, once its endpoint has answered."""
    from web3 import Web3

    rpc_url = st.settings().rpc_url
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    try:
        w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - any transport failure means the same to the user
        raise UserError(
            f"no EVM JSON-RPC endpoint answers at {rpc_url} ({type(exc).__name__}). Start the embedded chain "
            "with `bitswarm devnet`, or point rpc_url at one (`bitswarm config set rpc_url URL` or BITSWARM_RPC)."
        ) from None
    return w3


def connect(st: State, with_account: bool) -> Ledger:
    """A client for the configured chain; with_account unlocks the identity (asks the passphrase)."""
    from bitswarm.ledger import deployment as deployments
    from bitswarm.ledger.client import Ledger

    rpc_url = st.settings().rpc_url
    dep = deployments.resolve(_web3(st), st.home, rpc_url)
    account = identity.unlock(st.home, _passphrase(confirm=False)) if with_account else None
    return Ledger(rpc_url, dep, account)


def _node_json(lg: Ledger, address: str) -> dict:
    node = lg.node(address)
    return {
        "registered": bool(node["registered"]),
        "peer_id": node["peer_id"],
        "roles": [name for name, bit in ROLE_NAMES.items() if node["roles"] & bit],
        "stake": node["staked"],
        "locked": node["locked"],
        "unbonding": node["unbonding"],
        "unbond_release": node["unbond_release"],
    }


def devnet(
    ctx: typer.Context,
    port: int = typer.Option(8545, "--port", min=0, max=65535, help="TCP port on 127.0.0.1 (0 picks a free one)."),
    data: Path = typer.Option(None, "--data", help="Chain data directory (default: <home>/devnet).", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (url, chain id, contracts, dev accounts) once it serves."),
    fast: bool = typer.Option(False, "--fast", help="Deploy with deadlines of seconds instead of hours (dispute rounds 30 s, "
                              "votes 10 s, unbonding 60 s), for demos and tests; only on the first start."),
):
    """Run the embedded EVM chain on 127.0.0.1 with bitswarm's contracts deployed; survives restarts."""
    from bitswarm.ledger.deployment import DeployParams
    from bitswarm.ledger.devnet import Devnet, DevnetError
    from bitswarm.ledger.faucet import setup_devnet

    # Deadlines of seconds: a demo or a test sees a whole dispute settle while it watches.
    fast_params = DeployParams(unbond_delay=60, commit_timeout=600, round_timeout=30, vote_timeout=10,
                               referee_min_stake=10 * CREDIT, swarm_round_duration=60)

    with reporting(as_json):
        data_dir = (data or state(ctx).paths.devnet).expanduser().absolute()

        def setup(net: Devnet) -> dict:
            err.print("[dim]first start: deploying bitswarm's contracts…[/]")
            return setup_devnet(net, fast_params if fast else DeployParams())

        net = Devnet(data_dir, port=port, setup=setup)
        try:
            net.start()
        except DevnetError as exc:
            raise UserError(str(exc)) from None
        try:
            contracts = (net.deployment or {}).get("contracts", {})
            if as_json:
                emit_json({"url": net.url, "chain_id": net.chain_id, "data": str(data_dir), "contracts": contracts,
                           "dev_accounts": [a for a, _ in net.dev_accounts]})
                net.wait()
                return
            out.print(f"devnet  {net.url}  chain id {net.chain_id}  data {data_dir}")
            for name, addr in contracts.items():
                out.print(f"  {name:<17} {addr}")
            out.print(f"  dev accounts: {len(net.dev_accounts)} funded (first: {net.dev_accounts[0][0]})")
            err.print("[dim]Ctrl-C stops it; its state is kept for the next start.[/]")
            net.wait()
        finally:
            net.stop()


@ledger_app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Chain id, block, contract addresses, and this identity's balance and stake."""
    with reporting(as_json):
        st = state(ctx)
        lg = connect(st, with_account=False)
        address = identity.load(st.home).address if identity.exists(st.home) else None
        result = {
            "chain_id": lg.deployment.chain_id,
            "block": lg.block_number(),
            "contracts": dict(lg.deployment.contracts),
            "address": address,
            "balance": lg.token_balance(address) if address else None,
            "stake": None,
        }
        if address:
            node = _node_json(lg, address)
            result["stake"] = node["stake"]
            result["eth_balance"] = lg.eth_balance(address)
            result["node"] = node
        if as_json:
            emit_json(result)
            return
        out.print(f"chain {result['chain_id']} at {st.settings().rpc_url}, block {result['block']}")
        for name, addr in result["contracts"].items():
            out.print(f"  {name:<17} {addr}")
        if address is None:
            out.print("no identity here: `bitswarm identity new` makes one")
            return
        out.print(f"address {address}")
        out.print(f"  credits {format_units(result['balance'])}  stake {format_units(result['stake'])}"
                  f"  locked {format_units(node['locked'])}  unbonding {format_units(node['unbonding'])}"
                  f"  ETH {format_units(result['eth_balance'])}")
        out.print(f"  registered {node['registered']}  roles {','.join(node['roles']) or '-'}")
        if node["unbonding"]:
            out.print(f"  unbonding stake withdrawable from {when(node['unbond_release'], _chain_now(lg))}")


@ledger_app.command()
def deploy(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Deploy the contracts to the configured chain from this identity; nodes using this home find them."""
    from bitswarm.ledger import deployment as deployments
    from bitswarm.ledger.deployment import deploy as deploy_contracts

    with reporting(as_json):
        st = state(ctx)
        w3 = _web3(st, timeout=30)
        account = identity.unlock(st.home, _passphrase(confirm=False))
        dep = deploy_contracts(w3, account)
        path = deployments.save(st.home, dep)
        if as_json:
            emit_json({**dep.to_json(), "file": str(path)})
        else:
            for name, addr in dep.contracts.items():
                out.print(f"{name:<17} {addr}")
            err.print(f"[dim]written to {path}[/]")


@ledger_app.command()
def fund(
    ctx: typer.Context,
    address: str = typer.Argument(None, help="Who to fund (default: this identity)."),
    credits: str = typer.Option("1000", "--credits", help="Credits to mint."),
    eth: str = typer.Option("10", "--eth", help="ETH for gas."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Devnet only: mint credits and send ETH for gas from the devnet's faucet."""
    with reporting(as_json):
        st = state(ctx)
        lg = connect(st, with_account=False)
        target = address or identity.load(st.home).address
        answer = lg.w3.provider.make_request(
            "bitswarm_fund", [target, credits_to_units(eth, "--eth"), credits_to_units(credits, "--credits")]
        )
        if "error" in answer:
            msg = answer["error"].get("message", str(answer["error"]))
            if "method" in msg.lower() and "not" in msg.lower():
                msg = "this chain has no faucet (only `bitswarm devnet` does); fund the address from a funded account"
            raise UserError(msg)
        result = answer["result"]
        if as_json:
            emit_json(result)
        else:
            out.print(f"funded {result['address']}: {format_units(result['credits'])} credits, "
                      f"{format_units(result['eth'])} ETH")


@node_app.command()
def register(
    ctx: typer.Context,
    stake: str = typer.Option(..., "--stake", help="Credits to stake (added to any existing stake)."),
    roles: str = typer.Option(
        "solver,verifier,swarm", "--roles", help=f"Comma-separated roles: {', '.join(ROLE_NAMES)}."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Register this identity's address and peer id with its roles, and stake credits."""
    with reporting(as_json):
        st = state(ctx)
        bits = 0
        for name in (r.strip() for r in roles.split(",") if r.strip()):
            if name not in ROLE_NAMES:
                raise UserError(f"unknown role {name!r}; roles are {', '.join(ROLE_NAMES)}")
            bits |= ROLE_NAMES[name]
        if not bits:
            raise UserError(f"--roles needs at least one of {', '.join(ROLE_NAMES)}")
        amount = credits_to_units(stake, "--stake")
        ident = identity.load(st.home)
        lg = connect(st, with_account=True)
        have = lg.token_balance()
        if have < amount:
            raise UserError(
                f"{lg.address} holds {format_units(have)} credits, fewer than the {format_units(amount)} to stake"
                + (" (on the devnet: `bitswarm ledger fund`)" if lg.w3.provider.make_request(
                    "bitswarm_deployment", []).get("result") else "")
            )
        txs = [lg.register(ident.peer_id, bits).tx_hash]
        if amount:
            txs.append(lg.stake(amount).tx_hash)
        node = _node_json(lg, lg.address)
        if as_json:
            emit_json({"address": lg.address, **node, "transactions": txs})
        else:
            out.print(f"registered {lg.address} ({ident.peer_id}) as {','.join(node['roles'])}; "
                      f"stake {format_units(node['stake'])} credits")


@node_app.command()
def unbond(
    ctx: typer.Context,
    amount: str = typer.Option(None, "--amount", help="Credits to unbond (default: all free stake).", show_default=False),
    withdraw: bool = typer.Option(False, "--withdraw", help="Withdraw stake whose unbonding delay has passed instead."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Start unbonding free stake (withdrawable after the registry's delay), or withdraw it once the delay has passed."""
    with reporting(as_json):
        lg = connect(state(ctx), with_account=True)
        if withdraw:
            node = lg.node(lg.address)
            if not node["unbonding"]:
                raise UserError(f"nothing to withdraw: no stake of {lg.address} is unbonding "
                                "(`bitswarm node unbond` starts unbonding free stake)")
            now = _chain_now(lg)
            if node["unbond_release"] > now:
                raise UserError(f"{format_units(node['unbonding'])} credits are still unbonding: withdrawable from "
                                f"{when(node['unbond_release'], now)}")
            rc = lg.withdraw()
            result = {"withdrawn": rc.event("Withdrawn")["amount"], "transaction": rc.tx_hash}
        else:
            units = credits_to_units(amount, "--amount") if amount is not None else lg.call(
                "NodeRegistry", "free_stake", lg.address)
            if units == 0:
                raise UserError("nothing to unbond: this node has no free stake")
            rc = lg.request_unbond(units)
            ev = rc.event("UnbondRequested")
            result = {"unbonding": ev["amount"], "release_time": ev["release_time"], "transaction": rc.tx_hash}
        result["node"] = _node_json(lg, lg.address)
        if as_json:
            emit_json(result)
        elif withdraw:
            out.print(f"withdrew {format_units(result['withdrawn'])} credits")
        else:
            out.print(f"unbonding {format_units(result['unbonding'])} credits; withdraw them with "
                      f"`bitswarm node unbond --withdraw` from {when(result['release_time'], _chain_now(lg))}")


def node_api_url(st: State) -> str:
    """The running node's API: what it wrote in <home>/node.json, else the configured host and port."""
    info_file = st.paths.node_info_file
    if info_file.is_file():
        try:
            return json.loads(info_file.read_text("utf-8"))["api_url"].rstrip("/")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{info_file} is damaged (no api_url); delete it, the node writes it again on start") from None
    s = st.settings()
    host = f"[{s.api_host}]" if ":" in s.api_host else s.api_host
    return f"http://{host}:{s.api_port}"


def node_api_get(url: str, path: str) -> dict:
    """GET one JSON document from the node's API (stdlib only: a status check needs no HTTP library)."""
    try:
        with urllib.request.urlopen(url + path, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            message = e.reason
        raise UserError(f"the node at {url} answered {path} with {e.code}: {message}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (ConnectionRefusedError, FileNotFoundError)):
            raise UserError(f"no node is running at {url}; start one with `bitswarm node run`") from None
        raise UserError(f"the node at {url} did not answer ({reason}); is `bitswarm node run` running there?") from None


@node_app.command("status")
def node_status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """What the running node reports through its API: who it is, how far it follows the chain, its balances."""
    with reporting(as_json):
        url = node_api_url(state(ctx))
        status_, balances = node_api_get(url, "/status"), node_api_get(url, "/balances")
        if as_json:
            emit_json({"api_url": url, "status": status_, "balances": balances})
            return

        def credits(key: str) -> str:
            return "-" if balances.get(key) is None else f"{format_units(balances[key])} credits"

        uptime = status_.get("uptime_s")
        rows = [
            ("state", status_.get("state")),
            ("address", status_.get("address")),
            ("peer id", status_.get("peer_id")),
            ("roles", ",".join(status_.get("roles") or []) or "-"),
            ("chain block", status_.get("block")),
            ("last processed", status_.get("last_block")),
            ("uptime", f"{uptime:.0f} s" if uptime is not None else None),
            ("version", status_.get("version")),
            ("api", url),
            *[("p2p" if i == 0 else "", maddr) for i, maddr in enumerate(status_.get("maddrs") or ["-"])],
            ("credits", credits("token")),
            ("stake", credits("stake")),
            ("locked", credits("locked")),
            ("unbonding", credits("unbonding")),
            ("eth", "-" if balances.get("eth") is None else f"{format_units(balances['eth'])} ETH"),
        ]
        # Plain lines, not a table: a table squeezed into the terminal folds an address or a
        # multiaddr across lines, and then it no longer copies whole.
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            out.print(f"[bold]{name:<{width}}[/]  ", end="")
            out.print("-" if value is None else str(value), markup=False, highlight=False)
