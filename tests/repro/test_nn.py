"""Row ops (sums, max, softmax, log-softmax, cross-entropy, dot) and the GRPO loss: numba == spec."""

import numba
import numpy as np
import pytest
import torch

from bitswarm.repro.kernels.cpu import grpo as kg
from bitswarm.repro.kernels.cpu import nn as kn
from bitswarm.repro.reference import grpo as rg
from bitswarm.repro.reference import nn as rn

SHAPES = [(1, 1), (3, 7), (5, 259), (2, 1000)]


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


def _rows(shape, seed, specials=False):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    if specials and x.size > 8:
        flat = x.reshape(-1)
        flat[0], flat[3], flat[5] = np.float32(1e-40), np.float32(-0.0), np.float32(-np.inf)
    return x


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["row_sum", "row_max", "row_mean", "softmax", "log_softmax"])
def test_row_ops_bit_exact(shape, op):
    for specials in (False, True):
        x = _rows(shape, 1, specials)
        assert _same(getattr(kn, op)(x), getattr(rn, op)(x)), op


def test_nan_and_inf_rows():
    x = np.array([[1, np.nan, 2], [np.inf, 1, 2], [-np.inf, -np.inf, 0]], np.float32)
    for op in ("row_max", "softmax", "log_softmax", "row_sum"):
        assert _same(getattr(kn, op)(x), getattr(rn, op)(x)), op
    assert np.isnan(rn.row_max(x)[0]) and rn.softmax(x)[2, 2] == 1


@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_and_row_dot_bit_exact(shape):
    x = _rows(shape, 2)
    rng = np.random.default_rng(3)
    t = rng.integers(-1, shape[1], shape[0]).astype(np.int64)
    g = rng.standard_normal(shape[0]).astype(np.float32)
    assert _same(kn.cross_entropy_fwd(x, t), rn.cross_entropy_fwd(x, t))
    assert _same(kn.cross_entropy_bwd(x, t, g), rn.cross_entropy_bwd(x, t, g))
    y = _rows(shape, 4)
    assert _same(kn.row_dot(x, y), rn.row_dot(x, y))


def test_cross_entropy_agrees_with_torch():
    x = _rows((6, 50), 5)
    t = np.array([0, 3, -1, 49, 7, 7], np.int64)
    ours = rn.cross_entropy_fwd(x, t)
    xt = torch.from_numpy(x).requires_grad_()
    theirs = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t), ignore_index=-1, reduction="none")
    assert np.allclose(ours, theirs.detach().numpy(), atol=1e-5)
    theirs.sum().backward()
    assert np.allclose(rn.cross_entropy_bwd(x, t, np.ones(6, np.float32)), xt.grad.numpy(), atol=1e-6)


def test_rows_are_independent_and_thread_count_free():
    x = _rows((64, 300), 6)
    full = kn.softmax(x)
    assert _same(full[10:11], kn.softmax(x[10:11]))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kn.log_softmax(x)
    finally:
        numba.set_num_threads(before)
    assert _same(one, kn.log_softmax(x))


def test_bad_inputs():
    with pytest.raises(TypeError, match="float32"):
        rn.softmax(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        kn.cross_entropy_fwd(np.zeros((1, 3), np.float32), np.array([3], np.int64))


def test_grpo_loss_bit_exact_and_clipping():
    rng = np.random.default_rng(7)
    n = 5000
    logp = (rng.standard_normal(n) - 3).astype(np.float32)
    old = (logp + rng.standard_normal(n).astype(np.float32) * np.float32(0.3)).astype(np.float32)
    adv = rng.standard_normal(n).astype(np.float32)
    w = (rng.random(n) > 0.1).astype(np.float32)
    ref = rg.grpo_token_loss(logp, old, adv, w, 0.2, 0.28)
    fast = kg.grpo_token_loss(logp, old, adv, w, 0.2, 0.28)
    assert _same(ref[0], fast[0]) and _same(ref[1], fast[1])
    # the gradient vanishes exactly where the clipped term is the minimum
    r = np.exp(logp.astype(np.float64) - old)
    clipped = ((adv > 0) & (r > 1.28 + 1e-6)) | ((adv < 0) & (r < 0.8 - 1e-6))
    assert np.all(ref[1][clipped] == 0)
    free = ~clipped & (np.abs(r - 1.28) > 1e-5) & (np.abs(r - 0.8) > 1e-5)
    assert np.allclose(ref[1][free], -(adv * r * w)[free], rtol=1e-5)
