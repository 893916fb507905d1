"""repro optimizer ops: numba kernels bit-identical to the numpy spec; sanity against torch."""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
import torch

from bitswarm.repro.fp import fma_ref
from bitswarm.repro.kernels.cpu import optim as K
from bitswarm.repro.reference import optim as R

F32 = np.float32
HYPER = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


def assert_bits(a, b):
    """Identical fp32 bits, except that any NaN matches any NaN (payloads are not specified)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    assert a.shape == b.shape
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert np.array_equal(nan_a, nan_b), "NaN positions differ"
    diff = (a.view(np.uint32) != b.view(np.uint32)) & ~nan_a
    assert not diff.any(), f"{int(diff.sum())} of {a.size} elements differ, first at {np.argwhere(diff)[0]}"


def wide(rng, shape, top=100):
    """float32 values over most of the exponent range (up to 2**top), subnormals included."""
    e = rng.integers(-149, top, size=shape).astype(np.float64)
    return (rng.standard_normal(shape) * np.exp2(e)).astype(np.float32)


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def thread_counts():
    return sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)})


# ---------------------------------------------------------------------------------------------
# the scalar fma used by the sequential reference chain


def test_scalar_fma_matches_fma_ref():
    rng = np.random.default_rng(1)
    n = 20000
    a, b = wide(rng, n), wide(rng, n)
    c = wide(rng, n)
    with np.errstate(over="ignore"):
        c[: n // 2] = (-(a[: n // 2].astype(np.float64) * b[: n // 2])).astype(np.float32)  # cancellation
    c[n // 2 : 3 * n // 4] = a[n // 2 : 3 * n // 4] * np.float32(1.5)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4028235e38, -1.1754944e-38, 1.0, -1.0]
    sa, sb, sc = (np.array(t, np.float32) for t in zip(*itertools.product(special, repeat=3)))
    a, b, c = np.concatenate([a, sa]), np.concatenate([b, sb]), np.concatenate([c, sc])
    got = np.array([R._fma_py(x, y, z) for x, y, z in zip(a.tolist(), b.tolist(), c.tolist())], np.float32)
    with np.errstate(all="ignore"):
        assert_bits(got, fma_ref(a, b, c))


# ---------------------------------------------------------------------------------------------
# global gradient norm


def grad_list(rng):
    return [
        rng.standard_normal((7, 5)).astype(np.float32),
        np.zeros((0, 3), np.float32),
        np.array(2.5, np.float32),
        wide(rng, 1001, top=40),
        rng.standard_normal((3, 4, 5)).astype(np.float32)[:, ::2],  # not contiguous: C order of the view
    ]


def spec_norm_sq(grads):
    """global_grad_norm_sq written out from the spec text, one scalar operation at a time:
        norm_sq = +0.0
        for each gradient g, in list order (flattened in C order, n elements):
            s[l] = +0.0 for l in 0..LANES-1
            for i in 0..n-1:  s[i mod LANES] = fma(g[i], g[i], s[i mod LANES])
            t = +0.0;  for l in 0..LANES-1:  t = t + s[l]       (fp32 adds)
            norm_sq = norm_sq + t                                (fp32 add)
    """
    lanes = 1024
    norm_sq = F32(0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        for g in grads:
            flat = np.asarray(g).ravel(order="C")
            s = [F32(0.0)] * lanes
            for i in range(flat.size):
                s[i % lanes] = F32(fma_ref(flat[i], flat[i], s[i % lanes]))
            t = F32(0.0)
            for l in range(lanes):
                t = F32(t + s[l])
            norm_sq = F32(norm_sq + t)
    return norm_sq


def lane_grad_list(rng):
    """Lengths around the lane count, an empty gradient between others, plus grad_list's shapes."""
    return grad_list(rng) + [
        wide(rng, 1023, top=30),
        wide(rng, 1024, top=30),
        np.zeros(0, np.float32),
        wide(rng, 1025, top=30),
        rng.standard_normal((3 * 1024 + 5,)).astype(np.float32),
        np.array([-0.0, 1e-45, -1e-40], np.float32),
    ]


