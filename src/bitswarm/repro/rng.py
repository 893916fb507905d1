"""Counter-based randomness: Philox4x32-10 on integers, floats from bits in one fixed way.

Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
SC 2011; the Random123 library) maps a 128-bit counter and a 64-bit key to 128 random bits
with integer operations only, so every device computes the same bits. One round, on 32-bit
words (c0, c1, c2, c3) with key (k0, k1)::

    hi0:lo0 = 0xD2511F53 * c0        (32x32 -> 64-bit product)
    hi1:lo1 = 0xCD9E8D57 * c2
    (c0, c1, c2, c3) <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)

Ten rounds; before rounds 2..10 the key is bumped: k0 += 0x9E3779B9, k1 += 0xBB67AE85
(mod 2**32). The output is the four words after round 10, in that order.

Stream layout (every implementation -- numpy, numba, a triton kernel -- must follow it)
-----------------------------------------------------------------------------------
key      = (seed & 0xffffffff, (seed >> 32) & 0xffffffff)       for 0 <= seed < 2**64
counter  = (index & 0xffffffff, (index >> 32) & 0xffffffff, stream, purpose)
           index   : 64-bit block index (0 <= index < 2**64)
           stream  : 32-bit stream id (a request id, a layer id, ...)
           purpose : 32-bit tag that separates uses of the same (seed, stream); see PURPOSE_*

A *word stream* (seed, stream, purpose) is the sequence of uint32 words w[0], w[1], ...;
word j is word (j & 3) of philox4x32(counter(j >> 2, stream, purpose), key(seed)).

Derived values
--------------
uniform(bits)   = float32(bits >> 8) * 2**-24       (both steps exact: 24 bits, in [0, 1),
                                                      largest value 1 - 2**-24)
token sampling  : u = uniform(word 0 of philox4x32(counter(token_index, request_id,
                  PURPOSE_SAMPLE), key(seed))) -- i.e. word 4 * token_index of the stream
                  (seed, request_id, PURPOSE_SAMPLE); words 1..3 of that block are reserved.
                  A token depends only on (seed, request_id, token_index) and its row's
                  probabilities (see reference/sampling.py), never on batch or thread count.
uniforms        : element j (j counted from 0 at the start of the stream, offset included)
                  = uniform(w[j]) of the stream (seed, stream, PURPOSE_UNIFORM).
integers in [0, high), 1 <= high <= 2**32:
                  element j uses x = w[2j] * 2**32 + w[2j + 1] (a 64-bit number) of the
                  stream (seed, stream, PURPOSE_INTEGER) and returns floor(x * high / 2**64)
                  (Lemire's multiply-shift on 64 bits, no rejection, so every element sits at
                  a fixed place in the stream). Computed exactly as
                  ((w[2j] * high) + ((w[2j+1] * high) >> 32)) >> 32 in uint64 (no overflow).
                  Each value's probability is off from 1/high by less than high / 2**64
                  (relative bias < 2**-32): documented, and negligible for any use here.

Purpose tags: PURPOSE_SAMPLE = 1, PURPOSE_UNIFORM = 2, PURPOSE_INTEGER = 3. Other subsystems
add their own constants here (>= 16), never reusing a value. Normal deviates are not provided
(Box-Muller needs log/cos; add them once repro has its own transcendentals).
"""

from __future__ import annotations

import numbers

import numpy as np
from numba import njit

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10

PURPOSE_SAMPLE = 1
PURPOSE_UNIFORM = 2
PURPOSE_INTEGER = 3

U32_MAX = 0xFFFFFFFF
_U64_32 = np.uint64(32)
_MASK = np.uint64(U32_MAX)
_M0 = np.uint64(PHILOX_M0)
_M1 = np.uint64(PHILOX_M1)
_W0 = np.uint64(PHILOX_W0)
_W1 = np.uint64(PHILOX_W1)
_U_SCALE = np.float32(2.0**-24)


# ---------------------------------------------------------------------------------------------
# Philox4x32-10
# ---------------------------------------------------------------------------------------------


