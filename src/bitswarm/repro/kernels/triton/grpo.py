"""The GRPO token loss in triton, bit-identical to reference.grpo (whose docstring is the spec).

Tokens are independent: one program per BLOCK of tokens, each line of the spec one fp32
operation on the block, in the spec's order.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.kernels.triton import runtime  # noqa: F401 - sets up the interpreter first
from bitswarm.repro.kernels.triton.runtime import LAUNCH, empty, to_device, to_host

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from bitswarm.repro.kernels.triton.transcendental import exp32  # noqa: E402

__all__ = ["grpo_token_loss"]

ONE = np.float32(1.0)
BLOCK = 1024


@triton.jit
def _grpo_kernel(logp_ptr, old_ptr, adv_ptr, w_ptr, lo, hi, loss_ptr, dlogp_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n
    logp = tl.load(logp_ptr + offs, mask=live, other=0.0)
    old = tl.load(old_ptr + offs, mask=live, other=0.0)
    adv = tl.load(adv_ptr + offs, mask=live, other=0.0)
    w = tl.load(w_ptr + offs, mask=live, other=0.0)
    r = exp32(logp - old)
    c = tl.where(r < lo, lo, r)
    c = tl.where(c > hi, hi, c)
    ra = r * adv
    ca = c * adv
    unclipped = ra <= ca
    loss = -tl.where(unclipped, ra, ca) * w
    dlogp = tl.where(unclipped, -(adv * r) * w, 0.0)
    tl.store(loss_ptr + offs, loss, mask=live)
    tl.store(dlogp_ptr + offs, dlogp, mask=live)


def grpo_token_loss(logp, logp_old, adv, w, clip_low, clip_high):
    """Returns (loss per token, d loss / d logp per token); all inputs float32 of one shape."""
    arrs = [np.ascontiguousarray(a, dtype=np.float32) for a in (logp, logp_old, adv, w)]
    shape = arrs[0].shape
    n = arrs[0].size
    if any(a.size != n for a in arrs):  # the kernel reads every input at the same index
        raise ValueError(f"grpo_token_loss inputs of sizes {[a.size for a in arrs]}")
    # the clip bounds are the reference's two host-side fp32 operations, as in kernels.cpu.grpo
    lo, hi = ONE - np.float32(clip_low), ONE + np.float32(clip_high)
    if n == 0:
        return np.empty(shape, np.float32), np.empty(shape, np.float32)
    loss, dlogp = empty((n,)), empty((n,))
    flat = [to_device(a.reshape(-1)) for a in arrs]
    # float(fp32) is exact, and triton passes a Python float to an fp32 argument
    _grpo_kernel[(triton.cdiv(n, BLOCK),)](*flat, float(lo), float(hi), loss, dlogp, n, BLOCK=BLOCK, **LAUNCH)
    return to_host(loss).reshape(shape), to_host(dlogp).reshape(shape)
