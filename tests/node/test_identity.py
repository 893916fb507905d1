"""Identity: encrypted account, libp2p peer key, wrong passphrase, no silent overwrite."""

import json
import stat

import base58
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from bitswarm import peer_key
from bitswarm.node import identity

PW = "correct horse battery"


def test_create_show_unlock(bitswarm_home):
    ident = identity.create(bitswarm_home, PW)
    assert ident.address.startswith("0x") and len(ident.address) == 42
    assert ident.peer_id.startswith("12D3KooW")
    assert identity.load(bitswarm_home) == ident
    acct = identity.unlock(bitswarm_home, PW)
    assert acct.address == ident.address
    sig = acct.sign_message(encode_defunct(text="hi")).signature
    assert Account.recover_message(encode_defunct(text="hi"), signature=sig) == ident.address


def test_files_are_private_and_key_is_encrypted(bitswarm_home):
    ident = identity.create(bitswarm_home, PW)
    for p in (ident.account_file, ident.peer_file):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    keystore = json.loads(ident.account_file.read_text())
    assert keystore["crypto"]["kdf"] == "scrypt"
    key_hex = identity.unlock(bitswarm_home, PW).key.hex().removeprefix("0x")
    assert key_hex not in ident.account_file.read_text()


def test_wrong_passphrase_is_a_clear_error(bitswarm_home):
    identity.create(bitswarm_home, PW)
    with pytest.raises(identity.WrongPassphrase, match="wrong passphrase for .*account.json"):
        identity.unlock(bitswarm_home, "not the passphrase")


def test_existing_identity_is_never_overwritten(bitswarm_home):
    first = identity.create(bitswarm_home, PW)
    with pytest.raises(identity.IdentityError, match="already exists.*--replace"):
        identity.create(bitswarm_home, PW)
    assert identity.load(bitswarm_home) == first
    second = identity.create(bitswarm_home, PW, replace=True)
    assert second.address != first.address
    kept = list(first.account_file.parent.glob("account.json.replaced-*"))
    assert len(kept) == 1 and first.address[2:].lower() in kept[0].read_text().lower()


def test_short_passphrase_and_missing_identity(bitswarm_home):
    with pytest.raises(identity.IdentityError, match="at least 8"):
        identity.create(bitswarm_home, "short")
    with pytest.raises(identity.IdentityError, match="bitswarm identity new"):
        identity.load(bitswarm_home)


def test_damaged_peer_key(bitswarm_home):
    ident = identity.create(bitswarm_home, PW)
    data = bytearray(ident.peer_file.read_bytes())
    data[-1] ^= 1
    ident.peer_file.write_bytes(bytes(data))
    with pytest.raises(identity.IdentityError, match="does not match"):
        identity.load(bitswarm_home)


def test_peer_id_is_identity_multihash_of_protobuf_public_key():
    priv = peer_key.generate()
    blob = peer_key.encode_private(priv)
    assert peer_key.peer_id(peer_key.decode_private(blob)) == peer_key.peer_id(priv)
    raw = base58.b58decode(peer_key.peer_id(priv))
    # multihash(identity, 36) | protobuf {Type: Ed25519, Data: 32 bytes}
    assert raw[:6] == bytes([0x00, 36, 0x08, 0x01, 0x12, 32])
    assert raw[6:] == blob[36:]
    with pytest.raises(peer_key.PeerKeyError):
        peer_key.decode_private(b"\x08\x00" + blob[2:])


def test_known_ed25519_vector():
    # RFC 8032 test 1 secret key; its public key is d75a98...511a.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    pub = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert base58.b58decode(peer_key.peer_id(priv))[6:] == pub


def test_two_replacements_keep_both_old_identities(bitswarm_home):
    a = identity.create(bitswarm_home, PW)
    b = identity.create(bitswarm_home, PW, replace=True)
    identity.create(bitswarm_home, PW, replace=True)
    kept = " ".join(p.read_text().lower() for p in a.account_file.parent.glob("account.json.replaced-*"))
    assert a.address[2:].lower() in kept and b.address[2:].lower() in kept
