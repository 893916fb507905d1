"""The GRPO token loss with a clipped ratio (DAPO-style asymmetric clip), the spec (numpy).

Per token with log-probability `logp` under the current policy, `logp_old` under the policy that
generated it, advantage `a` of its sequence, and weight w (1 for tokens that count, 0 for
those that do not; the caller scales by 1/number of loss tokens):
    r = exp(logp - logp_old)
    c = r clamped to [1 - clip_low, 1 + clip_high] by two comparisons (NaN stays NaN)
    loss = -min(r * a, c * a) * w          evaluated as  -(min(r * a, c * a)) * w
    dloss/dlogp = -(a * r) * w   if r * a <= c * a (the unclipped term is the minimum),
                  0              otherwise (the clipped term is constant in logp)
Each line is one correctly rounded fp32 operation per step, in the order written.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.reference.transcendental import exp

F32 = np.float32


def grpo_token_loss(logp, logp_old, adv, w, clip_low, clip_high):
    """Returns (loss per token, d loss / d logp per token); all inputs float32 of one shape."""
    logp, logp_old, adv, w = (np.asarray(a, np.float32) for a in (logp, logp_old, adv, w))
    lo, hi = F32(1) - F32(clip_low), F32(1) + F32(clip_high)
    r = exp(logp - logp_old)
    c = np.where(r < lo, lo, r)
    c = np.where(c > hi, hi, c)
    ra, ca = r * adv, c * adv
    unclipped = ra <= ca
    loss = -np.where(unclipped, ra, ca) * w
    dlogp = np.where(unclipped, -(adv * r) * w, F32(0)).astype(np.float32)
    return loss.astype(np.float32), dlogp
