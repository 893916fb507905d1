"""Token sampling, the executable spec: top-p (nucleus) sampling from one uniform, and greedy.

Every kernel (numba, triton) must return the same token as this module for the same inputs.

sample_from_probs(probs, top_p, u), probs float32 (V,), top_p float32 in (0, 1], u float32 in
[0, 1) (from `rng.sample_uniform`), all arithmetic in fp32, round to nearest even:

1. Order the token ids by (probability descending, id ascending): a stable sort on -probs.
2. Walk that order with a sequential fp32 sum, cum = cum + p (from cum = 0), and keep tokens
   up to and including the first one after which cum >= top_p (so at least one token is
   kept). If cum never reaches top_p, every token is kept.
3. total = cum after the last kept token. If total == 0 (every probability is zero), return
   token 0 (the lowest id).
4. target = u * total (one fp32 multiply).
5. Walk the kept tokens again in the same order with c = c + p (the same sums as in step 2)
   and return the first token with target < c.
6. If none qualifies, return the last kept token at which c grew (the token that brought c to
   total). For a normal (>= 2**-126) total this cannot happen, because u <= 1 - 2**-24 makes
   u * total < total in fp32; it is reachable only when total is subnormal.

Consequences: a token with probability 0 is never returned (c does not grow there, so target
< c would already have held at an earlier token) unless all probabilities are zero; neither is
a token whose probability vanished in the rounding of c. A tiny top_p keeps only the first
token of the order, i.e. the argmax with ties going to the lowest id.

Probabilities must be finite and in [0, 1] (-0.0 counts as 0); they need not sum to 1.
Rows of `sample_rows` are computed independently, so a row's token never depends on the batch.

greedy(x), x float32 probabilities or logits (V,) or (B, V): the index of the largest value,
ties to the lowest id; NaN counts as -inf, so an all-NaN/-inf row returns 0.

Wrong dtypes raise TypeError (as `fp.as_f32` does); bad values raise ValueError naming the
argument.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


# ---------------------------------------------------------------------------------------------
# validation (shared with the kernels)
# ---------------------------------------------------------------------------------------------


def check_probs(probs, ndim: int, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs)
    if p.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {p.dtype}")
    if p.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {p.shape}")
    if p.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one token, got shape {p.shape}")
    if p.size:
        if np.isnan(p).any():
            raise ValueError(f"{name} contains NaN")
        if (p < 0).any():
            raise ValueError(f"{name} contains negative values")
        if (p > 1).any():
            raise ValueError(f"{name} contains values above 1 (or inf)")
    return np.ascontiguousarray(p)


def _as_f32_values(x, name: str) -> np.ndarray:
    if isinstance(x, float):  # a Python float is rounded to float32 once, deterministically
        return np.asarray(np.float32(x))
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {arr.dtype}")
    return arr


def _first_bad(a: np.ndarray, ok: np.ndarray):
    return np.asarray(a).ravel()[~np.asarray(ok).ravel()][0]


def check_top_p(top_p, rows: int | None = None) -> np.ndarray:
    """top_p as float32: a scalar, or for `rows` rows a scalar or shape (rows,); in (0, 1]."""
    t = _as_f32_values(top_p, "top_p")
    if rows is None:
        if t.ndim != 0:
            raise ValueError(f"top_p must be a scalar, got shape {t.shape}")
    elif t.ndim != 0 and t.shape != (rows,):
        raise ValueError(f"top_p must be a scalar or have shape ({rows},), got {t.shape}")
    ok = (t > 0) & (t <= 1)  # also refuses NaN
    if not ok.all():
        raise ValueError(f"top_p must be in (0, 1], got {_first_bad(t, ok)}")
    return t if rows is None else np.ascontiguousarray(np.broadcast_to(t, (rows,)))


def check_u(u, rows: int | None = None, name: str = "u") -> np.ndarray:
    """u as float32: a scalar, or shape (rows,); in [0, 1)."""
    a = _as_f32_values(u, name)
    want = () if rows is None else (rows,)
    if a.shape != want:
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    ok = (a >= 0) & (a < 1)  # also refuses NaN
    if not ok.all():
        raise ValueError(f"{name} must be in [0, 1), got {_first_bad(a, ok)}")
    return a if rows is None else np.ascontiguousarray(a)


def check_rows(probs, top_p, us) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked (probs (B, V), top_p (B,), us (B,)) for `sample_rows`."""
    p = check_probs(probs, 2)
    return p, check_top_p(top_p, p.shape[0]), check_u(us, p.shape[0], "us")


def check_scores(x, name: str = "x") -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (V,) or (B, V), got {a.shape}")
    if a.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one token, got shape {a.shape}")
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------------------------


def _sample_row(p: np.ndarray, top_p: np.float32, u: np.float32) -> int:
    order = np.argsort(-p, kind="stable")  # prob descending, ties by id ascending
    ps = p[order]
    cum = np.cumsum(ps, dtype=np.float32)  # sequential: cum[i] = cum[i-1] + ps[i] in fp32
    reached = cum >= top_p
    k = int(np.argmax(reached)) + 1 if reached[-1] else ps.shape[0]  # cum is nondecreasing
    total = cum[k - 1]
    if total == 0:
        return 0
    target = F32(u * total)
    i = int(np.searchsorted(cum[:k], target, side="right"))  # first i with target < cum[i]
    if i == k:
        i = int(np.searchsorted(cum[:k], total, side="left"))  # where c first reached total
    return int(order[i])


def sample_from_probs(probs, top_p, u) -> int:
    """The token for one row: probs float32 (V,), top_p in (0, 1], u in [0, 1)."""
    p = check_probs(probs, 1)
    t = check_top_p(top_p)
    uu = check_u(u)
    return _sample_row(p, t[()], uu[()])


def sample_rows(probs, top_p, us) -> np.ndarray:
    """One token per row: probs float32 (B, V), top_p scalar or (B,), us (B,) -> int64 (B,)."""
    p, t, u = check_rows(probs, top_p, us)
    out = np.empty(p.shape[0], dtype=np.int64)
    for b in range(p.shape[0]):
        out[b] = _sample_row(p[b], t[b], u[b])
    return out


def greedy(x):
    """argmax over the last axis, ties to the lowest id, NaN as -inf: int for (V,), int64 (B,)."""
    a = check_scores(x)
    a = np.where(np.isnan(a), F32(-np.inf), a)
    idx = np.argmax(a, axis=-1)  # first occurrence of the maximum; -0.0 == +0.0
    return int(idx) if a.ndim == 1 else idx.astype(np.int64)