def special_grad_lists(rng):
    """Gradients whose lanes hold inf and NaN, and one whose lane sum overflows."""
    inf_lanes = rng.standard_normal(3 * 1024 + 5).astype(np.float32)
    inf_lanes[[5, 1024 + 5, 2000]] = [np.inf, -np.inf, np.inf]
    nan_lanes = rng.standard_normal(2 * 1024 + 7).astype(np.float32)
    nan_lanes[[3, 1024 + 700]] = [np.nan, np.inf]
    big = np.full(1030, 1.5e19, np.float32)  # squares 2.25e38: lanes 0..5 hold two of them = inf
    pairs = np.full(2048, 1.2e19, np.float32)  # every lane finite (2 * 1.44e38), their sum is not
    return {
        "inf": ([rng.standard_normal(10).astype(np.float32), inf_lanes, np.zeros(0, np.float32)], np.inf),
        "nan": ([inf_lanes, np.zeros((0, 4), np.float32), nan_lanes, rng.standard_normal(3).astype(np.float32)],
                np.nan),
        "lane_overflow": ([big], np.inf),
        "sum_overflow": ([pairs, np.ones(2, np.float32)], np.inf),
    }


def test_grad_norm_is_lanes_of_fma_chains_summed_in_lane_and_list_order():
    assert R.LANES == 1024
    rng = np.random.default_rng(2)
    gs = lane_grad_list(rng)
    ss = spec_norm_sq(gs)
    assert_bits(R.global_grad_norm_sq(gs), ss)
    assert_bits(K.global_grad_norm_sq(gs), ss)
    exact = sum(float((np.asarray(g, np.float64) ** 2).sum()) for g in gs)
    assert abs(float(ss) - exact) <= 1e-5 * exact


@pytest.mark.parametrize("case", ["inf", "nan", "lane_overflow", "sum_overflow"])
def test_grad_norm_lanes_special_values(case):
    gs, want = special_grad_lists(np.random.default_rng(4))[case]
    ss = spec_norm_sq(gs)
    assert_bits(ss, F32(want))
    assert_bits(R.global_grad_norm_sq(gs), ss)
    assert_bits(K.global_grad_norm_sq(gs), ss)


@pytest.mark.parametrize("case", ["plain", "subnormal", "inf", "nan", "overflow", "empty"])
def test_grad_norm_kernel_bits(case, threads):
    rng = np.random.default_rng(3)
    gs = [rng.standard_normal((33, 17)).astype(np.float32), rng.standard_normal(576).astype(np.float32)]
    if case == "subnormal":
        gs = [np.full(300, 1e-40, np.float32), wide(rng, 500)]
    elif case == "inf":
        gs[1][7] = np.inf
    elif case == "nan":
        gs[0][3, 3] = np.nan
    elif case == "overflow":
        gs[0][0, 0] = F32(3e38)
    elif case == "empty":
        gs = []
    ref = R.global_grad_norm_sq(gs)
    assert isinstance(ref, np.float32)
    for t in thread_counts():
        numba.set_num_threads(t)
        got = K.global_grad_norm_sq(gs)
        assert isinstance(got, np.float32)
        assert_bits(got, ref)
    if case == "empty":
        assert_bits(ref, F32(0))


def test_grad_norm_rejects_float64():
    for mod in (R, K):
        with pytest.raises(TypeError):
            mod.global_grad_norm_sq([np.ones(3)])


# ---------------------------------------------------------------------------------------------
# clipping


def test_clip_scale():
    assert K.clip_scale is R.clip_scale
    assert R.clip_scale(F32(0.25), 1.0) == 1  # norm 0.5
    assert R.clip_scale(F32(1.0), 1.0) == 1  # norm == max_norm: not clipped
    s = R.clip_scale(F32(16.0), 1.0)  # norm 4
    assert isinstance(s, np.float32)
    assert_bits(s, F32(1.0) / (F32(4.0) + F32(1e-6)))
    assert R.clip_scale(F32(np.nan), 1.0) == 1
    assert R.clip_scale(F32(np.inf), 1.0) == 0


