"""RMSNorm, rotary position embedding, token embedding and SwiGLU: the spec (numpy).

Every op below is written as the exact sequence of fp32 operations that every backend performs.
"fma(a, b, c)" is one correctly rounded a*b + c (`fp.fma_ref`); every other arithmetic step is
one correctly rounded fp32 operation; negation is exact. Python scalars (eps) are rounded to
fp32 once, on entry. Rows never influence each other (batch invariance), and every reduction
over rows (weight gradients) is a sequential chain in row order that CONTINUES from the
accumulator it is given, so splitting a batch into micro-batches gives the same bits.

Shapes: N rows (tokens), D features. Inputs must be float32 (no silent conversion); in-place
accumulators must be C-contiguous, writeable float32 arrays of the exact shape.

RMSNorm, per row x[0..D-1]:
    ss = +0.0; for d in 0..D-1: ss = fma(x[d], x[d], ss)
    mean = ss / float32(D);  rstd = 1 / sqrt(mean + eps)        (add, sqrt, divide)
    y[d] = (x[d] * rstd) * w[d]
RMSNorm backward, per row (xhat[d] = x[d] * rstd, exactly as in forward):
    dxhat[d] = dy[d] * w[d]
    dot = +0.0; for d in 0..D-1: dot = fma(dxhat[d], xhat[d], dot)
    c = dot / float32(D)
    dx[d] = rstd * fma(-xhat[d], c, dxhat[d])                  i.e. rstd * (dxhat - xhat*c)
    weight gradient: for n in 0..N-1 (in order): dw_acc[d] = fma(dy[n,d], xhat[n,d], dw_acc[d])

Rotary embedding ("rotate_half" convention of HF Llama: dimension i pairs with i + Dh/2).
Layout: x is (T, H, Dh) or (B, T, H, Dh) -- tokens first, heads second, which is the plain
reshape of a (tokens, H*Dh) projection output. cos/sin are (T, Dh/2), one row per token
(rope_tables(positions)); with a 4-D x every batch row uses the same T rows of the tables
(to give each sequence its own positions, flatten to 3-D with T = B*S and per-token positions).
With h = Dh/2, c = cos[t, i], s = sin[t, i], for i in 0..h-1:
    y[i]     = fma(x[i],     c, -(x[i + h] * s))             = x1*c - x2*s
    y[i + h] = fma(x[i + h], c,   x[i]     * s )             = x2*c + x1*s
Backward (the transpose rotation) is the same with s -> -s, bit for bit:
    dx[i]     = fma(dy[i],     c,   dy[i + h] * s )          = dy1*c + dy2*s
    dx[i + h] = fma(dy[i + h], c, -(dy[i]     * s))          = dy2*c - dy1*s
Tables: inv_freq[i] = exp(-((float32(2i) / float32(Dh)) * log(float32(theta)))) (divide,
multiply, negate, with repro's own exp/log); angle[t, i] = float32(position[t]) * inv_freq[i]
(one multiply); cos/sin = repro's own cos/sin of the angle. Positions 0..2**20 (the range of
repro's sin/cos; every angle is at most the position, as inv_freq[i] <= inv_freq[0] = 1).

Embedding: y[n, :] = table[ids[n], :] (a copy). Backward, for n in 0..N-1 in order:
    dtable_acc[ids[n], d] = dtable_acc[ids[n], d] + dy[n, d]     (plain fp32 add)

SwiGLU, elementwise (g = gate, u = up, silu/sigmoid are repro's own):
    h = silu(g) * u
    backward: s = sigmoid(g)
              dsilu = s * fma(g, 1 - s, 1)                      i.e. s * (1 + g*(1 - s))
              dgate = (dh * u) * dsilu
              dup   = dh * silu(g)
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.fp import fma_ref
from bitswarm.repro.reference.transcendental import cos, exp, log, sigmoid, silu, sin

F32 = np.float32
ZERO = F32(0.0)
ONE = F32(1.0)


# ---------------------------------------------------------------------------------------------
# argument checks (shared with kernels.cpu.layers)


def _f32(x, name: str, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _acc(x, name: str, shape: tuple) -> np.ndarray:
    """An accumulator updated in place: exactly float32, C-contiguous, writeable, right shape."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"{name} must be a float32 numpy array (updated in place)")
    if x.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {x.shape}")
    if not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable (it is updated in place)")
    return x


