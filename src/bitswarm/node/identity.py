"""A node's identity: an Ethereum account in an encrypted keystore, and a libp2p peer key.

Files under <home>/keys/: `account.json` (Web3 Secret Storage v3, scrypt) and `peer.key`
(libp2p protobuf, mode 0600; the p2p daemon needs it unencrypted). Private keys never leave
this module except as the unlocked account object handed to code that signs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from eth_utils import to_checksum_address

from bitswarm.errors import BitswarmError
from bitswarm import peer_key
from bitswarm.home import Home
from bitswarm.store.atomic import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

# eth_account (half a second to import) is imported where a key is made or unlocked, so that
# `identity show` and everything else that only reads the address starts fast.

ACCOUNT_FILE = "account.json"
PEER_FILE = "peer.key"
MIN_PASSPHRASE = 8


class IdentityError(BitswarmError):
    """Missing, damaged or locked identity; the message says what to do."""


class WrongPassphrase(IdentityError):
    pass


@dataclass(frozen=True)
class Identity:
    address: str
    peer_id: str
    account_file: Path
    peer_file: Path

    def public(self) -> dict:
        return {"address": self.address, "peer_id": self.peer_id}


def _paths(home: Path) -> tuple[Path, Path]:
    d = Home(Path(home)).keys
    return d / ACCOUNT_FILE, d / PEER_FILE


def exists(home: Path) -> bool:
    return any(p.exists() for p in _paths(home))


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise IdentityError(f"the passphrase must be at least {MIN_PASSPHRASE} characters long")


def create(home: Path, passphrase: str, replace: bool = False) -> Identity:
    """Make a new account and peer key; an existing identity is kept aside, never overwritten."""
    check_passphrase(passphrase)
    account_file, peer_file = _paths(home)
    if exists(home):
        if not replace:
            raise IdentityError(
                f"an identity already exists in {account_file.parent}; "
                "pass --replace to make a new one (the old files are kept as *.replaced-<time>)"
            )
        stamp = time.strftime("%Y%m%dT%H%M%S")
        n = 0
        while any(p.with_name(f"{p.name}.replaced-{stamp}").exists() for p in (account_file, peer_file)):
            n += 1  # never let a second replacement in the same second clobber the first backup
            stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{n}"
        for p in (account_file, peer_file):
            if p.exists():
                os.replace(p, p.with_name(f"{p.name}.replaced-{stamp}"))
    account_file.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(account_file.parent, 0o700)
    from eth_account import Account

    acct = Account.create()
    keystore = Account.encrypt(acct.key, passphrase)
    atomic_write_text(account_file, json.dumps(keystore, indent=2), perms=0o600)
    atomic_write_bytes(peer_file, peer_key.encode_private(peer_key.generate()), perms=0o600)
    return load(home)


def _read_keystore(account_file: Path) -> dict:
    try:
        keystore = json.loads(account_file.read_text("utf-8"))
        _ = keystore["crypto"], keystore["address"]
        return keystore
    except FileNotFoundError:
        raise IdentityError(
            f"no identity in {account_file.parent.parent}; create one with `bitswarm identity new`"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise IdentityError(f"{account_file} is not a valid keystore file") from None


def load(home: Path) -> Identity:
    """The public half of the identity; needs no passphrase."""
    account_file, peer_file = _paths(home)
    keystore = _read_keystore(account_file)
    try:
        priv = peer_key.decode_private(peer_file.read_bytes())
    except FileNotFoundError:
        raise IdentityError(
            f"{peer_file} is missing; restore it from a backup or run `bitswarm identity new --replace`"
        ) from None
    except peer_key.PeerKeyError as e:
        raise IdentityError(f"{peer_file}: {e}") from None
    return Identity(
        address=to_checksum_address("0x" + keystore["address"].removeprefix("0x")),
        peer_id=peer_key.peer_id(priv),
        account_file=account_file,
        peer_file=peer_file,
    )


def unlock(home: Path, passphrase: str) -> "LocalAccount":
    """Decrypt the account for signing; a wrong passphrase is WrongPassphrase, never a traceback."""
    from eth_account import Account

    account_file, _ = _paths(home)
    keystore = _read_keystore(account_file)
    try:
        key = Account.decrypt(keystore, passphrase)
    except ValueError as e:
        if "MAC mismatch" in str(e):
            raise WrongPassphrase(f"wrong passphrase for {account_file}") from None
        raise IdentityError(f"{account_file} could not be decrypted: {e}") from None
    return Account.from_key(key)


def peer_private_key(home: Path):
    """The libp2p key the node's peer-to-peer daemon runs as (its peer id is the registered one)."""
    load(home)  # the same checks and messages as everywhere else
    return peer_key.decode_private(_paths(home)[1].read_bytes())
