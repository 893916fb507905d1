"""Gradient norm, gradient scaling and AdamW in triton, bit-identical to `bitswarm.repro.reference.optim`.

The reference's docstring is the spec. The global norm keeps LANES fma chains per gradient: for
each gradient one program of LANES lanes walks its rows, each lane its own chain, and stores the
LANES partial sums in that gradient's row of a device buffer. Then one program sums each row in
lane order, a sequential chain of adds per gradient (the gradients side by side in a vector, so
the interpreter pays per lane, not per lane and gradient), and a last one adds the gradients'
sums into the norm in list order. Scaling and AdamW are elementwise and run in parallel over
elements. The scalar ops (clip_scale, advance_pows, the AdamW coefficients) are the reference's
own, as in the numba module.
"""

from __future__ import annotations

import numpy as np

from bitswarm.repro.kernels.triton import runtime  # noqa: F401 - sets up the interpreter first
from bitswarm.repro.kernels.triton.runtime import LAUNCH, empty, in_place, to_device, to_host, write_back

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# Host-side scalar ops and argument checks taken from the reference, as kernels.cpu.optim does.
from bitswarm.repro.reference.optim import (  # noqa: E402
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
ROWS_AHEAD = 8  # rows of LANES loaded ahead of the chains per step (unrolled: loads overlap the fmas)
BLOCK = 1024  # elements per program in the elementwise kernels


@triton.jit
def _sq_lanes_kernel(x_ptr, s_ptr, groups, rest, tail, LANES: tl.constexpr, AHEAD: tl.constexpr):
    """s[l] = fma(x[i], x[i], s[l]) for i = l, l + LANES, l + 2*LANES, ... < n, from s = +0.

    x has groups*AHEAD + rest full rows of LANES elements, then a row of `tail` < LANES."""
    lanes = tl.arange(0, LANES)
    ptrs = x_ptr + lanes  # pointer arithmetic: 64 bits, no offset can overflow
    s = tl.zeros((LANES,), tl.float32)
    for _ in range(groups):
        for j in tl.static_range(AHEAD):  # unrolled: the row loads overlap the fmas
            x = tl.load(ptrs + j * LANES)
            s = tl.fma(x, x, s)
        ptrs += AHEAD * LANES
    for _ in range(rest):
        x = tl.load(ptrs)
        s = tl.fma(x, x, s)
        ptrs += LANES
    # Past the end x = 0: fma(0, 0, s) = s, since s is never -0 (it starts at +0 and only ever
    # adds squares, which are >= +0).
    x = tl.load(ptrs, mask=lanes < tail, other=0.0)
    s = tl.fma(x, x, s)
    tl.store(s_ptr + lanes, s)


@triton.jit
def _lane_sums_kernel(s_ptr, t_ptr, G, LANES: tl.constexpr, GB: tl.constexpr):
    """t[k] = ((+0 + s[k, 0]) + s[k, 1]) + ... + s[k, LANES-1] for k < G: plain fp32 adds in lane
    order, one chain per gradient (the G chains run side by side, elementwise)."""
    k = tl.arange(0, GB)
    live = k < G
    row = s_ptr + k * LANES
    t = tl.load(row, mask=live, other=0.0)  # +0 + s[k, 0] = s[k, 0] exactly: it is never -0
    for l in range(1, LANES):
        t = t + tl.load(row + l, mask=live, other=0.0)
    tl.store(t_ptr + k, t, mask=live)


@triton.jit
def _norm_chain_kernel(t_ptr, out_ptr, G):
    """out = ((+0 + t[0]) + t[1]) + ... + t[G-1], G >= 1: plain fp32 adds in list order."""
    norm = tl.load(t_ptr)  # +0 + t[0] = t[0] exactly: it is never -0
    for k in range(1, G):
        norm = norm + tl.load(t_ptr + k)
    tl.store(out_ptr, norm)


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
    """Sum of squares of all gradient elements: LANES fma chains per gradient. Order: the reference's docstring."""
    # An empty gradient's lane sum is +0, and norm + 0 = norm (norm is never -0): it is skipped.
    gs = [g for g in _grad_list(grads) if g.size > 0]
    if not gs:
        return F32(0.0)
    G = len(gs)
    s = empty((G, LANES))
    t = empty((G,))
    out = empty((1,))
    with np.errstate(all="ignore"):  # the interpreter's numpy would warn about inf and NaN
        for k, g in enumerate(gs):
            x = to_device(g.reshape(-1))  # C order of the view, as the reference's ravel
            full, tail = divmod(g.size, LANES)
            _sq_lanes_kernel[(1,)](x, s[k], full // ROWS_AHEAD, full % ROWS_AHEAD, tail,
                                   LANES=LANES, AHEAD=ROWS_AHEAD, **LAUNCH)
        _lane_sums_kernel[(1,)](s, t, G, LANES=LANES, GB=triton.next_power_of_2(G), **LAUNCH)
        _norm_chain_kernel[(1,)](t, out, G, **LAUNCH)
    return F32(to_host(out)[0])


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
