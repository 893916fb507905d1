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
