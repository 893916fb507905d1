"""numba GRPO token loss, bit-identical to reference.grpo (order documented there)."""

from __future__ import annotations

import numba
import numpy as np

from bitswarm.repro.kernels.cpu.dispatch import kernel
from bitswarm.repro.kernels.cpu.transcendental import exp32

ZERO = np.float32(0.0)
ONE = np.float32(1.0)


@kernel
def _grpo(logp, logp_old, adv, w, lo, hi, loss, dlogp):
    for i in numba.prange(logp.size):
        r = exp32(logp[i] - logp_old[i])
        c = lo if r < lo else r
        c = hi if c > hi else c
        ra = r * adv[i]
        ca = c * adv[i]
        if ra <= ca:
            loss[i] = -ra * w[i]
            dlogp[i] = -(adv[i] * r) * w[i]
        else:
            loss[i] = -ca * w[i]
            dlogp[i] = ZERO


def grpo_token_loss(logp, logp_old, adv, w, clip_low, clip_high):
    arrs = [np.ascontiguousarray(a, dtype=np.float32) for a in (logp, logp_old, adv, w)]
    shape = arrs[0].shape
    flat = [a.reshape(-1) for a in arrs]
    loss, dlogp = np.empty(flat[0].size, np.float32), np.empty(flat[0].size, np.float32)
    lo, hi = ONE - np.float32(clip_low), ONE + np.float32(clip_high)
    _grpo(flat[0].size, *flat, lo, hi, loss, dlogp)
    return loss.reshape(shape), dlogp.reshape(shape)
