"""Row ops (sums, max, softmax, log-softmax, cross-entropy, dot) and the GRPO loss: triton == spec."""

import numpy as np
import pytest

from bitswarm.repro.kernels.triton import grpo as tg
from bitswarm.repro.kernels.triton import nn as tn
from bitswarm.repro.reference import grpo as rg
from bitswarm.repro.reference import nn as rn
from tests.repro.test_nn import SHAPES, _rows, _same

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

OPS = ["row_sum", "row_max", "row_mean", "softmax", "log_softmax"]


@pytest.mark.parametrize("shape", SHAPES)
def test_row_ops_bit_exact(shape):
    for specials in (False, True):
        x = _rows(shape, 1, specials)
        for op in OPS:
            assert _same(getattr(tn, op)(x), getattr(rn, op)(x)), (op, specials)


def test_nan_inf_and_signed_zero_rows():
    nan, inf = np.nan, np.inf
    x = np.array([[1, nan, 2], [inf, 1, 2], [-inf, -inf, 0], [nan, 1, 2], [-inf, -inf, -inf],
                  [-0.0, 0.0, -1], [0.0, -0.0, -1], [inf, inf, -inf], [1e-45, -1e-45, 0],
                  [0, -100, -103.5], [88, 0, -88], [-3e38, 3e38, 0]], np.float32)  # subnormal exps, overflow
    for op in OPS:
        assert _same(getattr(tn, op)(x), getattr(rn, op)(x)), op
    assert tn.row_max(x)[5].tobytes() == np.float32(-0.0).tobytes()  # the first of equal zeros
    t = np.array([0, 1, 2, 1, 0, 0, 1, 2, -1, 2, 1, 0], np.int64)
    g = np.linspace(-2, 2, 12).astype(np.float32)
    assert _same(tn.cross_entropy_fwd(x, t), rn.cross_entropy_fwd(x, t))
    assert _same(tn.cross_entropy_bwd(x, t, g), rn.cross_entropy_bwd(x, t, g))


@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_and_row_dot_bit_exact(shape):
    x = _rows(shape, 2)
    rng = np.random.default_rng(3)
    t = rng.integers(-1, shape[1], shape[0]).astype(np.int64)
    g = rng.standard_normal(shape[0]).astype(np.float32)
    assert _same(tn.cross_entropy_fwd(x, t), rn.cross_entropy_fwd(x, t))
    assert _same(tn.cross_entropy_bwd(x, t, g), rn.cross_entropy_bwd(x, t, g))
    y = _rows(shape, 4)
    assert _same(tn.row_dot(x, y), rn.row_dot(x, y))


def test_many_rows_span_programs_and_rows_are_independent():
    x = _rows((70, 20), 6, specials=True)  # 70 rows: three chain programs, the last one partial
    t = np.random.default_rng(6).integers(-1, 20, 70).astype(np.int64)
    g = np.ones(70, np.float32)
    full = tn.log_softmax(x)
    assert _same(full, rn.log_softmax(x))
    assert _same(tn.softmax(x), rn.softmax(x))
    assert _same(tn.cross_entropy_bwd(x, t, g), rn.cross_entropy_bwd(x, t, g))
    assert _same(full[40:41], tn.log_softmax(x[40:41]))
    assert _same(tn.row_dot(x, x[::-1]), rn.row_dot(x, x[::-1]))


def test_empty_and_non_contiguous_inputs():
    assert tn.row_sum(np.zeros((3, 0), np.float32)).tolist() == [0, 0, 0]
    assert _same(tn.row_mean(np.zeros((2, 0), np.float32)), rn.row_mean(np.zeros((2, 0), np.float32)))
    assert tn.softmax(np.zeros((0, 4), np.float32)).shape == (0, 4)
    assert tn.row_max(np.zeros((0, 4), np.float32)).shape == (0,)
    x = _rows((6, 9), 8)[:, ::2]
    for op in OPS:
        assert _same(getattr(tn, op)(x), getattr(rn, op)(x)), op


def test_bad_inputs():
    with pytest.raises(TypeError, match="float32"):
        tn.softmax(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="float32"):
        tn.row_sum(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tn.cross_entropy_fwd(np.zeros((1, 3), np.float32), np.array([3], np.int64))
    with pytest.raises(TypeError, match="targets"):
        tn.cross_entropy_bwd(np.zeros((1, 3), np.float32), np.array([1], np.int32), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="empty row"):
        tn.row_max(np.zeros((2, 0), np.float32))
    with pytest.raises(ValueError, match="empty row"):
        tn.softmax(np.zeros((2, 0), np.float32))
    with pytest.raises(ValueError, match="g must"):
        tn.cross_entropy_bwd(np.zeros((2, 3), np.float32), np.array([1, 0], np.int64), np.float32(1))
    with pytest.raises(ValueError, match="sizes"):
        tg.grpo_token_loss(*(np.zeros(3, np.float32),) * 3, np.zeros(2, np.float32), 0.2, 0.2)
    with pytest.raises(ValueError, match="row_dot"):
        tn.row_dot(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))


def test_grpo_loss_bit_exact():
    rng = np.random.default_rng(7)
    n = 5000
    logp = (rng.standard_normal(n) - 3).astype(np.float32)
    old = (logp + rng.standard_normal(n).astype(np.float32) * np.float32(0.3)).astype(np.float32)
    adv = rng.standard_normal(n).astype(np.float32)
    w = (rng.random(n) > 0.1).astype(np.float32)
    adv[:4] = 0, -0.0, np.inf, np.nan  # signed zeros of the loss, inf * 0, NaN
    w[4] = -0.0
    logp[5], old[5] = np.float32(100), np.float32(-100)  # r = inf
    logp[6], old[6] = np.nan, np.float32(0)
    for clip in [(0.2, 0.28), (np.float32(0), np.float32(0)), (0.5, 3.0)]:
        ref = rg.grpo_token_loss(logp, old, adv, w, *clip)
        got = tg.grpo_token_loss(logp, old, adv, w, *clip)
        assert _same(ref[0], got[0]) and _same(ref[1], got[1]), clip
    shaped = [a[:60].reshape(3, 4, 5) for a in (logp, old, adv, w)]
    ref, got = rg.grpo_token_loss(*shaped, 0.2, 0.28), tg.grpo_token_loss(*shaped, 0.2, 0.28)
    assert got[0].shape == (3, 4, 5) and _same(ref[0], got[0]) and _same(ref[1], got[1])
