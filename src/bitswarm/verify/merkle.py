"""Merkle inclusion proofs over hex digests, matching repro.hashing.merkle_root.

leaf = H(0x00 | x), node = H(0x01 | left | right); a level with an odd count carries its last
node up unchanged (so that node has no sibling at that level and its proof skips the level).
A proof is a list of [side, hex] pairs from the leaf upwards, side "L" when the sibling is on
the left.
"""

from __future__ import annotations

import hashlib

from bitswarm.repro.hashing import merkle_root

__all__ = ["merkle_root", "proof", "verify"]


def _leaf(x: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(x)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def proof(leaves: list[str], index: int) -> list[list[str]]:
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} outside 0..{len(leaves) - 1}")
    level = [_leaf(x) for x in leaves]
    path = []
    while len(level) > 1:
        sib = index ^ 1
        if sib < len(level):
            path.append(["L" if sib < index else "R", level[sib].hex()])
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index // 2
    return path


def verify(leaf: str, proof_path: list, root: str) -> bool:
    """True when `leaf` with this proof hashes up to `root`; malformed proofs are False."""
    try:
        h = _leaf(leaf)
        for side, sib_hex in proof_path:
            sib = bytes.fromhex(sib_hex)
            if len(sib) != 32 or side not in ("L", "R"):
                return False
            h = _node(sib, h) if side == "L" else _node(h, sib)
        return h.hex() == root
    except (ValueError, TypeError):
        return False
