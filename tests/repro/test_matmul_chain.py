"""The tiled matmul kernel equals a plain per-output fma chain at model-sized shapes."""

import numba
import numpy as np
import pytest

from bitswarm.repro.fp import fma32
from bitswarm.repro.kernels.cpu import matmul as mk


@numba.njit(parallel=True)
def _chain(a, b, c):
    for i in numba.prange(a.shape[0]):
        for j in range(b.shape[1]):
            acc = c[i, j]
            for k in range(a.shape[1]):
                acc = fma32(a[i, k], b[k, j], acc)
            c[i, j] = acc


@pytest.mark.parametrize("m,k,n", [(130, 1536, 97), (512, 576, 200), (1, 576, 3000), (7, 3000, 65)])
def test_model_sized_shapes_equal_the_plain_chain(m, k, n):
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    c0 = rng.standard_normal((m, n), dtype=np.float32)
    want = c0.copy()
    _chain(a, np.ascontiguousarray(w.T), want)
    got = c0.copy()
    mk.matmul_acc(a, w.T, got)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("m", [1, 3, 4, 6, 8])  # 4-8 rows: the batched-decode kernel (padded rows)
@pytest.mark.parametrize("n", [1, 17, 600])
def test_small_row_path_equals_the_tiled_kernel(m, n):
    from bitswarm.repro.kernels.cpu import gemv

    rng = np.random.default_rng(m * 1000 + n)
    k = 577
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c0 = rng.standard_normal((m, n), dtype=np.float32)
    for rhs in (w.T, b):
        want, got = c0.copy(), c0.copy()
        mk.matmul_acc(a, rhs, want)
        gemv.matmul_acc(a, rhs, got)
        assert got.tobytes() == want.tobytes()
        assert gemv.matmul(a, rhs).tobytes() == mk.matmul(a, rhs).tobytes()
    specials = a.copy()
    specials[0, :3] = [np.inf, np.nan, 1e-42]
    assert gemv.matmul(specials, w.T).view(np.uint32).tobytes() == mk.matmul(specials, w.T).view(np.uint32).tobytes()


@pytest.mark.parametrize("m", [1, 2, 8])
@pytest.mark.parametrize("s", [1, 17, 130])
def test_few_row_bmm_equals_the_tiled_kernel(m, s):
    """Decode-time attention (one query row per head against cached keys, then values) takes the
    few-rows path: the same chains as the tiled kernel, transposed keys included."""
    from bitswarm.repro.kernels.cpu import gemv

    rng = np.random.default_rng(m * 100 + s)
    q = rng.standard_normal((9, m, 64), dtype=np.float32)
    keys = rng.standard_normal((9, s, 64), dtype=np.float32)
    probs = rng.standard_normal((9, m, s), dtype=np.float32)
    probs[0, 0, 0] = np.inf
    for a, b in ((q, keys.transpose(0, 2, 1)), (probs, keys)):
        assert gemv.bmm(a, b).tobytes() == mk.bmm(a, b).tobytes()
        c0 = rng.standard_normal((9, m, b.shape[2]), dtype=np.float32)
        assert gemv.bmm_acc(a, b, c0.copy()).tobytes() == mk.bmm_acc(a, b, c0.copy()).tobytes()


def _bits(x) -> bytes:
    return np.ascontiguousarray(x).view(np.uint32).tobytes()


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 9, 40, 256, 257])  # 257: past PANEL_M, the tiled kernel
@pytest.mark.parametrize("n,k", [(1, 1), (63, 5), (64, 577), (65, 1), (600, 64)])
def test_packed_weight_equals_the_tiled_kernel(m, n, k):
    """A PackedWT (decode-time panels of W) gives the chains of x @ W.T: on the call that packs
    and on later calls reading the panels; any row count, n not a multiple of the panel, k = 1."""
    from bitswarm.repro.kernels.cpu import gemv

    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    w = rng.standard_normal((n, k), dtype=np.float32)
    a = rng.standard_normal((m, k), dtype=np.float32)
    a[0, 0] = np.inf  # NaN (inf * 0 and inf - inf) and overflow flow through the chains alike
    w[0, -1] = 0.0 if n > 1 else np.nan
    a[-1, -1] = 1e-42  # subnormal
    c0 = rng.standard_normal((m, n), dtype=np.float32)
    c0[-1, -1] = -0.0
    pk = gemv.PackedWT(w)
    for _ in range(2):  # first call packs, the second reads the panels
        assert _bits(gemv.matmul(a, pk)) == _bits(mk.matmul(a, w.T))
        want, got = c0.copy(), c0.copy()
        mk.matmul_acc(a, w.T, want)
        gemv.matmul_acc(a, pk, got)
        assert _bits(got) == _bits(want)
    assert pk.packed == (m <= gemv.PANEL_M)


def test_packed_weight_takes_any_rows_and_refuses_what_matmul_refuses():
    from bitswarm.repro.kernels.cpu import gemv

    rng = np.random.default_rng(5)
    w = rng.standard_normal((70, 33), dtype=np.float32)
    pk = gemv.PackedWT(w)
    assert pk.shape == (33, 70)
    big = rng.standard_normal((33, 6), dtype=np.float32)
    for a in (big.T, big.T[::2], big.T[:1], np.asfortranarray(big.T)):  # transposed / strided rows
        assert _bits(gemv.matmul(a, pk)) == _bits(mk.matmul(np.ascontiguousarray(a), w.T))
    with pytest.raises(ValueError, match="C-contiguous"):
        gemv.matmul_acc(big.T, pk, np.zeros((70, 6), np.float32).T)
    with pytest.raises(ValueError, match="shape mismatch"):
        gemv.matmul_acc(big.T, pk, np.zeros((6, 71), np.float32))
    with pytest.raises(ValueError):
        gemv.matmul(rng.standard_normal((2, 34), dtype=np.float32), pk)
    with pytest.raises(TypeError):
        gemv.matmul(big.T.astype(np.float64), pk)
    for bad in (w.astype(np.float64), w[:0], w[0]):  # not float32; empty; 1-D
        with pytest.raises(TypeError, match="PackedWT"):
            gemv.PackedWT(bad)
    for strided in (np.asfortranarray(w), w[::2], w[:, ::3]):  # a weight in any layout
        for a in (big.T[:1], big.T):
            a = np.ascontiguousarray(a[:, : strided.shape[1]])
            assert _bits(gemv.matmul(a, gemv.PackedWT(strided))) == _bits(mk.matmul(a, strided.T))


def test_decoding_weights_never_outlive_the_generate_call(tiny_llama):
    """The packed copies live inside one `generate`: after an in-place parameter update (what a
    training step does) the next call decodes with the new weights, like the reference."""
    from bitswarm.repro.generate import generate

    model, ref = tiny_llama("numba"), tiny_llama("reference")
    assert model.B.decode_weight is not None and not hasattr(ref.B, "decode_weight")
    prompts, kw = [[1, 10, 20, 7], [1, 11, 22, 7]], {"temperature": 1.0, "seed": 3}
    first = generate(model, prompts, 8, **kw)
    assert model._decode_weights is None
    rng = np.random.default_rng(0)
    for name, p in model.params.items():
        if name.endswith("proj.weight") or name == "model.embed_tokens.weight":
            p += rng.standard_normal(p.shape, dtype=np.float32) * np.float32(3 * p.std())
            ref.params[name][...] = p
    again = generate(model, prompts, 8, **kw)
    assert again == generate(ref, prompts, 8, **kw)
    assert again != first  # the update changed the tokens, so a stale copy would have shown
