"""Gradient norm, gradient clipping and AdamW: the spec (numpy).

"fma(a, b, c)" is one correctly rounded fp32 a*b + c; every other step is one correctly
rounded fp32 operation; negation is exact. Python scalars (lr, betas, eps, weight decay,
max_norm) are rounded to fp32 once, on entry.

global_grad_norm_sq(grads): LANES = 1024 independent fma chains per gradient, summed in a
    fixed order (vectorizes on every device while staying one order):
        norm_sq = +0.0
        for each gradient g, in the caller's list order (each flattened in C order, n elements):
            s[l] = +0.0 for l in 0..LANES-1
            for i in 0..n-1:  s[i mod LANES] = fma(g[i], g[i], s[i mod LANES])    (each lane its own chain, in increasing i)
            t = +0.0;  for l in 0..LANES-1:  t = t + s[l]                          (plain fp32 adds, lane order)
            norm_sq = norm_sq + t                                                  (plain fp32 add)
    Every partial sum is a sum of squares, so never -0 (+0.0 + s[l] = s[l], an empty gradient
    adds +0.0 and changes nothing); NaN and inf propagate naturally.
clip_scale(norm_sq, max_norm):
        norm = sqrt(norm_sq)
        scale = max_norm / (norm + float32(1e-6))   if norm > max_norm   (add, divide)
                1.0                                  otherwise (also when norm is NaN)
    (PyTorch clip_grad_norm_ gives min(1, max_norm / (norm + 1e-6)); the two differ only for
    norm in (max_norm - 1e-6, max_norm], where the clamp makes torch's factor 1 up to rounding.)
scale_grads_(grads, scale): g = g * scale in place, elementwise; nothing at all when scale == 1.

advance_pows(beta1_pow, beta2_pow, beta1, beta2) -> (beta1_pow * beta1, beta2_pow * beta2):
    the caller keeps the powers (fp32, starting at 1.0) in the optimizer state and advances them
    once BEFORE each step, so step t (1-based) uses beta^t as a chain of t fp32 multiplies.
adamw_step_ (PyTorch AdamW semantics: decoupled weight decay, bias correction), scalars first:
        decay = 1 - lr * weight_decay        omb1 = 1 - beta1        omb2 = 1 - beta2
        bc1   = 1 - beta1_pow                bc2  = 1 - beta2_pow    neg_lr = -lr
    then per element, with g = grad:
        p  = p * decay
        m  = fma(beta1, m, omb1 * g)                       beta1*m + (1-beta1)*g
        v  = fma(beta2, v, (omb2 * g) * g)                 beta2*v + (1-beta2)*g*g
        mhat = m / bc1;  vhat = v / bc2
        denom = sqrt(vhat) + eps
        p  = fma(neg_lr, mhat / denom, p)                  p - lr * mhat / denom
"""

from __future__ import annotations

import math
import struct

import numpy as np

from bitswarm.repro.fp import fma_ref

F32 = np.float32
ONE = F32(1.0)
CLIP_EPS = F32(1e-6)
LANES = 1024  # fma chains per gradient in global_grad_norm_sq (imported by the kernels)

_PACK_F = struct.Struct("<f")


def _to_f32(s: float) -> float:
    """Round a Python float (fp64) to the nearest fp32 value (ties to even), as a Python float."""
    try:
        return _PACK_F.unpack(_PACK_F.pack(s))[0]
    except OverflowError:  # finite fp64 beyond the fp32 range rounds to an infinity
        return math.copysign(math.inf, s)


def _fma_py(a: float, b: float, c: float) -> float:
    """fp.fma_ref for three fp32 values held as Python floats: the same round-to-odd method.

    a*b is exact in fp64; the fp64 sum is made round-to-odd with TwoSum's exact error and then
    rounded once to fp32. A scalar version of fma_ref, for sequential scalar chains.
    """
    p = a * b
    s = p + c
    if not math.isfinite(s):
        return _to_f32(s)
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    if err != 0.0:
        m, _ = math.frexp(s)
        if int(m * 9007199254740992.0) & 1 == 0:  # even last fp64 bit: move toward the error
            s = math.nextafter(s, math.inf if err > 0 else -math.inf)
    return _to_f32(s)


# ---------------------------------------------------------------------------------------------
# argument checks (shared with kernels.cpu.optim)


