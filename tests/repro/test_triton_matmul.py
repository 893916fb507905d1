"""Matmul in triton (interpreted without a GPU) against the numpy spec, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitswarm.repro.kernels.triton import matmul as tri
from bitswarm.repro.reference import matmul as ref

from .test_matmul import SHAPES, randn, same_bits, special

F32 = np.float32


def test_order_is_one_sequential_fused_chain():
    b = np.ones((3, 1), F32)
    assert tri.matmul(np.array([[1e8, 1.0, -1e8]], F32), b)[0, 0] == 0.0  # not pairwise
    assert tri.matmul(np.array([[1.0, 1e8, -1e8]], F32), b)[0, 0] == 0.0
    x = F32(1 + 2.0**-23)  # a*b = 1 + 2^-22 + 2^-46: fma keeps 2^-46, mul+add would give 0
    a = np.array([[1.0, x]], F32)
    b = np.array([[-(1 + 2.0**-22)], [x]], F32)
    assert tri.matmul(a, b)[0, 0] == F32(2.0**-46)


def test_subnormals_and_signed_zeros():
    out = tri.matmul(np.array([[1e-39, 3e-45]], F32), np.ones((2, 1), F32))
    assert out[0, 0] == F32(1e-39) + F32(3e-45) and out[0, 0] != 0
    big = np.full((13, 70), F32(2e-39))
    assert np.all(tri.matmul(big, np.ones((70, 3), F32)) > 1e-37)
    a = np.array([[-0.0, 1.0]], F32)
    b = np.array([[1.0, 0.0], [-0.0, -0.0]], F32)
    out = tri.matmul(a, b)  # starts at +0: +0 + (-0) = +0
    assert np.all(out == 0) and not np.signbit(out).any()
    out = tri.matmul_acc(a, b, np.full((1, 2), -0.0, F32))  # -0 + (-0) = -0 all along
    assert np.all(out == 0) and np.signbit(out).all()


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_matches_reference(m, k, n):
    rng = np.random.default_rng(m * 1000003 + k * 1009 + n)
    a, b = randn(rng, m, k), randn(rng, k, n)
    assert same_bits(tri.matmul(a, b), ref.matmul(a, b))


def test_accumulates_into_c_in_place():
    rng = np.random.default_rng(11)
    a, b, c = randn(rng, 17, 40), randn(rng, 40, 70), randn(rng, 17, 70)
    c_tri = c.copy()
    out = tri.matmul_acc(a, b, c_tri)
    assert out is c_tri
    assert same_bits(c_tri, ref.matmul_acc(a, b, c.copy()))


def test_k_zero_and_empty_outputs():
    rng = np.random.default_rng(0)
    c = randn(rng, 4, 3)
    assert same_bits(tri.matmul_acc(np.empty((4, 0), F32), np.empty((0, 3), F32), c.copy()), c)
    assert same_bits(tri.matmul(np.empty((4, 0), F32), np.empty((0, 3), F32)), np.zeros((4, 3), F32))
    assert tri.matmul(np.empty((0, 5), F32), np.empty((5, 3), F32)).shape == (0, 3)
    assert tri.bmm(np.empty((0, 2, 5), F32), np.empty((0, 5, 3), F32)).shape == (0, 2, 3)


@pytest.mark.parametrize("k_split", [1, 37, 100])
def test_two_k_halves_equal_one_call(k_split):
    rng = np.random.default_rng(k_split)
    a, b, c = randn(rng, 19, 101), randn(rng, 101, 67), randn(rng, 19, 67)
    whole = tri.matmul_acc(a, b, c.copy())
    parts = c.copy()
    tri.matmul_acc(a[:, :k_split], b[:k_split], parts)
    tri.matmul_acc(a[:, k_split:], b[k_split:], parts)
    assert same_bits(parts, whole)
    assert same_bits(whole, ref.matmul_acc(a, b, c.copy()))


def test_strided_and_transposed_inputs():
    rng = np.random.default_rng(5)
    at = randn(rng, 40, 30)  # a = at.T is (30, 40), F-ordered
    bt = randn(rng, 70, 40)  # b = bt.T is (40, 70)
    big = randn(rng, 64, 90)
    cases = [
        (at.T, bt.T),
        (big[1:61:2, 3:43], bt.T),  # row and column slices
        (at.T, big[::-1, :70][:40]),  # negative stride
        (np.asfortranarray(at.T), np.asfortranarray(bt.T)),
        (big[:30, ::2][:, :40], big[10:50, 5:75]),
    ]
    for a, b in cases:
        expected = ref.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))
        assert same_bits(tri.matmul(a, b), expected)


def test_model_call_patterns():
    """The linear layer: y = x @ W.T forward, grad_W += dy.T @ x backward (into a running sum)."""
    rng = np.random.default_rng(12)
    x, w, dy = randn(rng, 9, 24), randn(rng, 33, 24), randn(rng, 9, 33)
    assert same_bits(tri.matmul(x, w.T), ref.matmul(x, w.T))
    grad = randn(rng, 33, 24)
    expected = ref.matmul_acc(dy.T, x, grad.copy())
    assert tri.matmul_acc(dy.T, x, grad) is grad
    assert same_bits(grad, expected)


def test_readonly_broadcast_and_unaligned_inputs():
    rng = np.random.default_rng(6)
    a = randn(rng, 9, 20)
    a.flags.writeable = False
    b = np.broadcast_to(randn(rng, 1, 70), (20, 70))  # stride 0 along k
    expected = ref.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))
    assert same_bits(tri.matmul(a, b), expected)
    raw = np.zeros(a.nbytes + 1, np.uint8)
    unaligned = np.ndarray(a.shape, F32, raw[1:].data)
    unaligned[...] = a
    assert same_bits(tri.matmul(unaligned, b), expected)


@pytest.mark.parametrize("m,k,n", [(7, 13, 5), (65, 40, 70), (6, 300, 64)])
def test_special_values(m, k, n):
    rng = np.random.default_rng(m + k + n)
    a, b, c = special(rng, m, k), special(rng, k, n), special(rng, m, n)
    expected = ref.matmul_acc(a, b, c.copy())
    assert not np.isfinite(expected).all()
    assert same_bits(tri.matmul_acc(a, b, c.copy()), expected)


def test_large_magnitudes_overflow_like_the_chain():
    assert tri.matmul(np.array([[3e38, 3e38, -3e38]], F32), np.ones((3, 1), F32))[0, 0] == np.inf
    rng = np.random.default_rng(9)
    a, b = randn(rng, 9, 50, scale=1e18), randn(rng, 50, 66, scale=1e19)
    assert same_bits(tri.matmul(a, b), ref.matmul(a, b))


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 20),
    k=st.integers(0, 40),
    n=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
    transpose_a=st.booleans(),
    transpose_b=st.booleans(),
    specials=st.booleans(),
)
def test_random_shapes(m, k, n, seed, transpose_a, transpose_b, specials):
    rng = np.random.default_rng(seed)
    gen = special if specials else randn
    a = gen(rng, k, m).T if transpose_a else gen(rng, m, k)
    b = gen(rng, n, k).T if transpose_b else gen(rng, k, n)
    c = gen(rng, m, n)
    assert same_bits(tri.matmul_acc(a, b, c.copy()), ref.matmul_acc(a, b, c.copy()))


def test_bmm_matches_reference():
    rng = np.random.default_rng(21)
    a, b, c = randn(rng, 3, 7, 29), randn(rng, 3, 29, 66), randn(rng, 3, 7, 66)
    c_tri = c.copy()
    assert tri.bmm_acc(a, b, c_tri) is c_tri
    assert same_bits(c_tri, ref.bmm_acc(a, b, c.copy()))
    assert same_bits(tri.bmm(a, b), ref.bmm(a, b))


def test_bmm_strided_and_special():
    rng = np.random.default_rng(22)
    a = randn(rng, 8, 20, 13)[::2].transpose(0, 2, 1)  # (4, 13, 20), strided batch, transposed
    b = randn(rng, 4, 20, 70)[:, :, 3:68]  # (4, 20, 65)
    c = randn(rng, 4, 13, 65)
    assert same_bits(tri.bmm_acc(a, b, c.copy()), ref.bmm_acc(a, b, c.copy()))
    k = randn(rng, 2, 6, 5).transpose(0, 2, 1)  # attention scores q @ k^T per head
    q = special(rng, 2, 3, 5)
    assert same_bits(tri.bmm(q, k), ref.bmm(q, k))


def test_bad_arguments():
    a, b = np.ones((3, 4), F32), np.ones((4, 5), F32)
    with pytest.raises(TypeError):
        tri.matmul(a.astype(np.float64), b)
    with pytest.raises(TypeError):
        tri.matmul_acc(a, b, np.zeros((3, 5), np.float64))
    with pytest.raises(ValueError):
        tri.matmul(a, np.ones((3, 5), F32))
    with pytest.raises(ValueError):
        tri.matmul_acc(a, b, np.zeros((3, 6), F32))
    with pytest.raises(ValueError):
        tri.matmul_acc(a, b, np.zeros((5, 3), F32).T)  # not C-contiguous
    with pytest.raises(ValueError):
        tri.bmm(np.ones((2, 3, 4), F32), np.ones((3, 4, 5), F32))  # batch mismatch
    with pytest.raises(ValueError):
        tri.matmul(np.ones((2, 3, 4), F32), b)
    buf = np.ones((4, 4), F32)
    with pytest.raises(ValueError):
        tri.matmul_acc(buf, buf, buf)  # c overlaps the inputs
