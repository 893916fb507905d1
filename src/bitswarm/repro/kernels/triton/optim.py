"""Gradient norm, gradient scaling and AdamW in triton, bit-identical to `bitswarm.repro.reference.optim`.

The reference's docstring is the spec. The global norm is ONE sequential fma chain over every
element of every gradient (list order, C order): a single program walks it, the running sum
kept in a one-element device buffer between the gradients. Scaling and AdamW are elementwise
and run in parallel over elements. The scalar ops (clip_scale, advance_pows, the AdamW
coefficients) are the reference's own, as in the numba module.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.kernels.triton import runtime  # noqa: F401 - sets up the interpreter first
from bitswarm.repro.kernels.triton.runtime import LAUNCH, in_place, to_device, to_host, write_back

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# Host-side scalar ops and argument checks taken from the reference, as kernels.cpu.optim does.
from bitswarm.repro.reference.optim import (  # noqa: E402
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
CHAIN_BLOCK = 32  # elements loaded ahead of the chain per step (unrolled: loads overlap the fmas)
BLOCK = 1024  # elements per program in the elementwise kernels


@triton.jit
def _sq_chain_kernel(x_ptr, ss_ptr, n, CHAIN: tl.constexpr):
    """ss = fma(x, x, ss) for every element of x in order, continuing from ss_ptr[0]."""
    ss = tl.load(ss_ptr)
    for base in range(0, n, CHAIN):
        for j in tl.static_range(CHAIN):
            # Past the end x = 0: fma(0, 0, ss) = ss, since ss is never -0 (it starts at +0 and
            # only ever adds squares, which are >= +0). `j < n - base` cannot overflow.
            x = tl.load(x_ptr + base + j, mask=j < n - base, other=0.0)
            ss = tl.fma(x, x, ss)
    tl.store(ss_ptr, ss)


@triton.jit
def _scale_kernel(x_ptr, s, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(x_ptr + offs, x * s, mask=mask)


@triton.jit
def _adamw_kernel(p_ptr, g_ptr, m_ptr, v_ptr, n, b1, b2, eps, decay, omb1, omb2, bc1, bc2, neg_lr,
                  BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask)
    p = tl.load(p_ptr + offs, mask=mask) * decay
    m = tl.fma(b1, tl.load(m_ptr + offs, mask=mask), omb1 * g)
    v = tl.fma(b2, tl.load(v_ptr + offs, mask=mask), (omb2 * g) * g)
    mhat = tl.math.div_rn(m, bc1)
    vhat = tl.math.div_rn(v, bc2)
    denom = tl.math.sqrt_rn(vhat) + eps
    p = tl.fma(neg_lr, tl.math.div_rn(mhat, denom), p)
    tl.store(p_ptr + offs, p, mask=mask)
    tl.store(m_ptr + offs, m, mask=mask)
    tl.store(v_ptr + offs, v, mask=mask)


def global_grad_norm_sq(grads) -> np.float32:
    """Sum of squares of all gradient elements as ONE fma chain, in list order, C order."""
    gs = _grad_list(grads)
    ss = to_device(np.zeros(1, F32))
    for g in gs:
        if g.size == 0:
            continue
        x = to_device(g.reshape(-1))  # C order of the view, as the reference's ravel
        with np.errstate(all="ignore"):  # the interpreter's numpy would warn about inf and NaN
            _sq_chain_kernel[(1,)](x, ss, g.size, CHAIN=CHAIN_BLOCK, **LAUNCH)
    return F32(to_host(ss)[0])


def scale_grads_(grads, scale) -> None:
    """g = g * scale for every gradient, in place; no-op when scale == 1."""
    scale = F32(scale)
    gs = [_inplace(g, f"grads[{k}]") for k, g in enumerate(grads)]
    if scale == ONE:
        return
    for g in gs:
        if g.size == 0:
            continue
        t = in_place(g)
        with np.errstate(all="ignore"):
            _scale_kernel[(triton.cdiv(g.size, BLOCK),)](t, float(scale), g.size, BLOCK=BLOCK, **LAUNCH)
        write_back(g, t)


def adamw_step_(param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, beta1_pow, beta2_pow) -> None:
    """One AdamW update of param, m, v in place. Order: the reference's docstring."""
    g = _check_adamw(param, grad, m, v)
    coeffs = adamw_coeffs(
        lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
        beta1_pow=beta1_pow, beta2_pow=beta2_pow,
    )
    n = param.size
    if n == 0:
        return
    pt, mt, vt = in_place(param), in_place(m), in_place(v)
    gt = to_device(g)
    # float(fp32 value) is exact, and triton passes Python floats to kernels as fp32.
    with np.errstate(all="ignore"):
        _adamw_kernel[(triton.cdiv(n, BLOCK),)](pt, gt, mt, vt, n, *(float(c) for c in coeffs),
                                                BLOCK=BLOCK, **LAUNCH)
    write_back(param, pt)
    write_back(m, mt)
    write_back(v, vt)