def _same_shape(name: str, a: np.ndarray, ref: np.ndarray) -> None:
    if a.shape != ref.shape:
        raise ValueError(f"{name} must have shape {ref.shape}, got {a.shape}")


def _eps(eps) -> np.float32:
    return F32(eps)


def _check_rmsnorm(x, w):
    x = _f32(x, "x", 2)
    w = _f32(w, "w", 1)
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"w has {w.shape[0]} features, x has {x.shape[1]}")
    return x, w


def _check_rmsnorm_bwd(dy, x, w, rstd):
    x, w = _check_rmsnorm(x, w)
    dy = _f32(dy, "dy", 2)
    _same_shape("dy", dy, x)
    rstd = _f32(rstd, "rstd", 1)
    if rstd.shape[0] != x.shape[0]:
        raise ValueError(f"rstd must have shape ({x.shape[0]},), got {rstd.shape}")
    return dy, x, w, rstd


def _check_rope(x, cos_t, sin_t, name: str = "x"):
    """Returns x viewed as (B, T, H, Dh), the tables, and the caller's shape."""
    x = _f32(x, name)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be (T, H, Dh) or (B, T, H, Dh), got shape {x.shape}")
    shape = x.shape
    x4 = x if x.ndim == 4 else x[None]
    t, dh = x4.shape[1], x4.shape[3]
    if dh % 2:
        raise ValueError(f"head_dim must be even, got {dh}")
    cos_t = _f32(cos_t, "cos", 2)
    sin_t = _f32(sin_t, "sin", 2)
    if cos_t.shape != (t, dh // 2) or sin_t.shape != (t, dh // 2):
        raise ValueError(
            f"cos/sin must be ({t}, {dh // 2}) for {name} of shape {shape}, got {cos_t.shape}, {sin_t.shape}"
        )
    return x4, cos_t, sin_t, shape


def _check_ids(ids, vocab: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be an integer array, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"ids must be 1-D (N,), got shape {arr.shape}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())  # Python ints: no overflow for any dtype
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise IndexError(f"token id {bad} is outside the vocabulary of {vocab} (valid: 0..{vocab - 1})")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_embedding_bwd(ids, dy, dtable_acc):
    """Checked (ids, dy) for a scatter-add into dtable_acc (V, D), which is updated in place."""
    if not isinstance(dtable_acc, np.ndarray) or dtable_acc.ndim != 2:
        raise ValueError("dtable_acc must be a 2-D float32 numpy array (updated in place)")
    _acc(dtable_acc, "dtable_acc", dtable_acc.shape)
    v, d = dtable_acc.shape
    ids = _check_ids(ids, v)
    dy = _f32(dy, "dy", 2)
    if dy.shape != (ids.shape[0], d):
        raise ValueError(f"dy must have shape ({ids.shape[0]}, {d}), got {dy.shape}")
    return ids, dy


def _check_swiglu(gate, up):
    gate = _f32(gate, "gate")
    up = _f32(up, "up")
    _same_shape("up", up, gate)
    return gate, up


# ---------------------------------------------------------------------------------------------
# RMSNorm


def rmsnorm_fwd(x, w, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """y = x * rstd * w per row, and rstd (N,) for the backward pass. Order: module docstring."""
    x, w = _check_rmsnorm(x, w)
    n, d = x.shape
    ss = np.zeros(n, np.float32)
    for j in range(d):
        ss = fma_ref(x[:, j], x[:, j], ss)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        mean = ss / F32(d)
        rstd = ONE / np.sqrt(mean + _eps(eps))
        y = (x * rstd[:, None]) * w[None, :]
    return y.astype(np.float32, copy=False), rstd.astype(np.float32, copy=False)


def rmsnorm_bwd(dy, x, w, rstd, dw_acc) -> np.ndarray:
    """dx for y = rmsnorm(x) * w; adds this batch's weight gradient into dw_acc (D,) in place.

    rstd is the forward's second output. Order: module docstring.
    """
    dy, x, w, rstd = _check_rmsnorm_bwd(dy, x, w, rstd)
    n, d = x.shape
    _acc(dw_acc, "dw_acc", (d,))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        xhat = x * rstd[:, None]
        dxhat = dy * w[None, :]
        dot = np.zeros(n, np.float32)
        for j in range(d):
            dot = fma_ref(dxhat[:, j], xhat[:, j], dot)
        c = dot / F32(d)
        dx = rstd[:, None] * fma_ref(-xhat, c[:, None], dxhat)
        acc = dw_acc.copy()
        for i in range(n):
            acc = fma_ref(dy[i], xhat[i], acc)
    dw_acc[...] = acc
    return dx.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# rotary position embedding


def rope_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """inv_freq[i] = exp(-((float32(2i) / float32(head_dim)) * log(float32(theta)))), (head_dim/2,)."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number, got {head_dim}")
    if not theta > 0:
        raise ValueError(f"theta must be positive, got {theta}")
    log_theta = log(np.array([theta], np.float32))[0]
    e = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / F32(head_dim)
    return exp(-(e * log_theta)).astype(np.float32, copy=False)


def rope_tables(positions, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin tables (T, head_dim/2) for integer positions (T,). Order: module docstring.

    Tiny, so every backend uses this one (numpy) implementation.
    """
    pos = np.asarray(positions)
    if pos.dtype.kind not in "iu" or pos.ndim != 1:
        raise TypeError(f"positions must be a 1-D integer array, got {pos.dtype} with shape {pos.shape}")
    if pos.size and int(pos.min()) < 0:
        raise ValueError("positions must be non-negative")
    if pos.size and int(pos.max()) > 2**20:
        raise ValueError("positions must be at most 2**20 (the range of repro's sin/cos)")
    inv_freq = rope_inv_freq(head_dim, theta)
    angle = pos.astype(np.float32)[:, None] * inv_freq[None, :]
    return cos(angle).astype(np.float32, copy=False), sin(angle).astype(np.float32, copy=False)


def _rotate(x4: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    h = x4.shape[3] // 2
    x1 = x4[..., :h]
    x2 = x4[..., h:]
    c = c[None, :, None, :]
    s = s[None, :, None, :]
    y = np.empty_like(x4)
    with np.errstate(over="ignore", invalid="ignore"):
        y[..., :h] = fma_ref(x1, c, -(x2 * s))
        y[..., h:] = fma_ref(x2, c, x1 * s)
    return y


def rope_fwd(x, cos, sin) -> np.ndarray:  # noqa: A002 - names of the tables
    """Rotate x (T, H, Dh) or (B, T, H, Dh) by the tables (T, Dh/2). Order: module docstring."""
    x4, c, s, shape = _check_rope(x, cos, sin)
    return _rotate(x4, c, s).reshape(shape)


def rope_bwd(dy, cos, sin) -> np.ndarray:  # noqa: A002
    """Gradient of rope_fwd: the inverse (transpose) rotation of dy."""
    d4, c, s, shape = _check_rope(dy, cos, sin, "dy")
    return _rotate(d4, c, -s).reshape(shape)


# ---------------------------------------------------------------------------------------------
# token embedding


def embedding_fwd(ids, table) -> np.ndarray:
    """table[ids] as a new (N, D) array; ids (N,) integers in 0..V-1 (IndexError otherwise)."""
    table = _f32(table, "table", 2)
    ids = _check_ids(ids, table.shape[0])
    return table[ids]


def embedding_bwd(ids, dy, dtable_acc) -> None:
    """dtable_acc[ids[n], :] += dy[n, :] for n in order, in place (plain fp32 adds)."""
    ids, dy = _check_embedding_bwd(ids, dy, dtable_acc)
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(ids.shape[0]):
            r = ids[n]
            dtable_acc[r] = dtable_acc[r] + dy[n]


# ---------------------------------------------------------------------------------------------
# SwiGLU


def swiglu_fwd(gate, up) -> np.ndarray:
    """h = silu(gate) * up, elementwise (any shape)."""
    gate, up = _check_swiglu(gate, up)
    with np.errstate(over="ignore", invalid="ignore"):
        return (silu(gate) * up).astype(np.float32, copy=False)


def swiglu_bwd(dh, gate, up) -> tuple[np.ndarray, np.ndarray]:
    """(dgate, dup) for h = silu(gate) * up. Order: module docstring."""
    gate, up = _check_swiglu(gate, up)
    dh = _f32(dh, "dh")
    _same_shape("dh", dh, gate)
    with np.errstate(over="ignore", invalid="ignore"):
        s = sigmoid(gate)
        dsilu = s * fma_ref(gate, ONE - s, ONE)
        dgate = (dh * up) * dsilu
        dup = dh * silu(gate)
    return dgate.astype(np.float32, copy=False), dup.astype(np.float32, copy=False)
