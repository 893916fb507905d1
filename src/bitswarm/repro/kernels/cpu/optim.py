"""numba kernels for the gradient norm, gradient scaling and AdamW.

Bit-identical to `bitswarm.repro.reference.optim`, whose docstring is the spec. The global
norm keeps LANES fma chains per gradient (a single thread, the lanes vectorized); scaling and
AdamW are elementwise and run in parallel over elements. The scalar helpers (clip_scale,
advance_pows, the AdamW coefficients) are the reference's own.
"""

from __future__ import annotations

import numba
import numpy as np

from bitswarm.repro.kernels.cpu.dispatch import kernel
from bitswarm.repro.fp import fma32
from bitswarm.repro.reference.optim import (
    LANES,
    _check_adamw,
    _grad_list,
    _inplace,
    adamw_coeffs,
    advance_pows,
    clip_scale,
)

__all__ = ["adamw_step_", "advance_pows", "clip_scale", "global_grad_norm_sq", "scale_grads_"]

F32 = np.float32
ONE = np.float32(1.0)


@numba.njit
def _sq_lanes(x):
    """The lane sum t of one flattened gradient: s[i % LANES] = fma(x[i], x[i], s[i % LANES]),
    then t = +0 + s[0] + ... + s[LANES-1] in lane order (no fastmath: the adds stay in order)."""
    s = np.zeros(LANES, np.float32)
    n = x.shape[0]
    full = n - n % LANES
    for base in range(0, full, LANES):
        for l in range(LANES):  # contiguous lanes, independent chains: vectorizes
            v = x[base + l]
            s[l] = fma32(v, v, s[l])
    for l in range(n - full):
        v = x[full + l]
        s[l] = fma32(v, v, s[l])
    t = np.float32(0.0)
    for l in range(LANES):
        t = t + s[l]
    return t


@kernel
def _scale(x, s):
    for k in numba.prange(x.shape[0]):
        x[k] = x[k] * s


@kernel
def _adamw(p, g, m, v, b1, b2, eps, decay, omb1, omb2, bc1, bc2, neg_lr):
    for k in numba.prange(p.shape[0]):
        gk = g[k]
        pk = p[k] * decay
        mk = fma32(b1, m[k], omb1 * gk)
        vk = fma32(b2, v[k], (omb2 * gk) * gk)
        mhat = mk / bc1
        vhat = vk / bc2
        denom = np.sqrt(vhat) + eps
        p[k] = fma32(neg_lr, mhat / denom, pk)
        m[k] = mk
        v[k] = vk


def global_grad_norm_sq(grads) -> np.float32:
    norm_sq = F32(0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        for g in _grad_list(grads):
            norm_sq = F32(norm_sq + F32(_sq_lanes(np.ascontiguousarray(g).reshape(-1))))
    return norm_sq


def scale_grads_(grads, scale) -> None:
    scale = F32(scale)
    gs = [_inplace(g, f"grads[{k}]") for k, g in enumerate(grads)]
    if scale == ONE:
        return
    for g in gs:
        _scale(g.size, g.reshape(-1), scale)


def adamw_step_(param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, beta1_pow, beta2_pow) -> None:
    g = _check_adamw(param, grad, m, v)
    coeffs = adamw_coeffs(
        lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
        beta1_pow=beta1_pow, beta2_pow=beta2_pow,
    )
    _adamw(param.size, param.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), *coeffs)
