"""`bitswarm identity`: the node's Ethereum account and libp2p peer key."""

from __future__ import annotations

import os
import sys

import typer

from bitswarm.cli.output import JSON_HELP, UserError, emit_json, err, out, reporting
from bitswarm.cli.state import state
from bitswarm.node import identity

PASSPHRASE_ENV = "BITSWARM_PASSPHRASE"
app = typer.Typer(help="The node's account (encrypted keystore) and libp2p peer key.", no_args_is_help=True)


def _passphrase(confirm: bool) -> str:
    """From BITSWARM_PASSPHRASE, else asked for on the terminal (never echoed)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise UserError(f"no passphrase: set {PASSPHRASE_ENV} or run this in a terminal to be asked")
    return typer.prompt("passphrase", hide_input=True, confirmation_prompt=confirm, err=True)


@app.command()
def new(
    ctx: typer.Context,
    replace: bool = typer.Option(False, "--replace", help="Make a new identity even if one exists (the old files are kept aside)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Create an Ethereum account in an encrypted keystore and a libp2p peer key."""
    with reporting(as_json):
        home = state(ctx).home
        if identity.exists(home) and not replace:
            identity.create(home, "x" * identity.MIN_PASSPHRASE)  # raises the "already exists" error
        ident = identity.create(home, _passphrase(confirm=True), replace=replace)
        if as_json:
            emit_json(ident.public())
        else:
            out.print(f"address  {ident.address}\npeer id  {ident.peer_id}")
            err.print(f"[dim]keystore {ident.account_file} (encrypted); peer key {ident.peer_file}[/]")


@app.command()
def show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Show the address and peer id (needs no passphrase)."""
    with reporting(as_json):
        ident = identity.load(state(ctx).home)
        if as_json:
            emit_json(ident.public())
        else:
            out.print(f"address  {ident.address}\npeer id  {ident.peer_id}")


@app.command()
def sign(
    ctx: typer.Context,
    message: str = typer.Argument(..., help="Text to sign (EIP-191 personal message)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Unlock the keystore and sign a message; proves the passphrase and the key."""
    from eth_account.messages import encode_defunct

    with reporting(as_json):
        home = state(ctx).home
        identity.load(home)  # a missing identity is reported before asking for a passphrase
        account = identity.unlock(home, _passphrase(confirm=False))
        signature = account.sign_message(encode_defunct(text=message)).signature.hex()
        signature = signature if signature.startswith("0x") else "0x" + signature
        if as_json:
            emit_json({"address": account.address, "message": message, "signature": signature})
        else:
            out.print(signature)
