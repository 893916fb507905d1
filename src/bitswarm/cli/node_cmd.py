"""`bitswarm node run`: the long-running node (node.daemon)."""

from __future__ import annotations

import logging

import typer

from bitswarm.cli.ledger_cmd import connect
from bitswarm.cli.output import UserError, emit_json, err, reporting
from bitswarm.cli.state import state


def run(
    ctx: typer.Context,
    roles: str = typer.Option(None, "--roles", help="Comma-separated: solver, verifier, referee (default: the "
                              "config's roles, all three unless set).", show_default=False),
    rpc: str = typer.Option(None, "--rpc", help="JSON-RPC URL of the chain (default: the config's rpc_url).",
                            show_default=False),
    listen: list[str] = typer.Option(None, "--listen", help="libp2p multiaddr to listen on (repeatable; default "
                                     "/ip4/127.0.0.1/tcp/0; /ip4/0.0.0.0/tcp/PORT to take peers from other machines).",
                                     show_default=False),
    bootstrap: list[str] = typer.Option(None, "--bootstrap", help="A peer's multiaddr ending in /p2p/<peer id> "
                                        "(repeatable), as another node's `bitswarm node status` prints it.",
                                        show_default=False),
    api_port: int = typer.Option(None, "--api-port", min=0, max=65535, help="HTTP API port on 127.0.0.1 "
                                 "(default: the config's api_port, 8700; 0 picks a free one).", show_default=False),
    adversary: str = typer.Option(None, "--adversary", help="Cheat on purpose as a solver (a training adversary "
                                  "of `bitswarm train --adversary`), for demos and tests of verification.",
                                  show_default=False),
    lazy: bool = typer.Option(False, "--lazy-verifier", help="Cheat on purpose as a verifier: attest without "
                              "re-executing (copies what the solver published); it should never be paid."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line once the node serves (address, peer id, "
                                 "API URL, multiaddrs), then its log on stderr as usual."),
):
    """Run this node: follow the chain and solve, verify and referee jobs until Ctrl-C."""
    from bitswarm.node import identity
    from bitswarm.node.config import load_settings
    from bitswarm.node.daemon import Node
    from bitswarm.verify.adversary import Adversary, AdversaryError

    with reporting(as_json):
        st = state(ctx)
        overrides = {}
        if roles is not None:
            overrides["roles"] = [r.strip() for r in roles.split(",") if r.strip()]
        if rpc is not None:
            overrides["rpc_url"] = rpc
        if listen:
            overrides["listen"] = list(listen)
        if bootstrap:
            overrides["bootstrap"] = list(bootstrap)
        if api_port is not None:
            overrides["api_port"] = api_port
        settings = load_settings(st.config_file if st.config_file.exists() else None, **overrides)
        st._settings = settings
        if adversary:
            try:
                Adversary.parse(adversary)
            except AdversaryError as e:
                raise UserError(str(e)) from None
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(message)s",
                            datefmt="%H:%M:%S")
        for noisy in ("hivemind", "web3", "urllib3", "asyncio", "uvicorn", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        ident = identity.load(st.home)
        ledger = connect(st, with_account=True)  # the passphrase: BITSWARM_PASSPHRASE or the terminal
        peer_key = identity.peer_private_key(st.home)
        node = Node(st.paths, settings, ledger, peer_key, adversary=adversary, lazy=lazy,
                    on_ready=(lambda info: emit_json(info)) if as_json else None)
        err.print(f"[dim]node {ident.address} ({ident.peer_id}); Ctrl-C stops it[/]")
        node.run()
