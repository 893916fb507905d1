"""repro layers: numba kernels bit-identical to the numpy spec; gradients and HF conventions."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from bitswarm.repro.fp import fma_ref
from bitswarm.repro.kernels.cpu import layers as K
from bitswarm.repro.reference import layers as R

F32 = np.float32
EPS = 1e-5
BACKENDS = [pytest.param(R, id="reference"), pytest.param(K, id="numba")]
SHAPES = [(1, 1), (3, 1), (5, 576), (17, 64), (2, 1000)]


def assert_bits(a, b):
    """Identical fp32 bits, except that any NaN matches any NaN (payloads are not specified)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    assert a.shape == b.shape
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert np.array_equal(nan_a, nan_b), "NaN positions differ"
    diff = (a.view(np.uint32) != b.view(np.uint32)) & ~nan_a
    assert not diff.any(), f"{int(diff.sum())} of {a.size} elements differ, first at {np.argwhere(diff)[0]}"


def normal(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def wide(rng, shape, lo=-149, hi=60):
    """float32 values over a wide exponent range, subnormals included."""
    e = rng.integers(lo, hi, size=shape).astype(np.float64)
    return (rng.standard_normal(shape) * np.exp2(e)).astype(np.float32)


def rows_with_specials(rng, n, d):
    """Random rows, and (when there are enough rows) rows of zeros, subnormals, huge values, inf, NaN."""
    x = normal(rng, (n, d))
    if n >= 6:
        x[0] = 0
        x[1] = wide(rng, d, -149, -126)  # subnormal only
        x[2] = F32(3e30)  # the sum of squares overflows
        x[3, 0] = np.inf
        x[4, -1] = np.nan
        x[5] = wide(rng, d)
    return x


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def thread_counts():
    return sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)})


def both_threads(fn):
    """Runs fn under every thread count and checks each result against the first, bit for bit."""
    out = []
    for t in thread_counts():
        numba.set_num_threads(t)
        out.append(fn())
    for other in out[1:]:
        for a, b in zip(other, out[0]):
            assert_bits(a, b)
    return out[0]


# ---------------------------------------------------------------------------------------------
# RMSNorm


@pytest.mark.parametrize("shape", SHAPES + [(8, 33)])
def test_rmsnorm_kernel_bits(shape, threads):
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

    def numba_run():
        yk, rk = K.rmsnorm_fwd(x, w, EPS)
        acck = acc0.copy()
        dxk = K.rmsnorm_bwd(dy, x, w, rk, acck)
        return yk, rk, dxk, acck

    for a, b in zip(both_threads(numba_run), (y, rstd, dx, acc)):
        assert_bits(a, b)


def test_rmsnorm_spec_order():
    """The reference really is the documented chain (checked element by element on one row)."""
    rng = np.random.default_rng(11)
    x = normal(rng, (1, 7))
    w = normal(rng, 7)
    ss = F32(0)
    for v in x[0]:
        ss = fma_ref(v, v, ss)
    r = F32(1) / np.sqrt(ss / F32(7) + F32(EPS))
    y, rstd = R.rmsnorm_fwd(x, w, EPS)
    assert_bits(rstd[0], r)
    assert_bits(y[0], (x[0] * r) * w)


@pytest.mark.parametrize("mod", BACKENDS)
def test_rmsnorm_batch_invariance_and_microbatches(mod):
    rng = np.random.default_rng(12)
    n, d = 9, 576
    x, dy, w = normal(rng, (n, d)), normal(rng, (n, d)), normal(rng, d)
    acc0 = normal(rng, d, 1e-2)
    y, rstd = mod.rmsnorm_fwd(x, w, EPS)
    acc_all = acc0.copy()
    dx = mod.rmsnorm_bwd(dy, x, w, rstd, acc_all)
    for i in (0, 4, n - 1):
        yi, ri = mod.rmsnorm_fwd(x[i : i + 1], w, EPS)
        assert_bits(yi[0], y[i])
        assert_bits(ri[0], rstd[i])
        dxi = mod.rmsnorm_bwd(dy[i : i + 1], x[i : i + 1], w, ri, np.zeros(d, np.float32))
        assert_bits(dxi[0], dx[i])
    for k in (0, 1, 5, n):
        acc = acc0.copy()
        parts = []
        for lo, hi in ((0, k), (k, n)):
            parts.append(mod.rmsnorm_bwd(dy[lo:hi], x[lo:hi], w, rstd[lo:hi], acc))
        assert_bits(acc, acc_all)
        assert_bits(np.concatenate(parts), dx)


