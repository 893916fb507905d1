"""The `native` backend: the same op API on plain torch kernels. Fast, NOT bit-exact.

Used for speed comparisons and for work nobody will verify. Arrays stay numpy float32;
torch.from_numpy shares their memory, so in-place accumulators are updated in place.
"""

from __future__ import annotations

import numpy as np
import torch

from bitswarm.repro.reference import sampling as _sampling

F32 = np.float32
T = torch.from_numpy


def _np(t: torch.Tensor) -> np.ndarray:
    return t.numpy()


def _t(x) -> torch.Tensor:
    arr = np.asarray(x)
    if arr.strides and any(s < 0 for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    return T(arr)


def matmul(a, b):
    return _np(_t(a) @ _t(b))


def matmul_acc(a, b, c):
    _t(c).addmm_(_t(a), _t(b))
    return c


def bmm(a, b):
    return _np(torch.bmm(_t(a), _t(b)))


def bmm_acc(a, b, c):
    _t(c).baddbmm_(_t(a), _t(b))
    return c


def exp(x):
    return _np(torch.exp(_t(x)))


def log(x):
    return _np(torch.log(_t(x)))


def sigmoid(x):
    return _np(torch.sigmoid(_t(x)))


def silu(x):
    return _np(torch.nn.functional.silu(_t(x)))


def rsqrt(x):
    return _np(torch.rsqrt(_t(x)))


def row_sum(x):
    return _np(_t(x).sum(-1))


def row_max(x):
    return _np(_t(x).amax(-1))


def row_mean(x):
    return _np(_t(x).mean(-1))


def row_dot(a, b):
    return _np((_t(a) * _t(b)).sum(-1))


def softmax(x):
    return _np(torch.softmax(_t(x), -1))


def log_softmax(x):
    return _np(torch.log_softmax(_t(x), -1))


def cross_entropy_fwd(x, targets):
    t = _t(np.asarray(targets, np.int64))
    loss = torch.nn.functional.cross_entropy(_t(x), t.clamp(min=0), reduction="none")
    return _np(torch.where(t < 0, torch.zeros_like(loss), loss))


def cross_entropy_bwd(x, targets, g):
    t = _t(np.asarray(targets, np.int64))
    p = torch.softmax(_t(x), -1)
    keep = t >= 0
    rows = torch.arange(p.shape[0])[keep]
    p[rows, t[keep]] -= 1
    p *= _t(np.asarray(g, F32))[:, None]
    p[~keep] = 0
    return _np(p)


def rmsnorm_fwd(x, w, eps):
    xt = _t(x)
    rstd = torch.rsqrt(xt.pow(2).mean(-1) + eps)
    return _np(xt * rstd[:, None] * _t(w)), _np(rstd)


def rmsnorm_bwd(dy, x, w, rstd, dw_acc):
    xhat = _t(x) * _t(rstd)[:, None]
    dyt = _t(dy)
    _t(dw_acc).add_((dyt * xhat).sum(0))
    dxhat = dyt * _t(w)
    dot = (dxhat * xhat).sum(-1, keepdim=True) / x.shape[-1]
    return _np(_t(rstd)[:, None] * (dxhat - xhat * dot))


def rope_tables(positions, head_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = _t(np.asarray(positions, np.int64)).float()[:, None] * inv[None, :]
    return _np(torch.cos(ang)), _np(torch.sin(ang))


def _rot(x, c, s):
    xt = _t(x)
    half = xt.shape[-1] // 2
    x1, x2 = xt[..., :half], xt[..., half:]
    c, s = _t(c)[:, None, :], _t(s)[:, None, :]  # (T, 1, half) broadcasts over heads
    return _np(torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1))


def rope_fwd(x, cos, sin):
    return _rot(x, cos, sin)


def rope_bwd(dy, cos, sin):
    return _rot(dy, cos, -np.asarray(sin))


def embedding_fwd(ids, table):
    return _np(_t(table)[_t(np.asarray(ids, np.int64))])


def embedding_bwd(ids, dy, dtable_acc):
    _t(dtable_acc).index_add_(0, _t(np.asarray(ids, np.int64)), _t(dy))


def swiglu_fwd(gate, up):
    return _np(torch.nn.functional.silu(_t(gate)) * _t(up))


def swiglu_bwd(dh, gate, up):
    g, u, d = _t(gate), _t(up), _t(dh)
    s = torch.sigmoid(g)
    return _np(d * u * (s * (1 + g * (1 - s)))), _np(d * g * s)


def grpo_token_loss(logp, logp_old, adv, w, clip_low, clip_high):
    r = torch.exp(_t(logp) - _t(logp_old))
    a, wt = _t(adv), _t(w)
    c = r.clamp(1 - clip_low, 1 + clip_high)
    unclipped = r * a <= c * a
    loss = -torch.where(unclipped, r * a, c * a) * wt
    dlogp = torch.where(unclipped, -(a * r) * wt, torch.zeros_like(r))
    return _np(loss), _np(dlogp)


def global_grad_norm_sq(grads):
    return F32(sum(float(_t(g).double().pow(2).sum()) for g in grads))


def clip_scale(norm_sq, max_norm):
    norm = float(np.sqrt(norm_sq))
    return F32(max_norm / (norm + 1e-6)) if norm > max_norm else F32(1)


def scale_grads_(grads, scale):
    if scale != 1:
        for g in grads:
            _t(g).mul_(float(scale))


def advance_pows(beta1_pow, beta2_pow, beta1, beta2):
    return F32(beta1_pow * beta1), F32(beta2_pow * beta2)


def adamw_step_(param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, beta1_pow, beta2_pow):
    p, g, mt, vt = _t(param), _t(grad), _t(m), _t(v)
    p.mul_(1 - float(lr) * float(weight_decay))
    mt.mul_(float(beta1)).add_(g, alpha=1 - float(beta1))
    vt.mul_(float(beta2)).addcmul_(g, g, value=1 - float(beta2))
    denom = (vt / (1 - float(beta2_pow))).sqrt_().add_(float(eps))
    p.addcdiv_(mt / (1 - float(beta1_pow)), denom, value=-float(lr))


sample_rows = _sampling.sample_rows
greedy = _sampling.greedy