def test_clip_matches_torch():
    rng = np.random.default_rng(4)
    gs = [rng.standard_normal((6, 9)).astype(np.float32) for _ in range(3)]
    tg = [torch.nn.Parameter(torch.zeros(g.shape)) for g in gs]
    for p, g in zip(tg, gs):
        p.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_norm_(tg, max_norm=1.0)
    ours = [g.copy() for g in gs]
    R.scale_grads_(ours, R.clip_scale(R.global_grad_norm_sq(ours), 1.0))
    for p, g in zip(tg, ours):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_scale_grads_bits(threads):
    rng = np.random.default_rng(5)
    base = [wide(rng, (17, 3)), rng.standard_normal(1000).astype(np.float32), np.array([np.inf, np.nan, -0.0], np.float32)]
    for scale in (F32(0.37), F32(1e-30), F32(0.0)):
        ref = [g.copy() for g in base]
        R.scale_grads_(ref, scale)
        for t in thread_counts():
            numba.set_num_threads(t)
            got = [g.copy() for g in base]
            K.scale_grads_(got, scale)
            for a, b in zip(got, ref):
                assert_bits(a, b)
    for mod in (R, K):  # scale 1: untouched
        same = [g.copy() for g in base]
        mod.scale_grads_(same, 1.0)
        for a, b in zip(same, base):
            assert_bits(a, b)
        with pytest.raises(ValueError):
            mod.scale_grads_([np.ones((4, 4), np.float32)[:, ::2]], 0.5)


# ---------------------------------------------------------------------------------------------
# AdamW


def test_advance_pows():
    b1p, b2p = F32(1), F32(1)
    for _ in range(5):
        b1p, b2p = R.advance_pows(b1p, b2p, 0.9, 0.95)
    assert isinstance(b1p, np.float32) and isinstance(b2p, np.float32)
    e1, e2 = F32(1), F32(1)
    for _ in range(5):
        e1, e2 = e1 * F32(0.9), e2 * F32(0.95)
    assert_bits(b1p, e1)
    assert_bits(b2p, e2)
    assert K.advance_pows is R.advance_pows


def run_adamw(mod, p0, grads, hyper):
    p = p0.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    b1p, b2p = F32(1), F32(1)
    for g in grads:
        b1p, b2p = mod.advance_pows(b1p, b2p, hyper["beta1"], hyper["beta2"])
        mod.adamw_step_(p, g, m, v, beta1_pow=b1p, beta2_pow=b2p, **hyper)
    return p, m, v


@pytest.mark.parametrize("shape", [(1,), (7, 3), (576,), (4097,)])
def test_adamw_kernel_bits(shape, threads):
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) * F32(s) for s in (1, 1e-3, 10, 1e-20, 1)]
    ref = run_adamw(R, p0, grads, HYPER)
    for t in thread_counts():
        numba.set_num_threads(t)
        for a, b in zip(run_adamw(K, p0, grads, HYPER), ref):
            assert_bits(a, b)


def test_adamw_kernel_bits_special_values():
    rng = np.random.default_rng(7)
    p0 = wide(rng, 64)
    g = wide(rng, 64)
    g[:6] = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45]
    p0[6:9] = [np.inf, np.nan, -0.0]
    hyper = dict(HYPER, weight_decay=0.0)
    for h in (HYPER, hyper):
        with np.errstate(all="ignore"):
            ref = run_adamw(R, p0, [g, g], h)
        for a, b in zip(run_adamw(K, p0, [g, g], h), ref):
            assert_bits(a, b)


def test_adamw_matches_torch():
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal((16, 12)).astype(np.float32)
    grads = [rng.standard_normal(p0.shape).astype(np.float32) for _ in range(5)]
    tp = torch.nn.Parameter(torch.tensor(p0.copy()))
    opt = torch.optim.AdamW([tp], lr=HYPER["lr"], betas=(HYPER["beta1"], HYPER["beta2"]), eps=HYPER["eps"],
                            weight_decay=HYPER["weight_decay"], foreach=False)
    for g in grads:
        tp.grad = torch.tensor(g)
        opt.step()
    p, m, v = run_adamw(K, p0, grads, HYPER)
    st = opt.state[tp]
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m, st["exp_avg"].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v, st["exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-9)


def test_adamw_argument_checks():
    p = np.zeros(4, np.float32)
    for mod in (R, K):
        kw = dict(HYPER, beta1_pow=0.9, beta2_pow=0.95)
        with pytest.raises(TypeError):
            mod.adamw_step_(p.astype(np.float64), np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), **kw)
        with pytest.raises(ValueError):
            mod.adamw_step_(p, np.zeros(5, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), **kw)
        with pytest.raises(ValueError):
            mod.adamw_step_(p, np.zeros(4, np.float32), np.zeros(8, np.float32)[::2], np.zeros(4, np.float32), **kw)
