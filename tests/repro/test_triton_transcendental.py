"""triton fp32 transcendentals == numpy reference, bit for bit (NaN bits included).

Without a GPU the kernels run in triton's interpreter, so the inputs are the reference tests'
special values and edges plus a few thousand values per function, not the millions the numba
test sweeps. `test_compiles_for_a_gpu` compiles the same source for sm_90 (no GPU needed) and
checks the instructions a GPU would run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import triton
import triton.language as tl

from bitswarm.repro.kernels.triton import transcendental as tri
from bitswarm.repro.kernels.triton.runtime import LAUNCH, empty, to_device, to_host
from bitswarm.repro.reference import transcendental as ref

from .test_transcendental import (
    HARD_TRIG,
    NAMES,
    QNAN_BITS,
    SPECIALS,
    around,
    bits_of,
    dense_inputs,
    f32bits,
    random_bit_patterns,
)

NANS = f32bits(0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC12345, 0xFF800001)

# the thresholds and clamps of each function, with a few neighbours on either side
EDGES = {
    "exp": [89.0, -110.0, 88.72284, -103.97208, -87.33655, 0.34657359, -0.34657359],
    "log": [0.70710677, 1.4142135, 1.0, 2.0**-126, 2.0**-149],
    "sigmoid": [17.0, -17.0, -110.0, -103.97, -87.33655, 0.0],
    "silu": [-110.0, -108.7, -103.97, -87.33655, 17.0],
    "rsqrt": [2.0**-126, 2.0**-149, 1.0, 4.0, 3.4028235e38],
    "sin": [2.0**20, -(2.0**20), 0.7853982, 1e-3],
    "cos": [2.0**20, -(2.0**20), 0.7853982, 1e-3],
}


def inputs(name: str) -> np.ndarray:
    parts = [
        SPECIALS,
        NANS,
        np.concatenate([around(v, 8) for v in EDGES[name]]),
        random_bit_patterns(3000, seed=NAMES.index(name)),
        dense_inputs(name)[::500],
    ]
    if name in ("sin", "cos"):
        parts.append(np.concatenate([around(v, 16) for v in HARD_TRIG]))
    return np.concatenate(parts).astype(np.float32)


def assert_same_bits(name, x, got, want):
    assert got.dtype == np.float32 and got.shape == want.shape
    bad = np.flatnonzero(bits_of(got) != bits_of(want))
    assert bad.size == 0, (
        f"{name}: {bad.size} of {x.size} differ, e.g. x={x[bad[:5]]} "
        f"triton={bits_of(got)[bad[:5]]} ref={bits_of(want)[bad[:5]]}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_bitwise(name):
    x = inputs(name)
    assert_same_bits(name, x, getattr(tri, name)(x), getattr(ref, name)(x))


def test_nan_results_are_canonical():
    for name in NAMES:
        assert np.all(bits_of(getattr(tri, name)(NANS)) == QNAN_BITS), name
    neg = np.float32([-1.0, -np.inf, -1e-45])
    assert np.all(bits_of(tri.log(neg)) == QNAN_BITS)
    assert np.all(bits_of(tri.rsqrt(neg)) == QNAN_BITS)
    outside = np.float32([2.0**20 * (1 + 2.0**-23), -1048577.0, 1e30, np.inf, -np.inf])
    assert np.all(bits_of(tri.sin(outside)) == QNAN_BITS)
    assert np.all(bits_of(tri.cos(outside)) == QNAN_BITS)


def test_signed_zeros_infinities_and_subnormals():
    z = np.float32([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1.1754942e-38, -1.1754942e-38])
    for name in NAMES:
        assert_same_bits(name, z, getattr(tri, name)(z), getattr(ref, name)(z))
    # the bits the spec documents, spelled out
    assert bits_of(tri.sin(np.float32([-0.0])))[0] == 0x80000000
    assert bits_of(tri.silu(np.float32([-np.inf])))[0] == 0x80000000
    assert bits_of(tri.rsqrt(np.float32([-0.0])))[0] == 0xFF800000
    assert bits_of(tri.exp(np.float32([-103.97208])))[0] == 0x00000001


@pytest.mark.parametrize("shape", [(), (0,), (3, 5), (2, 3, 4), (1100,)])
def test_shapes_are_kept(shape):
    x = np.random.default_rng(5).uniform(0.1, 3.0, shape).astype(np.float32)
    for name in NAMES:
        y = getattr(tri, name)(x)
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.array_equal(bits_of(y), bits_of(getattr(ref, name)(x))), name


def test_refuses_other_dtypes():
    with pytest.raises(TypeError):
        tri.exp(np.zeros(3, dtype=np.float64))


@triton.jit
def _all_on_a_2d_block(x_ptr, y_ptr, R: tl.constexpr, C: tl.constexpr):
    """Every device function on one [R, C] block, as the other kernels call them."""
    offs = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    x = tl.load(x_ptr + offs)
    tl.store(y_ptr + 0 * R * C + offs, tri.exp32(x))
    tl.store(y_ptr + 1 * R * C + offs, tri.log32(x))
    tl.store(y_ptr + 2 * R * C + offs, tri.sigmoid32(x))
    tl.store(y_ptr + 3 * R * C + offs, tri.silu32(x))
    tl.store(y_ptr + 4 * R * C + offs, tri.rsqrt32(x))
    tl.store(y_ptr + 5 * R * C + offs, tri.sin32(x))
    tl.store(y_ptr + 6 * R * C + offs, tri.cos32(x))


def test_device_functions_inside_another_kernel():
    x = np.concatenate([SPECIALS[:40], random_bit_patterns(24, seed=9)]).reshape(8, 8)
    y = empty((7, 8, 8))
    with np.errstate(all="ignore"):
        _all_on_a_2d_block[(1,)](to_device(x), y, R=8, C=8, **LAUNCH)
    got = to_host(y)
    for i, name in enumerate(NAMES):
        assert_same_bits(name, x, got[i], getattr(ref, name)(x))


_COMPILE = textwrap.dedent(
    """
    import os, re, sys
    import bitswarm.repro.kernels.triton.runtime  # noqa: F401
    os.environ["TRITON_INTERPRET"] = "0"  # runtime chose the interpreter; compile for real
    from triton import knobs
    knobs.runtime.interpret = False
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from bitswarm.repro.kernels.triton import transcendental as tri
    sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32", "OP": "constexpr", "BLOCK": "constexpr"}
    for op in range(7):
        src = ASTSource(tri._elementwise_kernel, signature=sig, constexprs={"OP": op, "BLOCK": 1024})
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(tri.LAUNCH))
        ops = re.findall(r"^\\s*(?:@!?%p\\d+\\s+)?([a-z]+(?:\\.[a-z0-9]+)+)", k.asm["ptx"], re.M)
        print(op, " ".join(sorted(set(ops))))
    """
)


def test_compiles_for_a_gpu():
    """The same source compiled for sm_90: IEEE-rounded ops only, no flush-to-zero, and fma
    exactly where the spec has one (fp32 exp/log/sigmoid/silu; never in fp64 sin/cos)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    res = subprocess.run(
        [sys.executable, "-c", _COMPILE], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ops = {int(line.split()[0]): set(line.split()[1:]) for line in res.stdout.splitlines()}
    assert sorted(ops) == list(range(7))
    for op, names in ops.items():
        name = NAMES[op]
        flagged = [
            o for o in names
            if any(s in o for s in (".ftz", ".approx", ".full")) or o.startswith(("ex2", "lg2", "rsqrt"))
        ]
        assert not flagged, f"{name}: {flagged}"
        assert not any(o.startswith("fma") and o.endswith("f64") for o in names), name
        assert ("fma.rn.f32" in names) == (name in ("exp", "log", "sigmoid", "silu")), name
        if name in ("log", "sigmoid", "silu", "rsqrt"):
            assert "div.rn.f32" in names, name
        if name == "rsqrt":
            assert "sqrt.rn.f32" in names