def philox4x32(counter, key) -> np.ndarray:
    """Philox4x32-10, vectorized: uint32 counters (..., 4) and keys (..., 2) -> uint32 (..., 4).

    The leading shapes broadcast against each other.
    """
    c = np.asarray(counter)
    k = np.asarray(key)
    if c.dtype != np.uint32 or k.dtype != np.uint32:
        raise TypeError(f"counter and key must be uint32, got {c.dtype} and {k.dtype}")
    if c.ndim < 1 or c.shape[-1] != 4:
        raise ValueError(f"counter must have shape (..., 4), got {c.shape}")
    if k.ndim < 1 or k.shape[-1] != 2:
        raise ValueError(f"key must have shape (..., 2), got {k.shape}")
    x0, x1, x2, x3 = (c[..., i].astype(np.uint64) for i in range(4))
    k0, k1 = (k[..., i].astype(np.uint64) for i in range(2))
    for r in range(PHILOX_ROUNDS):
        if r:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = x0 * _M0  # < 2**64: exact in uint64
        p1 = x2 * _M1
        x0, x1, x2, x3 = (p1 >> _U64_32) ^ x1 ^ k0, p1 & _MASK, (p0 >> _U64_32) ^ x3 ^ k1, p0 & _MASK
    return np.stack(np.broadcast_arrays(x0, x1, x2, x3), axis=-1).astype(np.uint32)


