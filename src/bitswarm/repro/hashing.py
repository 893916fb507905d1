"""Canonical hashes of tensors and training states (DESIGN rule 7, as changed in architecture.md).

tensor hash = BLAKE3( b"bitswarm-tensor-v2\\0" | dtype name (ASCII) | b"\\0" | u32 ndim |
                      u64 per dimension | the elements' little-endian bytes in C order ), 32 bytes
All integers little-endian. A state hash is sha256 over b"bitswarm-state-v2\\0", u64 step, then
for each entry in the order the caller gives (canonical: sorted names): u32 name length,
UTF-8 name, and the entry's 32-byte tensor hash.

Why BLAKE3 for tensors (v1 was sha256): a SmolLM2-135M state is 1.6 GB and is hashed after every
step; sha256 ran at ~0.7-1.5 GB/s per core here, BLAKE3 at ~2.3-3 GB/s per core and in
parallel within one tensor (its tree mode), so the per-step commitment falls from ~15% of a
step to a few percent. BLAKE3 is a fixed, portable function: the same bytes give the same
digest on every machine and thread count. The small combinations (state hash, Merkle roots,
which the contracts recompute) stay sha256.

Every float32 NaN is hashed as the canonical 0x7FC00000 (`repro.nan`), so values computed by
numpy glue between ops hash alike on every device. State entries skip that scan: they are written
only by ops, which already canonicalize, or loaded as bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

import blake3
import numpy as np

_PARALLEL_BYTES = 8 << 20  # a tensor this large is hashed on several threads (BLAKE3's tree)
TENSOR_DOMAIN = b"bitswarm-tensor-v2\x00"
STATE_DOMAIN = b"bitswarm-state-v2\x00"
_ALLOWED = {np.dtype(t) for t in ("float32", "int64", "int32", "uint32", "uint64", "uint8", "bool")}


def tensor_digest(x: np.ndarray, canonical_nan: bool = True) -> bytes:
    arr = np.asarray(x)
    if arr.dtype not in _ALLOWED:
        raise TypeError(f"cannot hash dtype {arr.dtype}; allowed: {sorted(str(d) for d in _ALLOWED)}")
    if canonical_nan and arr.dtype == np.float32 and arr.size and np.isnan(arr).any():
        from bitswarm.repro.nan import QNAN

        arr = np.where(np.isnan(arr), QNAN, arr)
    big = arr.nbytes >= _PARALLEL_BYTES
    h = blake3.blake3(TENSOR_DOMAIN, max_threads=blake3.blake3.AUTO if big else 1)
    h.update(arr.dtype.name.encode("ascii") + b"\x00")
    h.update(struct.pack("<I", arr.ndim) + b"".join(struct.pack("<Q", d) for d in arr.shape))
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    h.update(memoryview(data.reshape(-1).view(np.uint8)) if data.size else b"")  # no copy
    return h.digest()


def tensor_hash(x: np.ndarray) -> str:
    return tensor_digest(x).hex()


def state_hash(step: int, entries: Iterable[tuple[str, np.ndarray]]) -> str:
    """The tensors are hashed on several threads (hashlib releases the GIL on large inputs);
    the combination is sequential in the given order, so the result never depends on that."""
    entries = list(entries)
    digests = _pool().map(lambda arr: tensor_digest(arr, canonical_nan=False), [arr for _, arr in entries])
    h = hashlib.sha256(STATE_DOMAIN + struct.pack("<Q", step))
    for (name, _), digest in zip(entries, digests):
        raw = name.encode("utf-8")
        h.update(struct.pack("<I", len(raw)) + raw + digest)
    return h.hexdigest()


_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="repro-hash")
        os.register_at_fork(after_in_child=_forget_pool)  # a forked child has no pool threads
    return _POOL


def _forget_pool():
    global _POOL
    _POOL = None


def merkle_root(leaves_hex: list[str]) -> str:
    """Merkle root over hex digests: leaf = H(0x00 | x), node = H(0x01 | left | right).

    A level with an odd count carries its last node up unchanged. An empty list has the root
    H(0x00) of no data, so "no steps" still has a well-defined commitment.
    """
    if not leaves_hex:
        return hashlib.sha256(b"\x00").hexdigest()
    level = [hashlib.sha256(b"\x00" + bytes.fromhex(x)).digest() for x in leaves_hex]
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()
