"""Merkle inclusion proofs over hex digests, matching repro.hashing.merkle_root and the contract.

leaf = H(0x00 | x), node = H(0x01 | left | right); a level with an odd count carries its last
node up unchanged (so that node has no sibling at that level and its proof skips the level).
A proof is a list of [side, hex] pairs from the leaf upwards, side "L" when the sibling is on
the left.

`verify` is bound to the leaf's index and the tree's size, exactly as JobMarket._verify_proof:
the side of every sibling follows from the index, and (index, size) fixes how many siblings a
proof has. A proof that would hash up to the root from another position (a party answering
"leaf 0" to every query) is rejected, not re-interpreted.
"""

from __future__ import annotations

import hashlib

from bitswarm.repro.hashing import merkle_root

__all__ = ["merkle_root", "proof", "siblings", "verify"]


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


def siblings(proof_path: list) -> list[str]:
    """The sibling hashes alone, as the contract takes a proof."""
    return [sib for _side, sib in proof_path]


def verify(leaf: str, proof_path: list, root: str, index: int, n_leaves: int) -> bool:
    """True when `leaf` is leaf `index` of an `n_leaves`-leaf tree with this root; malformed
    proofs, a wrong side label, too many or too few siblings are all False."""
    try:
        if not (isinstance(index, int) and isinstance(n_leaves, int) and 0 <= index < n_leaves):
            return False
        h, i, n, used = _leaf(leaf), index, n_leaves, 0
        while n > 1:
            if i % 2 == 1 or i + 1 < n:
                if used == len(proof_path):
                    return False
                side, sib_hex = proof_path[used]
                sib = bytes.fromhex(sib_hex)
                want = "L" if i % 2 == 1 else "R"
                if len(sib) != 32 or side != want:
                    return False
                h = _node(sib, h) if side == "L" else _node(h, sib)
                used += 1
            i, n = i // 2, (n + 1) // 2
        return used == len(proof_path) and h.hex() == root
    except (ValueError, TypeError):
        return False
