"""repro layers: the triton kernels are bit-identical to the numpy spec.

Same shapes and edge cases as `test_layers.py` (imported from it, so the cases stay one list),
plus shapes that span several programs of each kernel. Runs in triton's interpreter here.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitswarm.repro.kernels.triton import layers as T
from bitswarm.repro.reference import layers as R
from tests.repro import test_layers as TL
from tests.repro.test_layers import EPS, SHAPES, assert_bits, normal, rope_inputs, rows_with_specials, wide


def _shapes(test) -> list:
    """The shapes a `test_layers` test is parametrized with."""
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize" and m.args[0] == "shape"]
    return list(mark.args[1])


# rows past one program (T.ROW_BLOCK) and features past one tile / one column block
RMS_SHAPES = SHAPES + [(8, 33), (T.ROW_BLOCK + 3, 2), (2, T.COL_BLOCK + 5)]
ROPE_SHAPES = _shapes(TL.test_rope_kernel_bits) + [(3, 40, 2, 160)]  # several programs on both axes
SWIGLU_SHAPES = _shapes(TL.test_swiglu_kernel_bits) + [(3, T.ELEM_BLOCK - 300)]


# ---------------------------------------------------------------------------------------------
# RMSNorm


@pytest.mark.parametrize("shape", RMS_SHAPES)
def test_rmsnorm_bits(shape):
    rng = np.random.default_rng(10)
    n, d = shape
    x = rows_with_specials(rng, n, d)
    w = normal(rng, d)
    dy = normal(rng, (n, d))
    dy[-1, 0] = np.inf if n > 6 else dy[-1, 0]
    acc0 = normal(rng, d)
    with np.errstate(all="ignore"):
        y, rstd = R.rmsnorm_fwd(x, w, EPS)
        acc = acc0.copy()
        dx = R.rmsnorm_bwd(dy, x, w, rstd, acc)
    yt, rt = T.rmsnorm_fwd(x, w, EPS)
    acct = acc0.copy()
    dxt = T.rmsnorm_bwd(dy, x, w, rt, acct)  # updates the caller's array
    for a, b in zip((yt, rt, dxt, acct), (y, rstd, dx, acc)):
        assert_bits(a, b)


def test_rmsnorm_batch_invariance_and_microbatches():
    TL.test_rmsnorm_batch_invariance_and_microbatches(T)


def test_rmsnorm_eps_and_degenerate_shapes():
    rng = np.random.default_rng(23)
    x = wide(rng, (4, 9), -149, -60)  # tiny rows: eps dominates, and its fp32 rounding shows
    x[0] = 0
    w = normal(rng, 9)
    for eps in (1e-5, 1e-6, 0.1, 0.0):
        with np.errstate(all="ignore"):
            y, rstd = R.rmsnorm_fwd(x, w, eps)
        yt, rt = T.rmsnorm_fwd(x, w, eps)
        assert_bits(yt, y)
        assert_bits(rt, rstd)
    for n, d in ((0, 5), (3, 0)):
        x0, w0 = np.zeros((n, d), np.float32), np.zeros(d, np.float32)
        with np.errstate(all="ignore"):
            y, rstd = R.rmsnorm_fwd(x0, w0, EPS)
            dx = R.rmsnorm_bwd(x0, x0, w0, rstd, np.zeros(d, np.float32))
        yt, rt = T.rmsnorm_fwd(x0, w0, EPS)
        assert_bits(yt, y)
        assert_bits(rt, rstd)
        acc = np.ones(d, np.float32)
        assert_bits(T.rmsnorm_bwd(x0, x0, w0, rt, acc), dx)
        assert_bits(acc, np.ones(d, np.float32))


def test_rmsnorm_argument_checks():
    x = np.ones((2, 3), np.float32)
    w = np.ones(3, np.float32)
    with pytest.raises(TypeError):
        T.rmsnorm_fwd(x.astype(np.float64), w, EPS)
    with pytest.raises(ValueError):
        T.rmsnorm_fwd(x, np.ones(4, np.float32), EPS)
    y, rstd = T.rmsnorm_fwd(x, w, EPS)
    with pytest.raises(ValueError):  # a non-contiguous accumulator cannot be updated in place
        T.rmsnorm_bwd(x, x, w, rstd, np.zeros(6, np.float32)[::2])
    with pytest.raises(TypeError):
        T.rmsnorm_bwd(x, x, w, rstd, np.zeros(3, np.float64))
    with pytest.raises(ValueError):
        T.rmsnorm_bwd(x, x, w, rstd[:1], np.zeros(3, np.float32))


# ---------------------------------------------------------------------------------------------
# rotary position embedding


def test_rope_tables_shared():
    assert T.rope_tables is R.rope_tables
    assert T.rope_inv_freq is R.rope_inv_freq


@pytest.mark.parametrize("shape", ROPE_SHAPES)
def test_rope_bits(shape):
    rng = np.random.default_rng(14)
    x, c, s = rope_inputs(rng, shape)
    flat = x.reshape(-1)
    flat[: min(6, flat.size)] = np.array([np.inf, np.nan, 1e-45, -0.0, 3e38, -1e-40], np.float32)[: min(6, flat.size)]
    dy = normal(rng, shape)
    dy.reshape(-1)[-2:] = np.array([-0.0, 0.0], np.float32)[: dy.size]
    with np.errstate(all="ignore"):
        y, dx = R.rope_fwd(x, c, s), R.rope_bwd(dy, c, s)
    yt, dxt = T.rope_fwd(x, c, s), T.rope_bwd(dy, c, s)
    assert yt.shape == dxt.shape == shape
    assert_bits(yt, y)
    assert_bits(dxt, dx)


def test_rope_layouts_and_checks():
    rng = np.random.default_rng(16)
    q, c, s = rope_inputs(rng, (2, 5, 3, 8))
    assert_bits(T.rope_fwd(q[1], c, s), T.rope_fwd(q, c, s)[1])  # 3-D = one sequence of the 4-D
    assert T.rope_fwd(np.zeros((0, 5, 3, 8), np.float32), c, s).shape == (0, 5, 3, 8)
    c4, s4 = R.rope_tables(np.arange(4), 8, 10000.0)
    with pytest.raises(ValueError):
        T.rope_fwd(np.zeros((5, 2, 8), np.float32), c4, s4)  # 5 tokens, 4 table rows
    with pytest.raises(ValueError):
        T.rope_fwd(np.zeros((4, 8), np.float32), c4, s4)
    with pytest.raises(TypeError):
        T.rope_bwd(np.zeros((4, 2, 8)), c4, s4)


# ---------------------------------------------------------------------------------------------
# token embedding


def test_embedding_bits():
    rng = np.random.default_rng(18)
    v, d, n = 50, 576, 41
    table = wide(rng, (v, d))
    table[1, :3] = np.array([np.nan, -0.0, np.inf], np.float32)
    ids = rng.integers(0, 5, size=n)  # many repeats: the order of the adds matters
    ids[::7] = v - 1
    dy = wide(rng, (n, d), -149, 20)
    dy[3, 5] = np.inf
    acc0 = normal(rng, (v, d))
    acc0[v - 1, :4] = np.array([-0.0, 1e-45, np.nan, -np.inf], np.float32)
    acc = acc0.copy()
    with np.errstate(all="ignore"):
        R.embedding_bwd(ids, dy, acc)
    assert_bits(T.embedding_fwd(ids, table), table[ids])
    acct = acc0.copy()
    T.embedding_bwd(ids, dy, acct)  # in place, into the caller's array
    assert_bits(acct, acc)


def test_embedding_order_within_a_row():
    """Adds into one row in token order: the sums below depend on that order."""
    d = 3
    ids = np.array([2, 0, 2, 2, 0, 1], np.int64)
    dy = np.array([[1e8], [1.0], [1.0], [-1e8], [-1.0], [-0.0]], np.float32).repeat(d, 1)
    for perm, row2 in (([0, 1, 2, 3, 4, 5], 0.0), ([0, 3, 1, 2, 5, 4], 1.0)):
        acc, acct = np.zeros((3, d), np.float32), np.zeros((3, d), np.float32)
        R.embedding_bwd(ids[perm], dy[perm], acc)
        T.embedding_bwd(ids[perm], dy[perm], acct)
        assert_bits(acct, acc)
        assert acct[2, 0] == row2  # (1e8 + 1) - 1e8 = 0, (1e8 - 1e8) + 1 = 1


def test_embedding_microbatches_and_edges():
    TL.test_embedding_microbatches_and_edges(T)
    acc = np.ones((4, 2), np.float32)
    T.embedding_bwd(np.zeros(0, np.int64), np.zeros((0, 2), np.float32), acc)
    assert_bits(acc, np.ones((4, 2), np.float32))


# ---------------------------------------------------------------------------------------------
# SwiGLU


@pytest.mark.parametrize("shape", SWIGLU_SHAPES)
def test_swiglu_bits(shape):
    rng = np.random.default_rng(21)
    g = normal(rng, shape, 4.0)
    u, dh = normal(rng, shape), normal(rng, shape)
    flat = g.reshape(-1)
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, -100.0, 100.0, 3e38, -3e38], np.float32)
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    with np.errstate(all="ignore"):
        h = R.swiglu_fwd(g, u)
        dg, du = R.swiglu_bwd(dh, g, u)
    got = (T.swiglu_fwd(g, u),) + T.swiglu_bwd(dh, g, u)
    for a, b in zip(got, (h, dg, du)):
        assert a.shape == shape
        assert_bits(a, b)


def test_swiglu_checks_and_empty():
    g = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError):
        T.swiglu_fwd(g, g[:, :2])
    with pytest.raises(TypeError):
        T.swiglu_bwd(g.astype(np.float64), g, g)
    e = np.zeros((0, 3), np.float32)
    assert T.swiglu_fwd(e, e).shape == (0, 3)
    assert [a.shape for a in T.swiglu_bwd(e, e, e)] == [(0, 3), (0, 3)]
