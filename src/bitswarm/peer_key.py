"""libp2p peer keys: Ed25519, stored in libp2p's protobuf key format so the p2p daemon can load it.

Formats (libp2p crypto.proto): PrivateKey/PublicKey = {1: KeyType (varint), 2: Data (bytes)},
KeyType Ed25519 = 1. The private Data is seed(32) || public(32), as go-libp2p writes it. The peer
id is the base58btc multihash of the protobuf public key; for Ed25519 that key is short enough
for the identity multihash (code 0x00), giving ids that start with "12D3KooW".
"""

from __future__ import annotations

import base58
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.errors import BitswarmError

KEY_TYPE_ED25519 = 1
_RAW = dict(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)


class PeerKeyError(BitswarmError, ValueError):
    """A peer key file that is not a libp2p Ed25519 private key."""


def _proto(key_type: int, data: bytes) -> bytes:
    assert len(data) < 128  # single-byte varint length is all Ed25519 keys need
    return bytes([0x08, key_type, 0x12, len(data)]) + data


def _public_raw(priv: Ed25519PrivateKey) -> bytes:
    return priv.public_key().public_bytes(**_RAW)


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def encode_private(priv: Ed25519PrivateKey) -> bytes:
    seed = priv.private_bytes(
        encoding=serialization.Encoding.Raw,
        format=serialization.PrivateFormat.Raw,
        encryption_algorithm=serialization.NoEncryption(),
    )
    return _proto(KEY_TYPE_ED25519, seed + _public_raw(priv))


def decode_private(blob: bytes) -> Ed25519PrivateKey:
    if len(blob) != 4 + 64 or blob[:4] != bytes([0x08, KEY_TYPE_ED25519, 0x12, 64]):
        raise PeerKeyError("not a libp2p Ed25519 private key (expected 68 bytes of protobuf)")
    priv = Ed25519PrivateKey.from_private_bytes(blob[4:36])
    if _public_raw(priv) != blob[36:]:
        raise PeerKeyError("libp2p key file is damaged: its public half does not match its seed")
    return priv


def peer_id(priv: Ed25519PrivateKey) -> str:
    pub_proto = _proto(KEY_TYPE_ED25519, _public_raw(priv))
    return base58.b58encode(bytes([0x00, len(pub_proto)]) + pub_proto).decode("ascii")