@njit(cache=True)
def philox4x32_nb(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 inside numba code: six integers (each < 2**32) -> a 4-tuple of uint32.

    Bit-identical to `philox4x32`. All arithmetic is in uint64 with explicit masks (numba mixes
    signed and unsigned 64-bit integers into float64, so no plain int literal meets a uint64).
    """
    x0 = np.uint64(c0) & _MASK
    x1 = np.uint64(c1) & _MASK
    x2 = np.uint64(c2) & _MASK
    x3 = np.uint64(c3) & _MASK
    y0 = np.uint64(k0) & _MASK
    y1 = np.uint64(k1) & _MASK
    for r in range(PHILOX_ROUNDS):
        if r > 0:
            y0 = (y0 + _W0) & _MASK
            y1 = (y1 + _W1) & _MASK
        p0 = x0 * _M0
        p1 = x2 * _M1
        n0 = (p1 >> _U64_32) ^ x1 ^ y0
        n1 = p1 & _MASK
        n2 = (p0 >> _U64_32) ^ x3 ^ y1
        n3 = p0 & _MASK
        x0, x1, x2, x3 = n0, n1, n2, n3
    return np.uint32(x0), np.uint32(x1), np.uint32(x2), np.uint32(x3)


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------


def _check_uint(value, bits: int, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if not 0 <= v < 2**bits:
        raise ValueError(f"{name} must be in [0, 2**{bits}), got {v}")
    return v


def _check_uint_array(values, bits: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.size:
        if arr.dtype.kind == "i" and int(arr.min()) < 0:
            raise ValueError(f"{name} must be in [0, 2**{bits}), got {int(arr.min())}")
        if int(arr.max()) >= 2**bits:
            raise ValueError(f"{name} must be in [0, 2**{bits}), got {int(arr.max())}")
    return arr.astype(np.uint64)


def key_for(seed) -> np.ndarray:
    """The Philox key of a 64-bit seed: uint32 [seed & 0xffffffff, seed >> 32]."""
    s = _check_uint(seed, 64, "seed")
    return np.array([s & U32_MAX, s >> 32], dtype=np.uint32)


def counter_for(index, stream, purpose) -> np.ndarray:
    """The Philox counter of one block: uint32 [index lo, index hi, stream, purpose]."""
    i = _check_uint(index, 64, "index")
    st = _check_uint(stream, 32, "stream")
    pu = _check_uint(purpose, 32, "purpose")
    return np.array([i & U32_MAX, i >> 32, st, pu], dtype=np.uint32)


def _counters(index_u64: np.ndarray, stream, purpose) -> np.ndarray:
    """Counters for an array of uint64 block indices, with stream/purpose scalars or arrays."""
    index_u64, stream, purpose = np.broadcast_arrays(
        index_u64, np.asarray(stream, np.uint64), np.asarray(purpose, np.uint64)
    )
    out = np.empty(index_u64.shape + (4,), dtype=np.uint32)
    out[..., 0] = index_u64 & _MASK
    out[..., 1] = index_u64 >> _U64_32
    out[..., 2] = stream
    out[..., 3] = purpose
    return out


def uniform(bits) -> np.ndarray:
    """uint32 bits -> float32 in [0, 1): (bits >> 8) * 2**-24, exact (the one float mapping)."""
    b = np.asarray(bits)
    if b.dtype != np.uint32:
        raise TypeError(f"bits must be uint32, got {b.dtype}")
    return (b >> np.uint32(8)).astype(np.float32) * _U_SCALE


@njit(cache=True)
def uniform_nb(bits):
    """`uniform` on one uint32 inside numba code."""
    return np.float32(np.uint32(bits) >> np.uint32(8)) * np.float32(2.0**-24)


# ---------------------------------------------------------------------------------------------
# token sampling
# ---------------------------------------------------------------------------------------------


def sample_uniform(seed, request_id, token_index) -> np.float32:
    """The uniform that picks token `token_index` of request `request_id` under `seed`."""
    key = key_for(seed)
    ctr = counter_for(token_index, _check_uint(request_id, 32, "request_id"), PURPOSE_SAMPLE)
    return uniform(philox4x32(ctr, key)[0])[()]


def sample_uniforms(seed, request_ids, token_indices) -> np.ndarray:
    """`sample_uniform` for a batch: request_ids (< 2**32) and token_indices (< 2**64) broadcast.

    Element b depends only on (seed, request_ids[b], token_indices[b]).
    """
    key = key_for(seed)
    rid = _check_uint_array(request_ids, 32, "request_ids")
    tix = _check_uint_array(token_indices, 64, "token_indices")
    ctr = _counters(tix, rid, PURPOSE_SAMPLE)
    return uniform(philox4x32(ctr, key)[..., 0])


@njit(cache=True)
def sample_uniform_nb(k0, k1, request_id, token_index):
    """`sample_uniform` inside numba code, from the key words (k0, k1) = key_for(seed).

    Pass token_index as uint64 (or an int64 below 2**63); from Python, np.uint64(t).
    """
    t = np.uint64(token_index)
    w = philox4x32_nb(t & _MASK, t >> _U64_32, request_id, PURPOSE_SAMPLE, k0, k1)
    return uniform_nb(w[0])


# ---------------------------------------------------------------------------------------------
# general streams
# ---------------------------------------------------------------------------------------------


def random_words(seed, stream, n, *, purpose, offset=0) -> np.ndarray:
    """Words offset .. offset+n-1 of the word stream (seed, stream, purpose), as uint32 (n,)."""
    key = key_for(seed)
    st = _check_uint(stream, 32, "stream")
    pu = _check_uint(purpose, 32, "purpose")
    n = _check_uint(n, 64, "n")
    off = _check_uint(offset, 64, "offset")
    if off + n > 2**64:
        raise ValueError(f"offset + n must be <= 2**64, got {off + n}")
    if n == 0:
        return np.empty(0, dtype=np.uint32)
    first, last = off >> 2, (off + n - 1) >> 2
    blocks = np.arange(last - first + 1, dtype=np.uint64) + np.uint64(first)
    words = philox4x32(_counters(blocks, st, pu), key).reshape(-1)
    start = off & 3
    return words[start : start + n].copy()


def uniforms(seed, stream, n, *, offset=0, purpose=PURPOSE_UNIFORM) -> np.ndarray:
    """n float32 uniforms in [0, 1): elements offset .. offset+n-1 of the stream."""
    return uniform(random_words(seed, stream, n, purpose=purpose, offset=offset))


def integers(seed, stream, n, high, *, offset=0, purpose=PURPOSE_INTEGER) -> np.ndarray:
    """n integers in [0, high) as int64: elements offset .. offset+n-1 of the stream.

    1 <= high <= 2**32; element j uses words 2j and 2j+1 (see the module docstring).
    """
    if isinstance(high, (bool, np.bool_)) or not isinstance(high, numbers.Integral):
        raise TypeError(f"high must be an integer, got {type(high).__name__}")
    if not 1 <= int(high) <= 2**32:
        raise ValueError(f"high must be in [1, 2**32], got {int(high)}")
    n = _check_uint(n, 63, "n")
    off = _check_uint(offset, 63, "offset")
    w = random_words(seed, stream, 2 * n, purpose=purpose, offset=2 * off).astype(np.uint64)
    h = np.uint64(int(high))
    hi, lo = w[0::2], w[1::2]
    return ((hi * h + ((lo * h) >> _U64_32)) >> _U64_32).astype(np.int64)
