"""Verification pay: the attestation that only re-executing the audited leaf can produce.

A job that reserves a verification fee has one leaf drawn for audit when its result is
committed. A verifier's attestation of leaf k is the Merkle root of its op-trace digests of
leaf k, which is exactly the trace root it would commit if leaf k were disputed
(`game.Party.commit_trace`). Those digests chain every op's output hashes from the agreed
before, and nobody publishes them outside a dispute, so copying anything public (the result
root, a leaf, the last leaf) gives a different value: a verifier has to re-execute leaf k
to know it.

On chain a verifier first commits to keccak256(attestation ‖ its 20-byte address) while the
challenge window is open and reveals the attestation after it closes (JobMarket.attest,
JobMarket.reveal). The address in the commitment makes a copied commitment useless: it opens
only for the verifier that made it.
"""

from __future__ import annotations

from eth_hash.auto import keccak

from bitswarm.repro.hashing import merkle_root
from bitswarm.verify.game import GameError, Party


def attestation(party: Party, k: int) -> str:
    """This side's attestation of leaf k (64 hex characters): the root over the digests it
    commits for leaf k's trace, computed from its own before."""
    if not 0 <= k < len(party.log):
        raise GameError(f"leaf {k} is not in this result of {len(party.log)} leaves")
    return merkle_root(party.committed_digests(k))


def _bytes(text: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise GameError(f"{what} is not hex: {text!r}") from None
    if len(raw) != size:
        raise GameError(f"{what} must be {size} bytes, got {len(raw)}: {text!r}")
    return raw


def commitment(value_hex: str, address: str) -> str:
    """keccak256(value ‖ address) in hex, the 32-byte value and the 20-byte address packed:
    what JobMarket.attest takes and JobMarket.reveal checks (its `commitment` view)."""
    return keccak(_bytes(value_hex, 32, "an attestation") + _bytes(address, 20, "an address")).hex()
