"""Optimizer ops in triton (interpreted without a GPU) against the numpy spec, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from bitswarm.repro.kernels.triton import optim as T
from bitswarm.repro.reference import optim as R

from .test_optim import HYPER, assert_bits, lane_grad_list, run_adamw, spec_norm_sq, special_grad_lists, wide

F32 = np.float32


def test_grad_norm_is_lanes_of_fma_chains_summed_in_lane_and_list_order():
    assert T.LANES == R.LANES == 1024
    rng = np.random.default_rng(2)
    gs = lane_grad_list(rng)
    ss = spec_norm_sq(gs)
    got = T.global_grad_norm_sq(gs)
    assert isinstance(got, np.float32)
    assert_bits(got, ss)
    exact = sum(float((np.asarray(g, np.float64) ** 2).sum()) for g in gs)
    assert abs(float(got) - exact) <= 1e-5 * exact


@pytest.mark.parametrize("case", ["inf", "nan", "lane_overflow", "sum_overflow"])
def test_grad_norm_lanes_special_values(case):
    gs, want = special_grad_lists(np.random.default_rng(4))[case]
    got = T.global_grad_norm_sq(gs)
    assert_bits(got, F32(want))
    assert_bits(got, spec_norm_sq(gs))


@pytest.mark.parametrize("case", ["plain", "subnormal", "inf", "nan", "overflow", "empty", "tail"])
def test_grad_norm_kernel_bits(case):
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
    elif case == "tail":  # lengths around the kernel's unrolled block of rows, -0.0 and 1-element tensors
        block = T.ROWS_AHEAD * T.LANES
        gs = [np.array([-0.0], F32), wide(rng, block - 1, top=20), wide(rng, block + 1, top=20),
              np.array(-3.0, F32), wide(rng, 2 * block + T.LANES, top=20), wide(rng, block, top=20)]
    ref = R.global_grad_norm_sq(gs)
    got = T.global_grad_norm_sq(gs)
    assert isinstance(got, np.float32)
    assert_bits(got, ref)


def test_grad_norm_rejects_float64():
    with pytest.raises(TypeError):
        T.global_grad_norm_sq([np.ones(3)])


def test_scalar_ops_are_the_references():
    assert T.clip_scale is R.clip_scale
    assert T.advance_pows is R.advance_pows


def test_clip_then_scale_like_the_reference():
    rng = np.random.default_rng(4)
    gs = [rng.standard_normal((6, 9)).astype(np.float32) for _ in range(3)]
    ref = [g.copy() for g in gs]
    R.scale_grads_(ref, R.clip_scale(R.global_grad_norm_sq(ref), 1.0))
    got = [g.copy() for g in gs]
    T.scale_grads_(got, T.clip_scale(T.global_grad_norm_sq(got), 1.0))
    for a, b in zip(got, ref):
        assert_bits(a, b)


def test_scale_grads_bits():
    rng = np.random.default_rng(5)
    base = [wide(rng, (17, 3)), rng.standard_normal(1500).astype(np.float32),
            np.array([np.inf, np.nan, -0.0], np.float32), np.array(2.5, np.float32), np.zeros(0, np.float32)]
    for scale in (F32(0.37), F32(1e-30), F32(0.0), F32(-3e38)):
        ref = [g.copy() for g in base]
        R.scale_grads_(ref, scale)
        got = [g.copy() for g in base]
        T.scale_grads_(got, scale)
        for a, b in zip(got, ref):
            assert_bits(a, b)
    same = [g.copy() for g in base]
    T.scale_grads_(same, 1.0)
    for a, b in zip(same, base):
        assert_bits(a, b)
    with pytest.raises(ValueError):
        T.scale_grads_([np.ones((4, 4), np.float32)[:, ::2]], 0.5)


@pytest.mark.parametrize("shape", [(1,), (7, 3), (576,), (4097,)])
def test_adamw_kernel_bits(shape):
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) * F32(s) for s in (1, 1e-3, 10, 1e-20, 1)]
    ref = run_adamw(R, p0, grads, HYPER)
    for a, b in zip(run_adamw(T, p0, grads, HYPER), ref):
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
        for a, b in zip(run_adamw(T, p0, [g, g], h), ref):
            assert_bits(a, b)


def test_adamw_non_contiguous_grad_and_empty_param():
    rng = np.random.default_rng(9)
    p = rng.standard_normal((5, 6)).astype(np.float32)
    g = rng.standard_normal((6, 5)).astype(np.float32).T  # a transposed gradient is read in C order
    kw = dict(HYPER, beta1_pow=F32(0.9), beta2_pow=F32(0.95))
    ref = [p.copy(), np.full_like(p, 0.1), np.full_like(p, 0.2)]
    got = [x.copy() for x in ref]
    R.adamw_step_(*ref[:1], g, *ref[1:], **kw)
    T.adamw_step_(*got[:1], g, *got[1:], **kw)
    for a, b in zip(got, ref):
        assert_bits(a, b)
    empty = np.zeros((0, 3), np.float32)
    T.adamw_step_(empty, empty, empty.copy(), empty.copy(), **kw)


def test_adamw_argument_checks():
    p = np.zeros(4, np.float32)
    kw = dict(HYPER, beta1_pow=0.9, beta2_pow=0.95)
    with pytest.raises(TypeError):
        T.adamw_step_(p.astype(np.float64), np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), **kw)
    with pytest.raises(ValueError):
        T.adamw_step_(p, np.zeros(5, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), **kw)
    with pytest.raises(ValueError):
        T.adamw_step_(p, np.zeros(4, np.float32), np.zeros(8, np.float32)[::2], np.zeros(4, np.float32), **kw)