def _grad_list(grads) -> list[np.ndarray]:
    out = []
    for k, g in enumerate(grads):
        arr = np.asarray(g)
        if arr.dtype != np.float32:
            raise TypeError(f"grads[{k}] must be float32, got {arr.dtype}")
        out.append(arr)
    return out


def _inplace(x, name: str, shape=None) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"{name} must be a float32 numpy array (updated in place)")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable (it is updated in place)")
    return x


def _check_adamw(param, grad, m, v):
    _inplace(param, "param")
    g = np.asarray(grad)
    if g.dtype != np.float32:
        raise TypeError(f"grad must be float32, got {g.dtype}")
    if g.shape != param.shape:
        raise ValueError(f"grad must have shape {param.shape}, got {g.shape}")
    _inplace(m, "m", param.shape)
    _inplace(v, "v", param.shape)
    return np.ascontiguousarray(g)


def adamw_coeffs(*, lr, beta1, beta2, eps, weight_decay, beta1_pow, beta2_pow) -> tuple:
    """The per-step fp32 scalars (beta1, beta2, eps, decay, omb1, omb2, bc1, bc2, neg_lr)."""
    lr, beta1, beta2, eps, wd = F32(lr), F32(beta1), F32(beta2), F32(eps), F32(weight_decay)
    decay = ONE - lr * wd
    omb1 = ONE - beta1
    omb2 = ONE - beta2
    bc1 = ONE - F32(beta1_pow)
    bc2 = ONE - F32(beta2_pow)
    return beta1, beta2, eps, decay, omb1, omb2, bc1, bc2, -lr


# ---------------------------------------------------------------------------------------------
# the ops


def global_grad_norm_sq(grads) -> np.float32:
    """Sum of squares of all gradient elements: LANES fma chains per gradient. Order: module docstring."""
    norm_sq = F32(0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        for g in _grad_list(grads):
            x = np.ascontiguousarray(g).reshape(-1)  # C order of the view, as ravel(order="C")
            rows = -(-x.size // LANES)
            # Zero padding to whole rows is exact: fma(0, 0, s) = s, since s is never -0.
            pad = np.zeros(rows * LANES, F32)
            pad[: x.size] = x
            s = np.zeros(LANES, F32)
            for row in pad.reshape(rows, LANES):
                s = fma_ref(row, row, s)
            t = F32(0.0)
            for v in s:  # sequential fp32 adds, lane order
                t = F32(t + v)
            norm_sq = F32(norm_sq + t)
    return norm_sq


def clip_scale(norm_sq, max_norm) -> np.float32:
    """The factor that brings the global norm down to max_norm (1.0 when it is not above)."""
    norm = np.sqrt(F32(norm_sq))
    mx = F32(max_norm)
    if norm > mx:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return F32(mx / (norm + CLIP_EPS))
    return ONE


def scale_grads_(grads, scale) -> None:
    """g = g * scale for every gradient, in place; no-op when scale == 1."""
    scale = F32(scale)
    gs = [_inplace(g, f"grads[{k}]") for k, g in enumerate(grads)]
    if scale == ONE:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        for g in gs:
            np.multiply(g, scale, out=g)


def advance_pows(beta1_pow, beta2_pow, beta1, beta2) -> tuple[np.float32, np.float32]:
    """(beta1_pow * beta1, beta2_pow * beta2), one fp32 multiply each; call before each step."""
    return F32(F32(beta1_pow) * F32(beta1)), F32(F32(beta2_pow) * F32(beta2))


def adamw_step_(param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, beta1_pow, beta2_pow) -> None:
    """One AdamW update of param, m, v in place. Order: module docstring."""
    g = _check_adamw(param, grad, m, v)
    b1, b2, eps, decay, omb1, omb2, bc1, bc2, neg_lr = adamw_coeffs(
        lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
        beta1_pow=beta1_pow, beta2_pow=beta2_pow,
    )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        p = param * decay
        m_new = fma_ref(b1, m, omb1 * g)
        v_new = fma_ref(b2, v, (omb2 * g) * g)
        mhat = m_new / bc1
        vhat = v_new / bc2
        denom = np.sqrt(vhat) + eps
        p = fma_ref(neg_lr, mhat / denom, p)
    param[...] = p
    m[...] = m_new
    v[...] = v_new