def test_rmsnorm_gradients_vs_torch_float64():
    rng = np.random.default_rng(13)
    n, d = 6, 48
    x, w, dy = normal(rng, (n, d)), normal(rng, d), normal(rng, (n, d))
    for mod in (R, K):
        y, rstd = mod.rmsnorm_fwd(x, w, EPS)
        acc = np.zeros(d, np.float32)
        dx = mod.rmsnorm_bwd(dy, x, w, rstd, acc)
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        yt = xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + EPS) * wt
        yt.backward(torch.tensor(dy, dtype=torch.float64))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(acc, wt.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_rmsnorm_argument_checks():
    x = np.ones((2, 3), np.float32)
    w = np.ones(3, np.float32)
    for mod in (R, K):
        with pytest.raises(TypeError):
            mod.rmsnorm_fwd(x.astype(np.float64), w, EPS)
        with pytest.raises(ValueError):
            mod.rmsnorm_fwd(x, np.ones(4, np.float32), EPS)
        y, rstd = mod.rmsnorm_fwd(x, w, EPS)
        with pytest.raises(ValueError):  # a non-contiguous accumulator cannot be updated in place
            mod.rmsnorm_bwd(x, x, w, rstd, np.zeros(6, np.float32)[::2])
        with pytest.raises(TypeError):
            mod.rmsnorm_bwd(x, x, w, rstd, np.zeros(3, np.float64))


# ---------------------------------------------------------------------------------------------
# rotary position embedding


def test_rope_tables_shared_and_accurate():
    assert K.rope_tables is R.rope_tables
    pos = np.arange(0, 300, dtype=np.int64)
    for head_dim, theta in ((64, 10000.0), (8, 500000.0), (2, 10000.0)):
        c, s = R.rope_tables(pos, head_dim, theta)
        assert c.shape == s.shape == (300, head_dim // 2) and c.dtype == s.dtype == np.float32
        inv = theta ** (-np.arange(0, head_dim, 2) / head_dim)
        ang = pos[:, None] * inv[None, :]
        tol = 1e-6 + 3e-7 * ang  # inv_freq's own rounding grows with the angle
        assert np.all(np.abs(c - np.cos(ang)) <= tol)
        assert np.all(np.abs(s - np.sin(ang)) <= tol)
        assert np.all(c[0] == 1) and np.all(s[0] == 0)
    with pytest.raises(ValueError):
        R.rope_tables(pos, 7, 10000.0)
    with pytest.raises(TypeError):
        R.rope_tables(pos.astype(np.float32), 8, 10000.0)


_HF_ROPE = """
import sys, numpy as np, torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
cfg = LlamaConfig(hidden_size=128, num_attention_heads=2, head_dim=64, rope_theta=500000.0)
hc, hs = LlamaRotaryEmbedding(cfg)(torch.zeros(1, dtype=torch.float32), torch.arange(64)[None])
np.save(sys.argv[1], np.stack([hc[0].numpy(), hs[0].numpy()]))
"""


def test_rope_tables_match_hf_llama(tmp_path):
    # transformers computes in a fresh process: once in a full-suite run (not alone, not after
    # any one directory of tests) its tables came out with larger angles, so some earlier test
    # leaves global state behind that this comparison must not depend on
    import subprocess
    import sys

    head_dim, theta = 64, 500000.0
    out = tmp_path / "hf.npy"
    subprocess.run([sys.executable, "-c", _HF_ROPE, str(out)], check=True, timeout=300)
    hc, hs = (torch.from_numpy(x)[None] for x in np.load(out))
    pos = np.arange(64, dtype=np.int64)
    c, s = R.rope_tables(pos, head_dim, theta)
    # both round the angle pos * inv_freq to fp32 (inv_freq differs by an ulp or so): the
    # difference grows with the position; ours is the closer one to the exact value
    tol = 1e-6 + 1.5e-7 * pos[:, None]
    assert np.all(np.abs(np.concatenate([c, c], -1) - hc[0].numpy()) <= tol)
    assert np.all(np.abs(np.concatenate([s, s], -1) - hs[0].numpy()) <= tol)
    assert np.abs(c[:8] - hc[0, :8, :32].numpy()).max() <= 1e-6


def rope_inputs(rng, shape):
    t, dh = shape[-3], shape[-1]
    c, s = R.rope_tables(rng.integers(0, 5000, size=t), dh, 10000.0)
    return normal(rng, shape), c, s


@pytest.mark.parametrize("shape", [(1, 1, 2), (7, 3, 64), (2, 5, 3, 16), (3, 9, 2, 6)])
def test_rope_kernel_bits(shape, threads):
    rng = np.random.default_rng(14)
    x, c, s = rope_inputs(rng, shape)
    flat = x.reshape(-1)
    flat[: min(6, flat.size)] = np.array([np.inf, np.nan, 1e-45, -0.0, 3e38, -1e-40], np.float32)[: min(6, flat.size)]
    dy = normal(rng, shape)
    with np.errstate(all="ignore"):
        y, dx = R.rope_fwd(x, c, s), R.rope_bwd(dy, c, s)
    assert y.shape == dx.shape == shape
    got = both_threads(lambda: (K.rope_fwd(x, c, s), K.rope_bwd(dy, c, s)))
    assert_bits(got[0], y)
    assert_bits(got[1], dx)


def test_rope_spec_order():
    rng = np.random.default_rng(15)
    x, c, s = rope_inputs(rng, (3, 2, 8))
    y = R.rope_fwd(x, c, s)
    x1, x2 = x[..., :4], x[..., 4:]
    cc, ss = c[:, None, :], s[:, None, :]
    assert_bits(y[..., :4], fma_ref(x1, cc, -(x2 * ss)))
    assert_bits(y[..., 4:], fma_ref(x2, cc, x1 * ss))
    assert_bits(R.rope_bwd(x, c, s), R.rope_fwd(x, c, -s))


def test_rope_matches_hf_apply_rotary_pos_emb():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rng = np.random.default_rng(16)
    b, t, h, dh = 2, 11, 3, 32
    q, c, s = rope_inputs(rng, (b, t, h, dh))
    k = normal(rng, (b, t, h, dh))
    hc = torch.tensor(np.concatenate([c, c], -1))[None].expand(b, t, dh)
    hs = torch.tensor(np.concatenate([s, s], -1))[None].expand(b, t, dh)
    for dtype, tol in ((torch.float64, 1e-6), (torch.float32, 1e-6)):
        qe, ke = apply_rotary_pos_emb(torch.tensor(q, dtype=dtype).transpose(1, 2),
                                      torch.tensor(k, dtype=dtype).transpose(1, 2),
                                      hc.to(dtype), hs.to(dtype))
        for mod in (R, K):
            np.testing.assert_allclose(mod.rope_fwd(q, c, s), qe.transpose(1, 2).numpy(), rtol=0, atol=tol)
            np.testing.assert_allclose(mod.rope_fwd(k, c, s), ke.transpose(1, 2).numpy(), rtol=0, atol=tol)
    # 3-D layout (tokens, heads, head_dim) = the same op on one sequence
    assert_bits(K.rope_fwd(q[1], c, s), K.rope_fwd(q, c, s)[1])


def test_rope_backward_is_the_transpose():
    rng = np.random.default_rng(17)
    x, c, s = rope_inputs(rng, (2, 6, 4, 16))
    dy = normal(rng, x.shape)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ct = torch.tensor(c, dtype=torch.float64)[None, :, None, :]
    st = torch.tensor(s, dtype=torch.float64)[None, :, None, :]
    x1, x2 = xt[..., :8], xt[..., 8:]
    yt = torch.cat([x1 * ct - x2 * st, x2 * ct + x1 * st], -1)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    for mod in (R, K):
        np.testing.assert_allclose(mod.rope_bwd(dy, c, s), xt.grad.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(mod.rope_bwd(mod.rope_fwd(x, c, s), c, s), x, rtol=0, atol=1e-5)


def test_rope_argument_checks():
    c, s = R.rope_tables(np.arange(4), 8, 10000.0)
    for mod in (R, K):
        with pytest.raises(ValueError):
            mod.rope_fwd(np.zeros((5, 2, 8), np.float32), c, s)  # 5 tokens, 4 table rows
        with pytest.raises(ValueError):
            mod.rope_fwd(np.zeros((4, 8), np.float32), c, s)
        with pytest.raises(TypeError):
            mod.rope_fwd(np.zeros((4, 2, 8)), c, s)


# ---------------------------------------------------------------------------------------------
# token embedding


def test_embedding_kernel_bits(threads):
    rng = np.random.default_rng(18)
    v, d, n = 50, 576, 41
    table = wide(rng, (v, d))
    ids = rng.integers(0, 5, size=n)  # many repeats: the order of the adds matters
    ids[::7] = v - 1
    dy = wide(rng, (n, d), -149, 20)
    dy[3, 5] = np.inf
    acc0 = normal(rng, (v, d))
    y = R.embedding_fwd(ids, table)
    assert_bits(y, table[ids])
    acc = acc0.copy()
    with np.errstate(all="ignore"):
        R.embedding_bwd(ids, dy, acc)
        expect = acc0.copy()
        for i, r in enumerate(ids):
            expect[r] = expect[r] + dy[i]
    assert_bits(acc, expect)

    def numba_run():
        acck = acc0.copy()
        K.embedding_bwd(ids, dy, acck)
        return K.embedding_fwd(ids, table), acck

    got = both_threads(numba_run)
    assert_bits(got[0], y)
    assert_bits(got[1], acc)


@pytest.mark.parametrize("mod", BACKENDS)
def test_embedding_microbatches_and_edges(mod):
    rng = np.random.default_rng(19)
    v, d, n = 7, 1, 13
    table = normal(rng, (v, d))
    ids = rng.integers(0, v, size=n)
    dy = normal(rng, (n, d))
    acc_all = np.zeros((v, d), np.float32)
    mod.embedding_bwd(ids, dy, acc_all)
    for k in (0, 6, n):
        acc = np.zeros((v, d), np.float32)
        mod.embedding_bwd(ids[:k], dy[:k], acc)
        mod.embedding_bwd(ids[k:], dy[k:], acc)
        assert_bits(acc, acc_all)
    assert mod.embedding_fwd(np.zeros(0, np.int64), table).shape == (0, d)
    assert_bits(mod.embedding_fwd(ids.astype(np.int32), table), table[ids])
    for bad in ([0, v], [-1, 2]):
        with pytest.raises(IndexError):
            mod.embedding_fwd(np.array(bad), table)
        with pytest.raises(IndexError):
            mod.embedding_bwd(np.array(bad), np.zeros((2, d), np.float32), acc)
    with pytest.raises(TypeError):
        mod.embedding_fwd(np.array([0.0, 1.0]), table)
    with pytest.raises(ValueError):
        mod.embedding_bwd(ids, dy[:-1], acc)
    with pytest.raises(ValueError):
        mod.embedding_bwd(ids, dy, np.zeros((v, 2 * d), np.float32)[:, ::2])


def test_embedding_gradient_vs_torch():
    rng = np.random.default_rng(20)
    v, d, n = 11, 6, 30
    table = normal(rng, (v, d))
    ids = rng.integers(0, v, size=n)
    dy = normal(rng, (n, d))
    tt = torch.tensor(table, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(ids), tt).backward(torch.tensor(dy, dtype=torch.float64))
    for mod in (R, K):
        acc = np.zeros((v, d), np.float32)
        mod.embedding_bwd(ids, dy, acc)
        np.testing.assert_allclose(acc, tt.grad.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# SwiGLU


@pytest.mark.parametrize("shape", [(1,), (3, 1), (5, 576), (2, 3, 7)])
def test_swiglu_kernel_bits(shape, threads):
    rng = np.random.default_rng(21)
    g = normal(rng, shape, 4.0)
    u, dh = normal(rng, shape), normal(rng, shape)
    flat = g.reshape(-1)
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, -100.0, 100.0, 3e38, -3e38], np.float32)
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    with np.errstate(all="ignore"):
        h = R.swiglu_fwd(g, u)
        dg, du = R.swiglu_bwd(dh, g, u)
    assert h.shape == dg.shape == du.shape == shape
    got = both_threads(lambda: (K.swiglu_fwd(g, u),) + K.swiglu_bwd(dh, g, u))
    for a, b in zip(got, (h, dg, du)):
        assert_bits(a, b)


def test_swiglu_gradients_vs_torch_float64():
    rng = np.random.default_rng(22)
    shape = (8, 40)
    g, u, dh = normal(rng, shape, 3.0), normal(rng, shape), normal(rng, shape)
    gt = torch.tensor(g, dtype=torch.float64, requires_grad=True)
    ut = torch.tensor(u, dtype=torch.float64, requires_grad=True)
    ht = torch.nn.functional.silu(gt) * ut
    ht.backward(torch.tensor(dh, dtype=torch.float64))
    for mod in (R, K):
        np.testing.assert_allclose(mod.swiglu_fwd(g, u), ht.detach().numpy(), rtol=1e-5, atol=1e-6)
        dg, du = mod.swiglu_bwd(dh, g, u)
        np.testing.assert_allclose(dg, gt.grad.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(du, ut.grad.numpy(), rtol=1e-5, atol=1e-6)
    for mod in (R, K):
        with pytest.raises(ValueError):
            mod.swiglu_fwd(g, u[:, :3])
        with pytest.raises(TypeError):
            mod.swiglu_bwd(dh.astype(np.float64), g, u)
